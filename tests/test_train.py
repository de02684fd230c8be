"""train.py: config handling, DDP equivalence, exact resume after SIGKILL, SIGTERM, the growth loop, bad
inputs."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from inheritune.util import UserError
from train import TrainConfig, load_config
from weights import load_model, save_checkpoint

TINY = [
    "--arch=gpt2",
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=8",
    "--micro_batch_size=2",
    "--learning_rate=3e-3",
    "--min_lr=3e-4",
    "--warmup_iters=5",
    "--eval_tokens=2048",
    "--log_interval=5",
    "--eval_interval=10",
    "--checkpoint_interval=10",
    "--device=cpu",
]
# train.py's float8 path on a CPU (torch._scaled_mm runs there too): tests/fp8_on_cpu.py lifts the GPU
# requirement
FP8_ON_CPU = {
    "args": ["--fp8=True", "--dtype=bfloat16"],
    "script": "tests/fp8_on_cpu.py",
    "converted": "fp8_on_cpu: 8 Float8Linear",
}  # TINY: 2 blocks of 4 Linears
PLAIN = {"args": [], "script": "train.py", "converted": None}


def run_train(*args, torchrun=0, check=True, background=None, restarts=0, env=None, path=PLAIN):
    """Run train.py (under torchrun with `torchrun` ranks; path=FP8_ON_CPU: its float8 path);
    background=<file> starts it and returns the Popen."""
    launcher = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={torchrun}",
            f"--max_restarts={restarts}",
        ]
        if torchrun
        else [sys.executable]
    )
    cmd = [*launcher, path["script"], *map(str, args), *path["args"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if background:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=open(background, "w"), stderr=subprocess.STDOUT, env=env
        )
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        if path["converted"]:  # every rank converted its model: the test did not quietly run in bf16
            assert r.stdout.count(path["converted"]) == max(torchrun, 1), r.stdout
    return r


def read_log(out_dir):
    lines = [json.loads(x) for x in (out_dir / "log.jsonl").read_text().splitlines()]
    return lines[0]["config"], lines[1:]


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in ("tok_per_s", "mfu")} for r in records]


def assert_same_updates(args, run_a, run_b):
    """Two runs of one recipe whose gradients were summed in another order (ranks, DDP buckets) learned the
    same update, up to float32 rounding. Not element by element: Adam divides each gradient by its own running
    scale, so an element whose gradient is all rounding noise (near-cancelling sums) may step either way, by
    whatever the CPU's kernels round. Per tensor, the difference of the two runs' updates is ~1e-5 of the
    update's norm (measured: 2-3 ranks, 10-40 steps); a run that trains on a third of the batch wrongly is off
    by 0.3-0.6. 1e-3 sits between."""
    import contextlib

    from inheritune.data import read_meta
    from train import Runtime, build_model

    cfg = load_config(args)
    initial, _ = build_model(
        cfg,
        read_meta(cfg.data_dir)["vocab_size"],
        Runtime(0, 1, torch.device("cpu"), contextlib.nullcontext()),
    )
    w0, a, b = initial.state_dict(), load_model(run_a).state_dict(), load_model(run_b).state_dict()
    for name in w0:
        assert (a[name] - b[name]).norm() <= 1e-3 * (a[name] - w0[name]).norm(), name


# ------------------------------------------------------------------------------------------- configuration


def test_config_file_and_typed_overrides(tmp_path):
    (tmp_path / "c.py").write_text("import math\nn_layer = 6\nlearning_rate = 1e-3\n_private = 3\n")
    cfg = load_config(
        [
            str(tmp_path / "c.py"),
            "--learning_rate=1",
            "--compile=true",
            "--lr_decay_iters=None",
            "--max_iters=1e3",
            "--out_dir=x",
        ]
    )
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
    ],
)
def test_config_errors(args, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(args)


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


def test_help_lists_every_key_with_its_default_and_meaning():
    from dataclasses import fields

    r = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: python train.py"), r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("  --")}
    for f in fields(TrainConfig):
        default = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
        # a meaning after the default
        assert lines[f"--{f.name}={default}"].split(maxsplit=1)[1].strip(), f.name


# ------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    "ranks,batch_size,path", [(2, 8, PLAIN), (3, 12, PLAIN), (2, 8, FP8_ON_CPU)], ids=["2", "3", "2-fp8"]
)  # 3: the paper's (and the card's) GPU count
def test_one_process_and_ddp_ranks_agree(small_bins, tmp_path, ranks, batch_size, path):
    # bias=False: GPT-2's key bias has an exactly zero gradient (softmax ignores a shift shared by every key),
    # so Adam steps it by pure rounding noise, which no tolerance derived from float32 bounds. fp8: each
    # micro-batch's float8 scales are its own whichever rank runs it; only the gradients' summation order
    # differs, as in bf16
    common = [
        *TINY,
        f"--data_dir={small_bins}",
        "--max_iters=10",
        f"--batch_size={batch_size}",
        "--bias=False",
    ]
    run_train(*common, f"--out_dir={tmp_path / 'one'}", path=path)
    ddp = run_train(*common, f"--out_dir={tmp_path / 'two'}", torchrun=ranks, path=path)
    cfg1, log1 = read_log(tmp_path / "one")
    cfg2, log2 = read_log(tmp_path / "two")
    # the global batch does not depend on world size
    assert cfg1["batch_size"] == cfg2["batch_size"] == batch_size
    assert (
        f"{batch_size} x 32 tokens/step = {ranks} ranks x 2 x {batch_size // (2 * ranks)} accumulation"
        in ddp.stdout
    )
    assert [r["step"] for r in log1] == [r["step"] for r in log2]
    for a, b in zip(log1, log2):  # losses of near-equal weights: agree to ~1e-7 relative, 1e-4 leaves room
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (a, b)
    assert_same_updates(common, tmp_path / "one", tmp_path / "two")


@pytest.mark.parametrize("scope", ["model", "blocks"])
def test_compiled_training_matches_eager(small_bins, tmp_path, scope):
    common = [*TINY, f"--data_dir={small_bins}", "--max_iters=10", "--eval_interval=5"]
    run_train(*common, f"--out_dir={tmp_path / 'eager'}")
    run_train(*common, f"--out_dir={tmp_path / scope}", "--compile=True", f"--compile_scope={scope}")
    eager, compiled = read_log(tmp_path / "eager")[1], read_log(tmp_path / scope)[1]
    assert [r["step"] for r in eager] == [r["step"] for r in compiled]
    for a, b in zip(eager, compiled):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (scope, a, b)


@pytest.mark.parametrize("path", [PLAIN, FP8_ON_CPU], ids=["plain", "fp8"])
def test_sigkill_then_resume_is_bit_identical(small_bins, tmp_path, path):
    common = [*TINY, f"--data_dir={small_bins}", "--max_iters=150", "--checkpoint_interval=7"]
    run_train(*common, f"--out_dir={tmp_path / 'straight'}", path=path)
    proc = run_train(
        *common, f"--out_dir={tmp_path / 'killed'}", background=tmp_path / "killed.txt", path=path
    )
    ckpt = tmp_path / "killed" / "ckpt.pt"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill -9 somewhere after the second checkpoint
        log = tmp_path / "killed" / "log.jsonl"
        if ckpt.exists() and log.exists() and '"step": 15,' in log.read_text():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 14 <= torch.load(ckpt, weights_only=True)["step"] < 150
    stale = tmp_path / "killed" / ".ckpt.pt.x1y2z3.tmp"  # what a kill in the middle of a save leaves behind
    stale.write_bytes(b"partial")
    # the same command again: it continues the run
    run_train(*common, f"--out_dir={tmp_path / 'killed'}", path=path)
    assert not stale.exists()
    a, b = (
        torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True),
        torch.load(ckpt, weights_only=True),
    )
    assert a["step"] == b["step"] == 150
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert without_timing(read_log(tmp_path / "straight")[1]) == without_timing(
        read_log(tmp_path / "killed")[1]
    )


def torchrun_worker(launcher_pid: int, local_rank: int) -> int:
    for pid in subprocess.run(
        ["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True
    ).stdout.split():
        if f"LOCAL_RANK={local_rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return int(pid)
    raise AssertionError(f"no worker with LOCAL_RANK={local_rank} under torchrun pid {launcher_pid}")


def test_torchrun_restart_after_a_killed_rank_resumes(small_bins, tmp_path):
    common = [
        *TINY,
        f"--data_dir={small_bins}",
        "--batch_size=12",
        "--max_iters=40",
        "--checkpoint_interval=7",
        "--bias=False",
    ]
    run_train(*common, f"--out_dir={tmp_path / 'straight'}", torchrun=3)
    proc = run_train(
        *common,
        f"--out_dir={tmp_path / 'killed'}",
        torchrun=3,
        restarts=1,
        env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"},
        background=tmp_path / "killed.txt",
    )
    log, deadline = tmp_path / "killed" / "log.jsonl", time.time() + 120
    while not (log.exists() and '"step": 15,' in log.read_text()):
        assert time.time() < deadline and proc.poll() is None, (tmp_path / "killed.txt").read_text()[-3000:]
        time.sleep(0.05)
    os.kill(torchrun_worker(proc.pid, local_rank=1), signal.SIGKILL)  # after the step-14 checkpoint
    assert proc.wait(timeout=300) == 0, (tmp_path / "killed.txt").read_text()[-3000:]
    assert "holds this command's run at step 14: continuing it" in (
        output := (tmp_path / "killed.txt").read_text()
    )
    assert re.search(r"resume: .* steps [1-9]\d* -> 40", output), output  # continued, not started over
    a = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "ckpt.pt", weights_only=True)
    assert a["step"] == b["step"] == 40
    # not bit-identical: DDP regroups its gradient buckets after a (re)start's first step, which changes the
    # order in which the ranks' gradients are summed, and the pending train loss resumes as the ranks' float32
    # mean
    assert_same_updates(common, tmp_path / "straight", tmp_path / "killed")
    straight, killed = (
        without_timing(read_log(tmp_path / "straight")[1]),
        without_timing(read_log(tmp_path / "killed")[1]),
    )
    assert [r["step"] for r in straight] == [r["step"] for r in killed]
    for x, y in zip(straight, killed):
        assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], rel=1e-4) for k in x), (x, y)


def test_rerun_continues_the_same_command_and_refuses_another(small_bins, tmp_path):
    args = [*TINY, f"--data_dir={small_bins}", f"--out_dir={tmp_path / 'run'}", "--max_iters=10"]
    run_train(*args)
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    r = run_train(*args)  # finished: continuing it trains nothing and keeps the checkpoint
    assert "holds this command's run at step 10: continuing it" in r.stdout and "steps 10 -> 10" in r.stdout
    for other, changed in (
        (["--learning_rate=1e-2"], "learning_rate=0.01 (was 0.003)"),
        (["--init_from=pretrained", f"--ref={tmp_path / 'run'}"], "init_from='pretrained' (was 'scratch')"),
    ):
        r = run_train(*args, *other, check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"ckpt.pt (a run at step 10) was made with other settings: {changed}" in r.stderr, r.stderr
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before


def test_torchrun_restarts_refused_on_the_shared_store(small_bins, tmp_path):
    r = run_train(
        *TINY,
        f"--data_dir={small_bins}",
        f"--out_dir={tmp_path}",
        torchrun=2,
        restarts=1,
        check=False,
        env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "0"},
    )
    assert r.returncode != 0 and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun" in r.stdout + r.stderr


def test_sigterm_saves_a_checkpoint(small_bins, tmp_path):
    out = tmp_path / "run"
    proc = run_train(
        *TINY,
        f"--data_dir={small_bins}",
        "--max_iters=100000",
        "--checkpoint_interval=100000",
        f"--out_dir={out}",
        background=tmp_path / "out.txt",
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "log.jsonl").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    output = (tmp_path / "out.txt").read_text()
    assert proc.returncode == 143 and "SIGTERM: checkpoint at step" in output, output
    assert 0 < torch.load(out / "ckpt.pt", weights_only=True)["step"] < 100000


def test_nan_loss_stops_with_a_clear_message(small_bins, tmp_path):
    r = run_train(
        *TINY,
        f"--data_dir={small_bins}",
        "--max_iters=30",
        "--learning_rate=1e30",
        "--grad_clip=0",
        "--warmup_iters=0",
        f"--out_dir={tmp_path / 'nan'}",
        check=False,
    )
    assert r.returncode == 1 and "train loss nan" in r.stderr and "before step 5" in r.stderr, r.stderr
    assert "no checkpoint was saved yet" in r.stderr and not (tmp_path / "nan" / "ckpt.pt").exists(), r.stderr


# ------------------------------------------------------------------------------------------- growth loop


@pytest.fixture(scope="module")
def reference(small_bins, tmp_path_factory):
    """A 4-layer GPT-2 trained from scratch on the small bins: the growth loop's reference."""
    out = tmp_path_factory.mktemp("ref")
    run_train(*TINY, "--n_layer=4", f"--data_dir={small_bins}", "--max_iters=60", f"--out_dir={out}")
    return out / "ckpt.pt"


