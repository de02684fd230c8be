"""train.py in this process: configuration, compile against eager, reruns and resume, the log and config it
writes, and bad inputs (tests/test_train_processes.py has what needs processes: ranks, kills, signals)."""

import json
import re
import shutil
import signal
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    ROOT,
    TINY,
    copy_bins,
    run_log,
    tiny_hf_gpt2,
    train_here,
    tree_hash,
)
from growth import RECIPE_KEYS
from inheritune.data import val_windows
from inheritune.util import HUB_NAME, UserError
from model import GPT
from train import TrainConfig, load_config, lr_at, model_config

CONFIGS = sorted([*ROOT.glob("config/*.py"), *ROOT.glob("experiments/*/config/*.py")])


def expect_error(tmp_path, *args, message):
    """train.py stops with a UserError naming the fix, before it writes anything."""
    out = tmp_path / "never"
    with pytest.raises(UserError, match=re.escape(message)):
        train_here(*TINY, f"--out_dir={out}", *args)
    assert not out.exists(), "a failed start must write nothing"


# ------------------------------------------------------------------------------------------- configuration


def test_config_file_and_typed_overrides(tmp_path):
    (tmp_path / "c.py").write_text("import math\nn_layer = 6\nlearning_rate = 1e-3\n_private = 3\n")
    overrides = [
        "--learning_rate=1",
        "--compile=true",
        "--lr_decay_iters=None",
        "--max_iters=1e3",
        "--out_dir=x",
    ]
    cfg = load_config([str(tmp_path / "c.py"), *overrides])
    assert cfg.n_layer == 6 and cfg.learning_rate == 1.0 and type(cfg.learning_rate) is float
    assert cfg.compile is True and cfg.lr_decay_iters is None and cfg.max_iters == 1000 and cfg.out_dir == "x"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--learnig_rate=1"], "did you mean 'learning_rate'"),
        (["--max_iters=abc"], "max_iters expects int"),
        (["--max_iters=1.5"], "max_iters expects int"),
        (["--compile=maybe"], "compile expects bool"),
        (["--n_layer=None"], "n_layer expects int, got None"),
        (["--init_from=magic"], "init_from='magic'"),
        (["--init_from=inherit"], "needs ref="),
        (["--attention=fast"], "use one of auto, flash, cudnn"),
        (["--compile_mode=turbo"], "compile_mode='turbo'"),
        (["--compile_scope=layers"], "use one of model, blocks"),
        (["--attention=flash", "--dtype=float32"], "16-bit only"),
        (["config/nope.py"], "not found"),
        (["--dropout=1"], "dropout=1.0 is out of range: it must be in [0, 1)"),
        (["--peak_flops=0"], "peak_flops=0.0 is out of range: it must be > 0"),
        (["--arch=gpt3"], "use one of gpt2, llama"),
        (["--max_iters"], "--key=value"),
        (["--learning_rate=-1"], "learning_rate=-1.0 is out of range: it must be >= 0"),
        (["--beta1=2"], "beta1=2.0 is out of range: it must be in [0, 1)"),
        (["--batch_size=0"], "batch_size=0 is out of range: it must be >= 1"),
        (["--eval_interval=0"], "eval_interval=0 is out of range: it must be >= 1"),
        (["--max_iters=-5"], "max_iters=-5 is out of range: it must be >= 1"),
        (["--batch_size=7"], "batch_size=7 is not divisible by micro_batch_size=8 x world size 1"),
        (["--grow=True", "--ref=x", "--inherit_layers=0,1"], "unset inherit_layers"),
        (["--fp8=True", "--dtype=float32"], "fp8=True trains under bfloat16 autocast"),
        (["--out_dir="], "out_dir is empty; name a folder"),
        (["--data_dir= "], "data_dir is empty; name a folder"),
        (["--grow=True", "--ref=x", "--init_from=pretrained"], "init_from=pretrained has no effect: drop it"),
        (
            ["--warmup_iters=200", "--max_iters=100"],
            "warmup_iters=200 is longer than the run (max_iters=100)",
        ),
        (["--inherit_select=last"], "inherit_select=last chooses inherited blocks: set init_from=inherit"),
        (
            ["--init_from=inherit", "--ref=x", "--inherit_select=angular"],
            "set inherit_scores=DIR/lazy_layers.json",
        ),
        (
            ["--init_from=inherit", "--ref=x", "--inherit_scores=s.json"],
            "inherit_scores is read by inherit_select",
        ),
        (
            ["--init_from=inherit", "--ref=x", "--inherit_select=last", "--inherit_layers=0,1"],
            "inherit_layers names the blocks already",
        ),
        (["--kd_ratio=0.5"], "kd_ratio=0.5 distils from a teacher"),
    ],
)
def test_config_errors(args, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(args)


def test_the_world_size_must_divide_the_batch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match=re.escape("micro_batch_size=2 x world size 3")):
        load_config(["--batch_size=8", "--micro_batch_size=2"])
    assert load_config(["--batch_size=12", "--micro_batch_size=2"]).batch_size == 12


