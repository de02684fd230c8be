"""bench/: what each benchmark measures, on CPU-sized shapes, checked on the numbers it returns or records
(its printed tables are for people): train.py's throughput rows, the loss-curve check, the step profile, the
loss timing, the lazy-layer diagnosis cost."""

import json
import statistics
import subprocess
import sys
from argparse import Namespace

import torch

from conftest import ROOT
from model import GPT, ModelConfig

sys.path.insert(0, str(ROOT / "bench"))
import lazy_layers_cost  # noqa: E402
import loss_step  # noqa: E402
import profile_step  # noqa: E402
import throughput  # noqa: E402


def run_throughput(*args) -> str:
    """bench/throughput.py as its users run it: it launches and kills train.py processes."""
    command = [sys.executable, "bench/throughput.py", *map(str, args)]
    r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_throughput_rows_come_from_train_py_logs(tmp_path):
    results = tmp_path / "r.jsonl"
    run_throughput(
        "--shapes=tiny",
        "--variants=m2a2-eager",
        "--log_every=2",
        "--intervals=2",
        f"--work={tmp_path}",
        f"--json={results}",
    )
    row = json.loads(results.read_text())
    assert row["micro"] == 2 and row["accum"] == 2 and row["compile"] is False and row["tok_per_s"] > 0
    assert row["spread"][0] <= row["tok_per_s"] <= row["spread"][1] and 0 < row["mfu"] < 1
    log = next(tmp_path.glob("tiny_m2a2-eager_1gpu_*")) / "log.jsonl"
    config = json.loads(log.read_text().splitlines()[0])["config"]
    assert config["batch_size"] == 4 and config["micro_batch_size"] == 2  # train.py ran the variant asked for
    timed = [r["tok_per_s"] for r in map(json.loads, log.read_text().splitlines()[1:]) if "tok_per_s" in r]
    assert row["tok_per_s"] == statistics.median(timed[1:3])  # the logged intervals after the first (warm-up)
    assert not list(tmp_path.rglob("ckpt.pt"))  # killed after the timed intervals: nothing written


def test_a_failing_variant_gives_an_error_row_and_the_rest_still_run(tmp_path):
    results = tmp_path / "r.jsonl"
    run_throughput(
        "--shapes=tiny",
        "--variants=m2a2-eager+n_embd=63,m2a1-eager",
        "--log_every=2",
        "--intervals=1",
        f"--work={tmp_path}",
        "--timeout=120",
        f"--json={results}",
    )
    failed, ran = map(json.loads, results.read_text().splitlines())
    assert failed["variant"] == "m2a2-eager+n_embd=63" and "n_embd=63" in failed["error"]
    assert ran["variant"] == "m2a1-eager" and ran["tok_per_s"] > 0 and "error" not in ran


def test_distillation_cost_pairs_plain_and_kd_runs_from_train_py_logs(tmp_path):
    results = tmp_path / "r.jsonl"
    out = run_throughput(
        "--shapes=tiny-1l",
        "--kd=0.5",
        "--log_every=2",
        "--intervals=2",
        f"--work={tmp_path}",
        f"--json={results}",
    )
    plain, distilled = map(json.loads, results.read_text().splitlines())
    assert (plain["kd_ratio"], distilled["kd_ratio"]) == (0, 0.5) and plain["tok_per_s"] > 0 < distilled[
        "tok_per_s"
    ]
    kd_log = next(
        p for p in tmp_path.glob("tiny-1l_m2a2-eager_1gpu_*/log.jsonl") if "kd_loss" in p.read_text()
    )
    config = json.loads(kd_log.read_text().splitlines()[0])["config"]
    assert config["n_layer"] == 1 and config["teacher"] == str(tmp_path / "teacher_tiny.pt")
    bound = throughput.flops_per_token("tiny") / 3 / throughput.flops_per_token("tiny-1l")
    overhead = plain["tok_per_s"] / distilled["tok_per_s"] - 1
    assert f"| {overhead:+.1%} | {bound:.1%} |" in out.split("step-time overhead", 1)[1]