def grow_args(small_bins, reference, out, *extra):
    return [
        *TINY,
        f"--data_dir={small_bins}",
        f"--ref={reference}",
        "--grow=True",
        "--n_layer=1",
        "--grow_step=1",
        "--max_iters=20",
        "--grow_last_k=2",
        f"--out_dir={out}",
        *extra,
    ]


def test_growth_loop_stops_at_first_matching_depth_and_resumes(small_bins, reference, tmp_path):
    # 1) never matching: every depth up to the reference's is trained, each from the reference
    run_train(*grow_args(small_bins, reference, tmp_path / "all", "--grow_tolerance=-100"))
    state = json.loads((tmp_path / "all" / "growth.json").read_text())
    rounds = state["rounds"]
    assert [r["n_layer"] for r in rounds] == [1, 2, 3, 4] and not any(r["matches"] for r in rounds)
    assert (tmp_path / "all" / "growth.png").exists()
    # 20 steps against a reference trained 60: not the reference's recipe, so flagged, and both sides are
    # scored by their final val loss (the reference's evaluated now on the same windows)
    assert state["recipe_differences"] == ["max_iters=20 (reference: 60)"] and state["k"] == 1
    assert state["statistic"] == "final val loss" and "another recipe" in state["why"]
    for r in rounds:  # each round starts from the reference, not from the previous round
        assert r["score"] == r["runs"][0]["final_val_loss"] == r["runs"][0]["val_curve"][-1][1]
        ckpt = torch.load(os.path.join(r["runs"][0]["dir"], "ckpt.pt"), weights_only=True)
        assert ckpt["inherit"]["reference"]["path"] == str(reference.resolve())
        assert ckpt["inherit"]["layers"] == list(range(r["n_layer"]))
    from inherit import inherit_layers
    from inheritune.data import val_loss

    fresh, _ = inherit_layers(reference, n_layer=2, dtype=torch.float32)
    # the subprocess ran with one thread, this process may use more: float32 sums in another order
    assert rounds[1]["runs"][0]["val_curve"][0][1] == pytest.approx(
        val_loss(fresh, str(small_bins), 32, 2048, 2), rel=1e-5
    )

    # 2) a target that the first rounds miss and a later one meets: the loop stops right there
    means = [r["score"] for r in rounds]
    # the first depth that beats all shallower
    stop_at = next(k for k in range(1, 4) if means[k] < min(means[:k]))
    tolerance = (means[stop_at] + min(means[:stop_at])) / 2 - state["reference_score"]
    args = grow_args(small_bins, reference, tmp_path / "stop", f"--grow_tolerance={tolerance}")
    run_train(*args)
    stopped = json.loads((tmp_path / "stop" / "growth.json").read_text())["rounds"]
    assert [(r["n_layer"], r["matches"]) for r in stopped] == [
        (k + 1, k == stop_at) for k in range(stop_at + 1)
    ]
    curves = lambda rs: [[run["val_curve"] for run in r["runs"]] for r in rs]  # noqa: E731
    assert curves(stopped) == curves(rounds[: stop_at + 1])

    # 3) killed during round 2, rerun: the loop resumes that round and ends as the uninterrupted one
    proc = run_train(
        *grow_args(
            small_bins,
            reference,
            tmp_path / "resumed",
            f"--grow_tolerance={tolerance}",
            "--checkpoint_interval=5",
        ),
        background=tmp_path / "resumed.txt",
    )
    ckpt = tmp_path / "resumed" / "round2_2L" / "ckpt.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_train(
        *args[:-2],
        f"--out_dir={tmp_path / 'resumed'}",
        f"--grow_tolerance={tolerance}",
        "--checkpoint_interval=5",
    )
    resumed = json.loads((tmp_path / "resumed" / "growth.json").read_text())["rounds"]
    assert [(r["n_layer"], r["matches"]) for r in resumed] == [(r["n_layer"], r["matches"]) for r in stopped]
    assert curves(resumed) == curves(stopped)