def test_config_builds_on_a_base_next_to_it_and_old_style_exec_fails_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "recipe.py").write_text("n_layer = 6\nlearning_rate = 1e-3\n")
    (tmp_path / "run.py").write_text('base = "recipe.py"\nn_layer = 3\n')
    (tmp_path / "old.py").write_text('exec(open("config/recipe.py").read())\n')
    monkeypatch.chdir(ROOT)
    cfg = load_config([str(tmp_path / "run.py")])
    assert (cfg.n_layer, cfg.learning_rate) == (3, 1e-3)
    with pytest.raises(UserError, match=r"old.py failed: FileNotFoundError.*base = \"other.py\""):
        load_config([str(tmp_path / "old.py")])
    (tmp_path / "loop.py").write_text('base = "loop.py"\n')
    with pytest.raises(UserError, match="builds on itself"):
        load_config([str(tmp_path / "loop.py")])


def test_help_lists_every_key_with_its_default_meaning_and_accepted_values(capsys):
    with pytest.raises(SystemExit) as exit:
        train_here("--help")
    out = capsys.readouterr().out
    assert exit.value.code == 0 and out.startswith("usage: python train.py")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  --")}
    assert len(lines) == len(fields(TrainConfig))
    for f in fields(TrainConfig):
        default = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
        meaning = lines[f"--{f.name}={default}"].split(maxsplit=1)[1].strip()
        assert meaning.startswith(f.metadata["help"]), f.name
    assert lines["--dropout=0"].endswith("; in [0, 1)") and lines["--n_layer=12"].endswith("; >= 1")
    assert lines["--attention=auto"].endswith("; one of auto, flash, cudnn, efficient, math")
    assert "\nInheritune v2 growth loop:\n  --grow=False" in out  # keys grouped under their section


def test_lr_schedule_shape():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    lrs = [lr_at(s, cfg) for s in range(120)]
    assert lrs[0] < lrs[9] < 1.0 and lrs[10] == pytest.approx(1.0) and lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[60] == pytest.approx(0.55)