def test_loss_check_micro_batch_splits_agree(tmp_path, small_bins):
    variants = "m2a2-eager+eval_tokens=4096,m4a1-eager+eval_tokens=4096"
    out = run_throughput(
        "--shapes=tiny",
        f"--variants={variants}",
        f"--check_loss={small_bins}",
        "--steps=20",
        f"--work={tmp_path}",
    )
    curves = json.loads(out.split("curves:", 1)[1])
    a, b = curves.values()
    assert [s for s, _ in a] == [s for s, _ in b] == [10, 20]
    assert all(abs(x - y) < 1e-4 for (_, x), (_, y) in zip(a, b))
    assert list(tmp_path.rglob("log.jsonl")) and not list(tmp_path.rglob("ckpt.pt"))  # curves, not weights


def test_profile_step_splits_train_py_step_time_by_class(tmp_path):
    data = throughput.synthetic_bins(tmp_path / "bins", 512, tokens=1 << 16)
    argv = throughput.train_args("tiny", "m2a2-eager", 1, data, tmp_path / "run", log_every=5)
    prof, wall = profile_step.profile_train(Namespace(skip=3, steps=2), argv, cuda=False)
    rows = profile_step.kernel_rows(prof, cuda=False)
    classes = {profile_step.kernel_class(name) for name, _, _ in rows}
    assert {"matmul", "optimizer (AdamW, grad clip)", "cross-entropy"} <= classes, classes
    assert wall > 0 and all(t > 0 and calls > 0 for _, t, calls in rows)
    assert not list(tmp_path.rglob("ckpt.pt"))  # stopped after the profiled steps, before any checkpoint


def test_loss_step_times_every_loss_and_they_agree(tmp_path):
    """This checkout's CrossEntropy, other checkouts' (here copies: one in inheritune/losses.py, one in
    model.py, where older checkouts define it) and F.cross_entropy: the same loss value; the times mean
    something on a GPU only (here traced by aot_eager: no kernels to compile)."""
    other, older = tmp_path / "other", tmp_path / "older"
    (other / "inheritune").mkdir(parents=True)
    older.mkdir()
    (other / "inheritune" / "losses.py").write_text((ROOT / "inheritune" / "losses.py").read_text())
    (older / "model.py").write_text((ROOT / "inheritune" / "losses.py").read_text())
    repos = [other, older]
    rows = loss_step.measure(rows=64, vocab=300, repeat=1, repos=repos, device="cpu", backend="aot_eager")
    assert [name.split(" (")[0] for name, _, _ in rows] == ["F.cross_entropy"] + ["CrossEntropy"] * 3
    values = [value for _, _, value in rows]
    assert values[1] == values[2] == values[3] and abs(values[0] - values[1]) < 1e-5
    assert all(ms > 0 for _, ms, _ in rows)
    assert {loss_step.cross_entropy_of(r).__module__ for r in repos} == {
        f"losses_{abs(hash(str(r)))}" for r in repos
    }


def test_lazy_layers_cost_solvers_agree_and_the_diagnosis_is_timed():
    seconds, diff = lazy_layers_cost.time_solvers(n_head=4, T=40, device=torch.device("cpu"))
    assert set(seconds) == set(diff) == {"svdvals", "on CPU", "float32", "eigvalsh"}
    assert diff["float32"] < 1e-5  # float32 singular values: float32 precision relative to the largest
    assert diff["eigvalsh"] < 1e-6  # eigvalsh of P P^T gives svdvals' values (up to float64 squaring)
    model = GPT(ModelConfig(**{**lazy_layers_cost.SHAPES["gpt2-12x512"], "n_layer": 2}))
    seconds, peak = lazy_layers_cost.time_diagnosis(model.eval(), T=32, seqs=1, device=torch.device("cpu"))
    assert seconds > 0 and peak > 0