def test_verdict_scores_the_reference_by_the_rounds_statistic():
    """The demo's case under the old rule: the candidate's last-3 mean (4.247) against the reference's final
    value (4.241) said "worse", though the candidate ended lower (4.224) and the reference's own last-3 mean
    is 4.267."""
    from growth import score, verdict

    reference = [[400, 4.301], [500, 4.259], [600, 4.241]]
    candidate = [[400, 4.272], [500, 4.245], [600, 4.224]]
    old_rule = score(candidate, 3) <= reference[-1][1]
    new_rule = verdict([score(candidate, 3)], score(reference, 3), tolerance=0.0)
    assert (
        not old_rule and new_rule["matches"] and new_rule["margin"] == pytest.approx(4.247 - 4.267, abs=1e-9)
    )
    assert verdict([score(candidate, 1)], score(reference, 1), 0.0)["matches"]  # final against final agrees
    seeds = verdict([4.25, 4.27, 4.26], 4.262, tolerance=0.0)  # mean 4.26 matches, within two standard errors
    assert seeds["matches"] and seeds["seed_sd"] == pytest.approx(0.01) and seeds["within_noise"]


def test_growth_loop_reads_the_reference_curve_from_its_own_log(small_bins, reference, tmp_path):
    """The reference trained with this recipe (60 steps): both sides are scored by the mean of their last
    grow_last_k val losses, the reference's taken from its own log; grow_seeds runs each round over seeds."""
    run_train(
        *grow_args(
            small_bins,
            reference,
            tmp_path,
            "--max_iters=60",
            "--n_layer=3",
            "--grow_tolerance=100",
            "--grow_seeds=2",
        )
    )
    state = json.loads((tmp_path / "growth.json").read_text())
    log = [r["val_loss"] for r in read_log(reference.parent)[1] if "val_loss" in r]
    assert state["statistic"] == "mean of the last k val losses" and state["k"] == 2
    assert state["recipe_differences"] == [] and state["reference_score"] == pytest.approx(sum(log[-2:]) / 2)
    (only,) = state["rounds"]
    assert [run["seed"] for run in only["runs"]] == [1337, 1338] and only["matches"]
    assert [run["dir"] for run in only["runs"]] == [
        str(tmp_path / "round1_3L" / f"seed{s}") for s in (1337, 1338)
    ]
    scores = [sum(v for _, v in run["val_curve"][-2:]) / 2 for run in only["runs"]]
    assert only["score"] == pytest.approx(sum(scores) / 2) and only["seed_sd"] > 0
    assert only["runs"][0]["val_curve"] != only["runs"][1]["val_curve"]  # two seeds, two runs