def shipped(path: Path):
    return load_config([str(path)])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_anywhere_and_reads_what_another_writes(path, monkeypatch, tmp_path):
    """Loaded from another folder, each config is valid (check_config: ranges, batch split), a from-scratch
    shape builds, and a `ref` is a hub name, a local download, or the run of another shipped config: one with
    at least as many layers whose val set (data, block, budget) this config shares, and whose recipe a growth
    loop shares, so that the loop can score both curves step for step."""
    monkeypatch.chdir(tmp_path)
    cfg = shipped(path)
    if cfg.init_from == "scratch" and cfg.ref is None:
        with torch.device("meta"):
            model = GPT(model_config(cfg, vocab_size=50257))
        assert model.config.n_layer == cfg.n_layer and model.num_params() > 0
    if cfg.ref is None or HUB_NAME.fullmatch(cfg.ref) and not cfg.ref.startswith(("out/", "data/")):
        return
    writers = {shipped(c).out_dir: shipped(c) for c in CONFIGS if c.parent == path.parent}
    run_dir = str(Path(cfg.ref).parent) if cfg.ref.endswith(".pt") else cfg.ref
    if run_dir not in writers:  # a file the user brings: a download or an inherit.py output
        assert cfg.ref.startswith(("data/", "checkpoints/", "out/")), cfg.ref
        return
    reference = writers[run_dir]
    assert cfg.n_layer <= reference.n_layer
    assert (cfg.data_dir, cfg.block_size, cfg.eval_tokens) == (
        reference.data_dir,
        reference.block_size,
        reference.eval_tokens,
    )
    if cfg.grow:
        assert [k for k in RECIPE_KEYS if getattr(cfg, k) != getattr(reference, k)] == []


# ------------------------------------------------------------------------------------------------ training
# (runs that need a process of their own: tests/test_train_processes.py)


@pytest.fixture(scope="module")
def eager_run(small_bins, tmp_path_factory):
    out = tmp_path_factory.mktemp("eager")
    train_here(*TINY, f"--data_dir={small_bins}", "--max_iters=10", "--eval_interval=5", f"--out_dir={out}")
    return run_log(out)[1]


@pytest.mark.parametrize("scope", ["model", "blocks"])
def test_compiled_training_matches_eager(small_bins, tmp_path, eager_run, scope):
    common = [*TINY, f"--data_dir={small_bins}", "--max_iters=10", "--eval_interval=5"]
    train_here(*common, f"--out_dir={tmp_path}", "--compile=True", f"--compile_scope={scope}")
    compiled = run_log(tmp_path)[1]
    assert [r["step"] for r in eager_run] == [r["step"] for r in compiled]
    for a, b in zip(eager_run, compiled):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (scope, a, b)


def test_rerun_continues_the_same_command_and_refuses_another(small_bins, tmp_path, capsys):
    args = [*TINY, f"--data_dir={small_bins}", f"--out_dir={tmp_path / 'run'}", "--max_iters=10"]
    train_here(*args)
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    capsys.readouterr()
    train_here(*args)  # finished: continuing it trains nothing and keeps the checkpoint
    out = capsys.readouterr().out
    assert "holds this command's run at step 10: continuing it" in out and "steps 10 -> 10" in out
    for other, changed in (
        (["--learning_rate=1e-2"], "learning_rate=0.01 (was 0.003)"),
        (["--init_from=pretrained", f"--ref={tmp_path / 'run'}"], "init_from='pretrained' (was 'scratch')"),
    ):
        with pytest.raises(
            UserError, match=re.escape(f"(a run at step 10) was made with other settings: {changed}")
        ):
            train_here(*args, *other)
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before


def test_resume_refuses_a_different_recipe_and_takes_another_micro_batch(small_bins, tmp_path):
    args = [*TINY, f"--data_dir={small_bins}", "--max_iters=10", f"--out_dir={tmp_path / 'run'}"]
    train_here(*args)
    with pytest.raises(UserError, match="was made with other settings: ") as error:
        train_here(*args, "--init_from=resume", "--learning_rate=1e-2", "--max_iters=20")
    assert "learning_rate=0.01 (was 0.003)" in str(error.value) and "max_iters=20 (was 10)" in str(
        error.value
    )
    train_here(*args, "--init_from=resume", "--micro_batch_size=4", "--max_iters=10")  # no effect on learning


def test_train_config_records_the_model_trained(small_bins, reference, tmp_path):
    train_here(
        *TINY,
        f"--data_dir={small_bins}",
        "--init_from=inherit",
        f"--ref={reference}",
        "--n_layer=4",
        "--inherit_layers=0,2",
        "--max_iters=1",
        "--warmup_iters=0",
        f"--out_dir={tmp_path}",
    )
    written = json.loads((tmp_path / "train_config.json").read_text())
    assert written["n_layer"] == 2 and written["inherit_layers"] == "0,2" and written == run_log(tmp_path)[0]


