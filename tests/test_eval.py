"""eval.py and lm.py: request-by-request parity with lm-eval's HFLM, packed scoring, greedy generation,
tokenizer discovery, the paper's suite, offline failure, and the CLI on a real train.py checkpoint (val loss +
local tasks)."""

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

import eval as eval_script
from conftest import ROOT, TINY, run_log, tiny_hf_llama, train_here, write_gguf
from eval import PAPER_SUITE, expand_tasks, load_for_eval, load_tasks, results_table, run_tasks
from inheritune.lm import InherituneLM, pack_requests
from inheritune.tokenizer import load_tokenizer
from inheritune.util import UserError
from model import GPT, ModelConfig
from weights import save_checkpoint, save_hf, tokenizer_spec_of

TASKS = str(ROOT / "tests" / "tasks")
# short, so the local tasks' contexts and paragraphs run past it (left truncation, rolling windows)
BLOCK = 32
GPT2_BLOCK = 16  # GPT-2's larger vocabulary needs fewer tokens for the same text
OFFLINE_ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(autouse=True, scope="module")
def offline():
    """Nothing here may reach the hub."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def random_gpt(arch, vocab_size, std, seed=0, block_size=BLOCK, **kw):
    """A tiny GPT with large random weights: decisive scores, so a wrong mapping cannot hide inside a
    near-tie."""
    model = GPT(
        ModelConfig(
            arch=arch, n_layer=2, n_head=4, n_embd=64, vocab_size=vocab_size, block_size=block_size, **kw
        )
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
            p.copy_((1.0 if gain else 0.0) + std * torch.randn(p.shape, generator=g))
    return model.eval()


def write_hf_tokenizer(folder, eos, bos=None):
    """tokenizer_config.json beside tokenizer.json, so HFLM's AutoTokenizer knows the special tokens."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), eos_token=eos, bos_token=bos
    ).save_pretrained(folder)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, small_bins):
    """A tiny random LLaMA exported with save_hf, with the 512-token BPE tokenizer.json of the small bins."""
    folder = tmp_path_factory.mktemp("llama")
    tok = load_tokenizer(str(small_bins.parent / "tokenizer.json"))
    save_hf(random_gpt("llama", tok.vocab_size, std=0.15, n_kv_head=2, eos_token_id=tok.eos_id), folder)
    (folder / "tokenizer.json").write_text((small_bins.parent / "tokenizer.json").read_text())
    write_hf_tokenizer(folder, eos="<|endoftext|>")
    return folder


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 (GPT-2's vocabulary) exported with save_hf; HFLM gets GPT-2's BPE converted from
    tiktoken."""
    from transformers.integrations.tiktoken import convert_tiktoken_to_fast  # needs the blobfile package

    folder = tmp_path_factory.mktemp("gpt2")
    tok = load_tokenizer("gpt2")
    save_hf(
        random_gpt(
            "gpt2",
            tok.vocab_size,
            std=0.1,
            block_size=GPT2_BLOCK,
            bos_token_id=tok.eos_id,
            eos_token_id=tok.eos_id,
        ),
        folder,
    )
    convert_tiktoken_to_fast(tok.enc, str(folder))
    write_hf_tokenizer(folder, eos="<|endoftext|>", bos="<|endoftext|>")
    return folder


@pytest.fixture(scope="module")
def llama(llama_dir):
    return load_for_eval(llama_dir)


def local_tasks(*names, num_fewshot=None):
    """The task YAMLs of tests/tasks, freshly loaded (lm-eval keeps requests on the task objects)."""
    return load_tasks([(name, None) for name in names or ["inheritune_local"]], TASKS, num_fewshot)


def hflm_results(folder, batch_size=8):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    hflm = HFLM(pretrained=str(folder), batch_size=batch_size, device="cpu", dtype="float32")
    manager, items, _, _ = local_tasks()
    return simple_evaluate(model=hflm, tasks=items, task_manager=manager, log_samples=True, bootstrap_iters=0)


def assert_same_responses(ours, theirs, tol=1e-4):
    """Every request's response: loglikelihood within tol and the same greedy flag, rolling totals within tol
    per 100 nats (both sum ~100 float32 token scores), generations identical."""
    for task, docs in theirs["samples"].items():
        assert [d["doc_id"] for d in ours["samples"][task]] == [d["doc_id"] for d in docs]
        for a, b in zip(ours["samples"][task], docs):
            for (x,), (y,) in zip(a["resps"], b["resps"]):
                if isinstance(y, str):
                    assert x == y, (task, a["doc_id"])
                elif isinstance(y, (tuple, list)):
                    assert abs(x[0] - y[0]) <= tol and x[1] == y[1], (task, a["doc_id"], x, y)
                else:
                    assert abs(x - y) <= tol * max(1.0, abs(y) / 100), (task, a["doc_id"], x, y)


def scores(results):
    """{(task, metric): value} for every metric lm-eval reports (standard errors left out)."""
    return {
        (task, k): v
        for task, r in results["results"].items()
        for k, v in r.items()
        if "," in k and "stderr" not in k
    }


# --------------------------------------------------------------------------------- parity with HFLM


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_matches_hflm_request_by_request(arch, request):
    """LLaMA with a tokenizer.json, GPT-2 with tiktoken on our side: every loglikelihood, greedy flag, rolling
    total and generation equal to lm-eval's HFLM on the save_hf export, so every metric is equal too."""
    folder = request.getfixturevalue(f"{arch}_dir")
    model, tok = load_for_eval(folder, "gpt2" if arch == "gpt2" else None)
    assert tok.name == ("gpt2" if arch == "gpt2" else "hf:" + folder.name)
    lm = InherituneLM(model, tok, batch_size=8)
    ours, _ = run_tasks(lm, local_tasks(), log_samples=True, bootstrap_iters=0)
    theirs = hflm_results(folder)
    assert_same_responses(ours, theirs)
    assert scores(ours) == pytest.approx(scores(theirs), rel=1e-5)
    # the comparison covered contexts longer than the block and texts needing several windows
    mc = [
        sum(map(len, lm._encode_pair(*args)))
        for d in ours["samples"]["inheritune_mc"]
        for args in d["arguments"]
    ]
    texts = [len(tok.encode(d["arguments"][0][0])) for d in ours["samples"]["inheritune_rolling"]]
    block = model.config.block_size
    assert max(mc) > block + 1 and max(texts) > 2 * block
    assert any(d["resps"][0][0] for d in ours["samples"]["inheritune_gen"])  # real text was compared, not ""


def test_batch_size_does_not_change_results(llama):
    one, _ = run_tasks(InherituneLM(*llama, batch_size=1), local_tasks(), log_samples=True, bootstrap_iters=0)
    eight, _ = run_tasks(
        InherituneLM(*llama, batch_size=8), local_tasks(), log_samples=True, bootstrap_iters=0
    )
    assert_same_responses(one, eight, tol=1e-5)
    assert scores(one) == pytest.approx(scores(eight), rel=1e-5)  # other batch shapes: other float32 kernels


# --------------------------------------------------------------------------- scoring and generation


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_packed_scoring_equals_one_request_at_a_time(llama, batch_size):
    """Continuations sharing a context (and leading tokens) are packed into one row; each score must equal the
    plain forward of that request alone, including one whose context runs past the block (cut from the
    left)."""
    model, tok = llama
    first, second = tok.encode("To be, or not to be, that is the question"), tok.encode("My lord")
    long_context = tok.encode(
        "Now is the winter of our discontent made glorious summer by this sun of York; " * 2
    )
    assert len(long_context) > BLOCK
    answers = [
        tok.encode(s) for s in (" whether", " the slings", " whether tis nobler", " to suffer", " the arrows")
    ]
    pairs = (
        [(first, a) for a in answers]
        + [(second, a) for a in answers[:2]]
        + [(long_context, answers[3]), (first, answers[0])]
    )
    packed = sum(len(row.tokens) for row in pack_requests(pairs, BLOCK))
    # contexts and shared tokens computed once
    assert packed < sum(len((c + a)[-(BLOCK + 1) :]) - 1 for c, a in pairs)
    got = InherituneLM(model, tok, batch_size=batch_size)._loglikelihood_tokens(
        [(None, c, a) for c, a in pairs]
    )
    for (context, answer), (logp, greedy) in zip(pairs, got):
        window = (context + answer)[-(BLOCK + 1) :]
        with torch.no_grad():
            logits = model(torch.tensor([window[:-1]]))[0, -len(answer) :].float().log_softmax(-1)
        target = torch.tensor(answer)
        assert logp == pytest.approx(logits.gather(1, target[:, None]).sum().item(), abs=1e-4)
        assert greedy == bool((logits.argmax(-1) == target).all())


def test_greedy_flag_marks_the_models_own_continuation(llama):
    model, tok = llama
    lm = InherituneLM(model, tok)
    context = tok.encode("Good morrow, sweet")
    with torch.no_grad():
        own = model.generate(torch.tensor([context]), 3, temperature=0)[0, len(context) :].tolist()
    other = own[:2] + [(own[2] + 1) % tok.vocab_size]
    (_, greedy_own), (_, greedy_other) = lm._loglikelihood_tokens(
        [(None, context, own), (None, context, other)]
    )
    assert greedy_own and not greedy_other


def test_generate_until_is_greedy_and_cuts_at_stop_strings(llama):
    from lm_eval.api.instance import Instance

    model, tok = llama
    lm = InherituneLM(model, tok, batch_size=3)
    prompts = ["To be, or not", "My lord, I pray", "Good morrow", "What say you"]

    def generate(until, max_gen_toks=6):
        reqs = [
            Instance("generate_until", {}, (p, {"until": until, "max_gen_toks": max_gen_toks}), i)
            for i, p in enumerate(prompts)
        ]
        return lm.generate_until(reqs, disable_tqdm=True)

    expected = []
    # model.generate (model.py: no packing, no padding, no stop strings) is the reference
    for prompt in prompts:
        context = tok.encode(prompt)
        with torch.no_grad():
            ids = model.generate(torch.tensor([context]), 6, temperature=0)[0, len(context) :].tolist()
        expected.append(ids[: ids.index(tok.eos_id)] if tok.eos_id in ids else ids)
    texts = generate([])
    assert texts == [tok.decode(ids) for ids in expected]
    assert generate([], max_gen_toks=2) == [tok.decode(ids[:2]) for ids in expected]
    longest = max(texts, key=len)
    stop = longest[len(longest) // 2 : len(longest) // 2 + 2]
    assert generate([stop])[texts.index(longest)] == longest.split(stop)[0]


def test_bos_is_prepended_where_the_tokenizer_prepends_it(tmp_path, small_bins, llama):
    """A LLaMA-2-style tokenizer (BOS before every input): contexts start with BOS as in training, the scored
    continuation never includes it, and an empty context is conditioned on BOS alone."""
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_file(str(small_bins.parent / "tokenizer.json"))
    backend.add_special_tokens(["<s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    backend.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert tok.prepend_bos and tok.bos_id == bos
    lm = InherituneLM(llama[0], tok)
    context, continuation = lm._encode_pair("To be, or", " not to be")
    assert context == [bos, *tok.encode("To be, or")] and continuation == tok.encode(" not to be")
    assert (
        lm.tok_encode("To be", add_special_tokens=False) == tok.encode("To be") and lm.prefix_token_id == bos
    )


# --------------------------------------------------------------------------------- tasks and tables


def test_paper_suite_expands_to_its_tasks_and_shots():
    assert expand_tasks("paper") == [
        ("piqa", 0),
        ("boolq", 0),
        ("winogrande", 0),
        ("wsc", 0),
        ("logiqa", 0),
        ("truthfulqa_mc2", 0),
        ("mnli", 0),
        ("qnli", 0),
        ("wnli", 0),
        ("mmlu", 5),
    ]
    assert expand_tasks("paper, piqa,inheritune_mc")[-1] == ("inheritune_mc", None)  # piqa once, 0-shot
    assert len(expand_tasks("paper,piqa")) == len(PAPER_SUITE)
    with pytest.raises(UserError, match="empty"):
        expand_tasks(" , ")


def test_chance_comes_from_the_documents_and_marks_scores_above_it(llama):
    results, chances = run_tasks(
        InherituneLM(*llama), local_tasks("inheritune_mc", "inheritune_gen"), limit=20, bootstrap_iters=0
    )
    lines = (ROOT / "tests" / "tasks" / "mc_test.jsonl").read_text().splitlines()[:20]
    answers = Counter(json.loads(line)["answer"] for line in lines)
    assert chances["inheritune_mc"] == pytest.approx(max(0.25, max(answers.values()) / 20))
    assert chances["inheritune_gen"] is None
    table = results_table(results, chances)
    assert "| chance | above chance? |" in table and "| inheritune_gen | 0 | exact_match,strip |" in table
    fake = {"results": {"t": {"acc,none": 0.9, "acc_stderr,none": 0.05}}, "n-shot": {"t": 0}}
    assert table_verdict(fake, 0.5) == "yes" and table_verdict(fake, 0.85) == "no"
    paper = {"results": {"logiqa": {"acc,none": 0.3, "acc_norm,none": 0.31}}, "n-shot": {"logiqa": 0}}
    assert [line.split(" | ")[2] for line in results_table(paper, {"logiqa": 0.25}).splitlines()[2:]] == [
        "acc,none"
    ]


def table_verdict(results, chance):
    return results_table(results, {"t": chance}).splitlines()[-1].strip("| ").split(" | ")[-1]


def test_fewshot_examples_come_from_the_train_split(llama):
    results, _ = run_tasks(
        InherituneLM(*llama),
        local_tasks("inheritune_mc", num_fewshot=3),
        limit=2,
        log_samples=True,
        bootstrap_iters=0,
    )
    assert results["n-shot"]["inheritune_mc"] == 3
    context = results["samples"]["inheritune_mc"][0]["arguments"][0][0]
    assert context.count("Question:") == 4


def test_missing_include_path_is_named(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_tasks([("inheritune_mc", None)], str(tmp_path / "nowhere"))


# -------------------------------------------------------------------------------------- checkpoints


def test_tokenizer_is_found_for_every_kind_of_checkpoint(tmp_path, llama_dir):
    from inherit import inherit_layers

    # HF folder with its tokenizer.json
    assert tokenizer_spec_of(llama_dir) == str(llama_dir)
    bare = tmp_path / "gpt2_export"
    save_hf(random_gpt("gpt2", 50257, std=0.02), bare)
    # GPT-2 export without tokenizer files
    assert tokenizer_spec_of(bare) == "gpt2"
    gguf = tmp_path / "m.gguf"
    write_gguf(tiny_hf_llama(), gguf, "float32")
    assert tokenizer_spec_of(gguf) == str(gguf)  # a GGUF carries its vocabulary
    model, provenance = inherit_layers(llama_dir, n_layer=1)
    save_checkpoint(tmp_path / "inherited.pt", model, inherit=provenance)
    # inherit.py: the reference's
    assert tokenizer_spec_of(tmp_path / "inherited.pt") == str(llama_dir.resolve())
    save_checkpoint(tmp_path / "plain.pt", model)
    with pytest.raises(UserError, match="--tokenizer"):
        tokenizer_spec_of(tmp_path / "plain.pt")
    # GPT-2's 50257 tokens, 512 embeddings
    with pytest.raises(UserError, match="--tokenizer"):
        load_for_eval(llama_dir, "gpt2")


def run_eval(*args, timeout=300):
    """eval.py in a process of its own, offline."""
    command = [sys.executable, "eval.py", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=OFFLINE_ENV, timeout=timeout)


def eval_here(*args) -> None:
    eval_script.main([str(a) for a in args])


def test_cli_on_a_train_checkpoint_val_loss_and_tasks(tmp_path, small_bins, capsys):
    """train.py's checkpoint: the tokenizer comes from its data, the val loss equals the one train.py logged
    for the same weights, and the task table prints a chance column."""
    run_dir = tmp_path / "run"
    short = ["--batch_size=4", "--max_iters=4", "--warmup_iters=1", "--eval_tokens=1024", "--eval_interval=4"]
    train_here(*TINY, *short, f"--data_dir={small_bins}", f"--out_dir={run_dir}")
    logged = run_log(run_dir)[1][-1]
    tasks = [
        "--tasks",
        "inheritune_mc,inheritune_gen",
        "--include_path",
        TASKS,
        "--limit",
        6,
        "--log_samples",
    ]
    capsys.readouterr()
    eval_here("--ckpt", run_dir, "--val_data", small_bins, *tasks, "--out", tmp_path / "results.json")
    stdout = capsys.readouterr().out
    out = json.loads((tmp_path / "results.json").read_text())
    # the same weights and windows, evaluated in other batches than training's (micro_batch_size 2 against
    # eval.py's 16): float32 kernels that reduce in their own order, ulps apart
    assert out["val"]["val_loss"] == pytest.approx(logged["val_loss"], rel=1e-5)
    assert out["val"]["block_size"] == 32 and out["val"]["eval_tokens"] == 1024
    assert "tokenizer hf:" in stdout and "val loss" in stdout
    assert "| inheritune_mc | 0 | acc,none |" in stdout and "above chance?" in stdout
    # the reported accuracy comes from this model's scores
    picked = [
        max(range(len(d["resps"])), key=lambda i: d["resps"][i][0][0]) == d["target"]
        for d in out["samples"]["inheritune_mc"]
    ]
    assert out["results"]["inheritune_mc"]["acc,none"] == pytest.approx(sum(picked) / len(picked))
    assert out["n-samples"]["inheritune_gen"]["effective"] == 6


def test_cli_paper_suite_offline_fails_fast_with_one_line(llama_dir):
    """In a fresh process with the hub out of reach and no cache, the first paper task stops the run with one
    line naming the fixes; every other paper task name resolved in lm-eval's index first (an unknown one would
    be reported instead)."""
    start = time.time()
    r = run_eval("--ckpt", llama_dir, "--tasks", "paper")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: task 'piqa'") and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "--include_path" in lines[-1] and "HF_DATASETS_OFFLINE" in lines[-1]
    assert time.time() - start < 120


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "nothing to do: pass --tasks (e.g. paper, or piqa,boolq) and/or --val_data DIR"),
        (["--limit", "-3", "--tasks", "inheritune_mc"], "--limit -3.0: must be positive"),
        (["--batch_size", "0", "--tasks", "inheritune_mc"], "--batch_size 0: must be positive"),
        (["--val_data", "BINS", "--block_size", "4096"], "--block_size 4096 is longer than"),
        (
            ["--val_data", "BINS", "--eval_tokens", "16", "--block_size", "32"],
            "eval_tokens=16 is less than one window",
        ),
        (["--tasks", "inheritune_mcq"], "unknown task 'inheritune_mcq'; did you mean 'inheritune_mc'?"),
        pytest.param(
            ["--device", "cuda", "--tasks", "inheritune_mc"],
            "use device=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA"),
        ),
    ],
)
def test_cli_bad_settings_are_refused_before_anything_is_written(
    llama_dir, small_bins, tmp_path, args, message
):
    args = [str(small_bins) if a == "BINS" else a for a in args]
    with pytest.raises(UserError, match=re.escape(message)):
        eval_here("--ckpt", llama_dir, *args, "--include_path", TASKS, "--out", tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_cli_an_existing_or_unwritable_out_is_refused_before_evaluating(
    llama_dir, small_bins, tmp_path, monkeypatch
):
    monkeypatch.setattr(
        eval_script, "eval_val_loss", lambda *a, **k: pytest.fail("evaluated before the checks")
    )
    (tmp_path / "results.json").write_text("earlier results")
    (tmp_path / "file").write_text("x")
    for out, message in [
        (tmp_path / "results.json", "results.json exists; choose another path, or pass --overwrite"),
        (tmp_path / "file" / "r.json", "file is a file, not a folder"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            eval_here("--ckpt", llama_dir, "--val_data", small_bins, "--out", out)
    assert (tmp_path / "results.json").read_text() == "earlier results"


def test_val_loss_needs_no_lm_eval_and_tasks_say_how_to_get_it(llama_dir, small_bins, monkeypatch):
    code = (
        "import runpy, sys; sys.modules['lm_eval'] = None; sys.argv = ['eval.py', *sys.argv[1:]]; "
        "runpy.run_path('eval.py', run_name='__main__')"
    )
    val = ["--val_data", str(small_bins), "--eval_tokens", "1024", "--block_size", "32"]
    command = [sys.executable, "-c", code, "--ckpt", str(llama_dir), *val]
    r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=OFFLINE_ENV)
    assert r.returncode == 0 and "val loss" in r.stdout, r.stderr[-2000:]
    monkeypatch.setattr(eval_script, "lm_eval_installed", lambda: False)
    message = "--tasks needs lm-evaluation-harness: pip install -e '.[eval]' (lm-eval==0.4.13)"
    with pytest.raises(UserError, match=re.escape(message)):
        eval_here("--ckpt", llama_dir, "--tasks", "inheritune_mc")