# ------------------------------------------------------------------------------------------- bad inputs


def expect_error(tmp_path, *args, message):
    out = tmp_path / "never"
    r = run_train(*TINY, f"--out_dir={out}", *args, check=False)
    assert r.returncode == 1 and message in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert not out.exists(), "a failed start must write nothing"


def test_error_missing_bins(tmp_path):
    expect_error(tmp_path, f"--data_dir={tmp_path / 'nothing'}", message="no meta.json")


def test_error_vocab_mismatch(small_bins, tmp_path):
    hf_dir = tmp_path / "gpt2ref"
    from conftest import tiny_hf_gpt2

    tiny_hf_gpt2().save_pretrained(hf_dir)  # vocab 1000; the bins have 512
    expect_error(
        tmp_path,
        f"--data_dir={small_bins}",
        "--init_from=pretrained",
        f"--ref={hf_dir}",
        message="vocabulary of 1000",
    )


def test_error_val_shorter_than_eval_budget(small_bins, tmp_path):
    expect_error(
        tmp_path, f"--data_dir={small_bins}", "--eval_tokens=100000000", message="fewer than eval_tokens"
    )


def test_error_cudnn_attention_with_head_dim_not_divisible_by_8(small_bins, tmp_path):
    r = run_train(
        *TINY,
        f"--data_dir={small_bins}",
        f"--out_dir={tmp_path}",
        "--n_embd=36",
        "--n_head=4",
        "--attention=cudnn",
        "--dtype=bfloat16",
        check=False,
    )
    assert r.returncode != 0 and "head dimension divisible by 8; this model's is 9" in r.stderr + r.stdout