def test_nan_loss_stops_with_a_clear_message(small_bins, tmp_path):
    with pytest.raises(
        UserError, match=r"train loss nan .*before step 5: stopping; no checkpoint was saved yet"
    ):
        train_here(
            *TINY,
            f"--data_dir={small_bins}",
            "--max_iters=30",
            "--learning_rate=1e30",
            "--grad_clip=0",
            "--warmup_iters=0",
            f"--out_dir={tmp_path / 'nan'}",
        )
    assert not (tmp_path / "nan" / "ckpt.pt").exists()


def test_a_run_from_python_leaves_the_sigterm_handler_as_it_found_it(small_bins, tmp_path):
    """train.main() from Python (demo.py, a notebook) catches SIGTERM only while it runs: a process that
    forks workers afterwards (prepare_owt.py's pool) must still be able to terminate them."""
    before = signal.getsignal(signal.SIGTERM)
    train_here(
        *TINY, f"--data_dir={small_bins}", "--max_iters=1", "--warmup_iters=0", f"--out_dir={tmp_path / 'ok'}"
    )
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(UserError):
        train_here(
            *TINY,
            f"--data_dir={small_bins}",
            "--learning_rate=1e30",
            "--grad_clip=0",
            "--warmup_iters=0",
            "--max_iters=10",
            f"--out_dir={tmp_path / 'nan'}",
        )
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------------------------------- bad inputs


def test_error_missing_bins(tmp_path):
    expect_error(tmp_path, f"--data_dir={tmp_path / 'nothing'}", message="no meta.json")


def test_error_vocab_mismatch(small_bins, tmp_path):
    tiny_hf_gpt2().save_pretrained(tmp_path / "gpt2ref")  # vocab 1000; the bins have 512
    args = f"--data_dir={small_bins}", "--init_from=pretrained", f"--ref={tmp_path / 'gpt2ref'}"
    expect_error(tmp_path, *args, message="vocabulary of 1000")


def test_error_val_shorter_than_eval_budget(small_bins, tmp_path):
    expect_error(
        tmp_path, f"--data_dir={small_bins}", "--eval_tokens=100000000", message="fewer than eval_tokens"
    )


def test_error_eval_budget_below_one_window(small_bins, tmp_path):
    expect_error(
        tmp_path,
        f"--data_dir={small_bins}",
        "--eval_tokens=16",
        message="eval_tokens=16 is less than one window of block_size=32",
    )


def test_error_cudnn_attention_with_head_dim_not_divisible_by_8(small_bins, tmp_path):
    args = f"--data_dir={small_bins}", "--n_embd=36", "--n_head=4", "--attention=cudnn", "--dtype=bfloat16"
    expect_error(tmp_path, *args, message="head dimension divisible by 8; this model's is 9")