def test_error_batch_not_divisible(small_bins, tmp_path):
    expect_error(tmp_path, f"--data_dir={small_bins}", "--batch_size=7", message="not divisible")


@pytest.mark.parametrize(
    "arg,message",
    [
        ("--learning_rate=-1", "learning_rate=-1.0 is out of range: it must be >= 0"),
        ("--beta1=2", "beta1=2.0 is out of range: it must be in [0, 1)"),
        ("--batch_size=0", "batch_size=0 is out of range: it must be >= 1"),
        ("--eval_interval=0", "eval_interval=0 is out of range: it must be >= 1"),
        ("--block_size=0", "block_size=0 is out of range: it must be >= 1"),
        ("--max_iters=-5", "max_iters=-5 is out of range: it must be >= 1"),
        ("--eval_tokens=16", "eval_tokens=16 is less than one window of block_size=32"),
    ],
)
def test_error_settings_out_of_range(small_bins, tmp_path, arg, message):
    expect_error(tmp_path, f"--data_dir={small_bins}", arg, message=message)


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


@pytest.mark.skipif((ROOT / "out" / "gpt2_large" / "ckpt.pt").exists(), reason="the reference exists here")
def test_error_untrained_reference_names_its_config_once(small_bins, tmp_path):
    r = run_train(
        ROOT / "config" / "gpt2_large_inherit18.py",
        f"--data_dir={small_bins}",
        "--device=cpu",
        "--compile=False",
        f"--out_dir={tmp_path / 'x'}",
        torchrun=2,
        check=False,
    )
    assert r.returncode != 0 and (r.stdout + r.stderr).count("error:") == 1, r.stdout + r.stderr
    assert "train it first (torchrun --nproc_per_node=N train.py config/gpt2_large.py writes it)" in r.stderr
    assert not (tmp_path / "x").exists()


def test_train_config_records_the_model_trained(small_bins, reference, tmp_path):
    run_train(
        *TINY,
        f"--data_dir={small_bins}",
        "--init_from=inherit",
        f"--ref={reference}",
        "--n_layer=4",
        "--inherit_layers=0,2",
        "--max_iters=1",
        f"--out_dir={tmp_path}",
    )
    written = json.loads((tmp_path / "train_config.json").read_text())
    assert written["n_layer"] == 2 and written["inherit_layers"] == "0,2" and written == read_log(tmp_path)[0]


def test_error_grow_depth_above_reference(small_bins, reference, tmp_path):
    expect_error(
        tmp_path,
        f"--data_dir={small_bins}",
        f"--ref={reference}",
        "--grow=True",
        "--n_layer=5",
        message="outside 1..4",
    )
    expect_error(
        tmp_path,
        f"--data_dir={small_bins}",
        f"--ref={reference}",
        "--init_from=inherit",
        "--n_layer=9",
        message="outside 1..4",
    )


def test_lr_schedule_shape():
    from train import lr_at

    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    lrs = [lr_at(s, cfg) for s in range(120)]
    assert lrs[0] < lrs[9] < 1.0 and lrs[10] == pytest.approx(1.0) and lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[60] == pytest.approx(0.55)