def test_error_sliding_window_with_a_kernel_that_takes_no_mask(small_bins, tmp_path):
    args = ["--arch=mistral", "--n_embd=32", "--n_head=2", "--sliding_window=16", "--attention=flash"]
    expect_error(
        tmp_path,
        f"--data_dir={small_bins}",
        *args,
        "--dtype=bfloat16",
        message="exceeds the model's sliding window of 16",
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_error_cuda_on_a_cpu_only_torch(small_bins, tmp_path):
    expect_error(tmp_path, f"--data_dir={small_bins}", "--device=cuda", message="use device=cpu")


def test_error_out_dir_that_cannot_be_created(small_bins, tmp_path):
    (tmp_path / "a_file").write_text("")
    expect_error(
        tmp_path,
        f"--data_dir={small_bins}",
        f"--out_dir={tmp_path / 'a_file' / 'run'}",
        message="a_file is a file, not a folder",
    )


def test_error_resume_without_a_checkpoint(small_bins, tmp_path):
    expect_error(
        tmp_path, f"--data_dir={small_bins}", "--init_from=resume", message="does not exist; start with"
    )


def test_error_inherit_deeper_than_the_reference(small_bins, reference, tmp_path):
    args = f"--data_dir={small_bins}", f"--ref={reference}", "--init_from=inherit", "--n_layer=9"
    expect_error(tmp_path, *args, message="outside 1..4")


# ------------------------------------------------------------------------------------------ nothing lost


def test_a_finished_run_is_not_continued_on_other_bins(small_bins, tmp_path):
    data = copy_bins(small_bins, tmp_path / "data")
    args = [*TINY, f"--data_dir={data}", f"--out_dir={tmp_path / 'run'}", "--max_iters=10"]
    train_here(*args)
    before = tree_hash(tmp_path / "run")
    settings = json.loads((data / "meta.json").read_text())["settings"]
    shutil.rmtree(data)  # the same folder, other bins: another corpus fingerprint
    copy_bins(small_bins, data, settings={**settings, "fingerprint": "another corpus"})
    with pytest.raises(UserError, match=f"{re.escape(str(data))} holds other bins than .*ckpt.pt began on"):
        train_here(*args)
    assert tree_hash(tmp_path / "run") == before


def test_token_ids_beyond_the_vocabulary_stop_before_training(small_bins, tmp_path):
    recorded = copy_bins(small_bins, tmp_path / "recorded", max_token_id=600)  # what prepare_owt.py records
    expect_error(
        tmp_path, f"--data_dir={recorded}", message="holds token id 600, beyond the model's vocabulary"
    )
    ids = np.full(4096, 7)
    bad = val_windows(len(ids), block_size=32, eval_tokens=2048)[40] + 3  # a token the first evaluation reads
    ids[bad] = 600
    unrecorded = copy_bins(small_bins, tmp_path / "unrecorded", val=ids, max_token_id=None)  # read as it goes
    message = (
        f"{unrecorded / 'val.bin'} holds token id 600 at token {bad:,}, beyond the model's vocabulary of 512"
    )
    with pytest.raises(UserError, match=re.escape(message)):
        train_here(*TINY, "--max_iters=10", f"--data_dir={unrecorded}", f"--out_dir={tmp_path / 'out'}")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"val": []}, "val.bin has 0 tokens, fewer than eval_tokens=2048"),
        ({"dtype": None}, "meta.json has no 'dtype', which prepare_owt.py writes"),
        ({"tokenizer": {"name": "x"}}, "meta.json has no 'tokenizer.hash', which prepare_owt.py writes"),
        ({"dtype": "int8"}, "dtype 'int8'; token bins are uint16 or uint32"),
    ],
    ids=["empty val", "no dtype", "no hash", "dtype"],
)
def test_bins_that_prepare_owt_did_not_write_are_refused_by_name(small_bins, tmp_path, change, message):
    data = copy_bins(small_bins, tmp_path / "data", **change)
    expect_error(tmp_path, f"--data_dir={data}", message=message)


def test_a_broken_tokenizer_json_beside_the_reference_is_an_error(small_bins, tmp_path):
    tiny_hf_gpt2(vocab_size=512).save_pretrained(tmp_path / "ref")
    (tmp_path / "ref" / "tokenizer.json").write_text("{broken")
    args = f"--data_dir={small_bins}", "--init_from=pretrained", f"--ref={tmp_path / 'ref'}"
    expect_error(tmp_path, *args, message="tokenizer.json is not a HF tokenizer.json")


def test_inherit_layers_are_named_as_train_py_takes_them(small_bins, reference, tmp_path):
    args = f"--data_dir={small_bins}", "--init_from=inherit", f"--ref={reference}", "--inherit_layers=0,0"
    expect_error(tmp_path, *args, message="selected more than once in inherit_layers=0,0")