@pytest.mark.parametrize(
    "path", sorted([*ROOT.glob("config/*.py"), *ROOT.glob("experiments/*/config/*.py")]), ids=lambda p: p.name
)
def test_every_shipped_config_loads_from_any_directory(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = load_config([str(path)])
    assert cfg.batch_size % cfg.micro_batch_size == 0
    if cfg.grow or cfg.init_from in ("inherit", "pretrained"):
        assert cfg.ref


def test_resume_refuses_a_different_recipe(small_bins, tmp_path):
    args = [*TINY, f"--data_dir={small_bins}", "--max_iters=10", f"--out_dir={tmp_path / 'run'}"]
    run_train(*args)
    r = run_train(*args, "--init_from=resume", "--learning_rate=1e-2", "--max_iters=20", check=False)
    assert r.returncode == 1 and "was made with other settings: " in r.stderr, r.stderr
    assert "learning_rate=0.01 (was 0.003)" in r.stderr and "max_iters=20 (was 10)" in r.stderr
    assert r.stderr.strip().count("\n") == 0
    # no effect on learning: fine
    run_train(*args, "--init_from=resume", "--micro_batch_size=4", "--max_iters=10")


def test_verdict_falls_back_to_final_values_for_an_unfinished_or_foreign_reference(
    small_bins, reference, tmp_path
):
    """A reference stopped before its max_iters, or trained on other bins, has no curve comparable step for
    step."""
    from growth import reference_curve
    from inheritune.data import read_meta

    ckpt = torch.load(reference, weights_only=True)
    recipe, meta = ckpt["train_config"], read_meta(small_bins)
    assert reference_curve(reference, recipe, meta)[0] is not None  # finished, same bins: its own curve
    save_checkpoint(
        tmp_path / "ckpt.pt",
        load_model(reference),
        **{**{k: v for k, v in ckpt.items() if k not in ("config", "model")}, "step": 30},
    )
    shutil.copy(reference.parent / "log.jsonl", tmp_path)
    curve, differences, why = reference_curve(tmp_path / "ckpt.pt", recipe, meta)
    assert curve is None and differences == [] and why == "the reference stopped at step 30 of its 60"
    other = {**meta, "settings": {**meta["settings"], "fingerprint": "another corpus"}}
    assert "another val set" in reference_curve(reference, recipe, other)[2]


def test_error_growth_json_of_an_earlier_verdict(small_bins, reference, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "growth.json").write_text(json.dumps({"rounds": [{"n_layer": 1, "matches": False}]}))
    r = run_train(*grow_args(small_bins, reference, tmp_path), check=False)
    assert r.returncode == 1 and "written by an earlier growth loop" in r.stderr, r.stderr


def test_error_sliding_window_with_a_kernel_that_takes_no_mask(small_bins, tmp_path):
    expect_error(
        tmp_path,
        f"--data_dir={small_bins}",
        "--arch=mistral",
        "--n_embd=32",
        "--n_head=2",
        "--sliding_window=16",
        "--attention=flash",
        "--dtype=bfloat16",
        message="exceeds the model's sliding window of 16",
    )
