"""bench/: the throughput table, the loss-curve check, the step profile and the loss timing, on CPU-sized
shapes."""

import json
import re
import subprocess
import sys

from conftest import ROOT


def run_bench(*args):
    r = subprocess.run(
        [sys.executable, "bench/throughput.py", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_throughput_rows_come_from_train_py_logs(tmp_path):
    out = run_bench(
        "--shapes=tiny",
        "--variants=m2a2-eager",
        "--log_every=2",
        "--intervals=2",
        f"--work={tmp_path}",
        f"--json={tmp_path / 'r.jsonl'}",
    )
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["micro"] == 2 and row["accum"] == 2 and row["compile"] is False and row["tok_per_s"] > 0
    assert row["spread"][0] <= row["tok_per_s"] <= row["spread"][1]
    assert re.search(r"\| tiny \| m2a2-eager \| 1 \| [\d,]+ \(", out), out
    log = next(tmp_path.glob("tiny_m2a2-eager_1gpu_*")) / "log.jsonl"
    config = json.loads(log.read_text().splitlines()[0])["config"]
    assert config["batch_size"] == 4 and config["micro_batch_size"] == 2  # train.py ran the variant asked for
    assert not list(tmp_path.rglob("ckpt.pt"))  # killed after the timed intervals: nothing written


def test_loss_check_micro_batch_splits_agree(tmp_path, small_bins):
    out = run_bench(
        "--shapes=tiny",
        "--variants=m2a2-eager,m4a1-eager",
        f"--check_loss={small_bins}",
        "--steps=20",
        f"--work={tmp_path}",
    )
    curves = json.loads(out.split("curves:", 1)[1])
    (a, b) = curves["m2a2-eager"], curves["m4a1-eager"]
    assert [s for s, _ in a] == [s for s, _ in b] == [10, 20]
    assert all(abs(x - y) < 1e-4 for (_, x), (_, y) in zip(a, b))
    # curves kept, checkpoints not
    assert list(tmp_path.rglob("log.jsonl")) and not list(tmp_path.rglob("ckpt.pt"))


def test_a_failing_variant_gives_a_failed_row_and_the_rest_still_run(tmp_path):
    out = run_bench(
        "--shapes=tiny",
        "--variants=m2a2-eager+n_embd=63,m2a1-eager",
        "--log_every=2",
        "--intervals=1",
        f"--work={tmp_path}",
        "--timeout=120",
    )
    assert "| tiny | m2a2-eager+n_embd=63 | 1 | failed:" in out and re.search(
        r"\| tiny \| m2a1-eager \| 1 \| [\d,]+", out
    )


def test_profile_step_splits_train_py_step_time_by_class(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "bench/profile_step.py",
            "--shape=tiny",
            "--variant=m2a2-eager",
            "--skip=3",
            "--steps=2",
            f"--work={tmp_path}",
            f"--trace={tmp_path / 'trace.json'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    shares = [float(m) for m in re.findall(r"^\| [^|]+ \| [\d.]+ \| ([\d.]+)% \|$", r.stdout, re.M)]
    assert abs(sum(shares) - 100) < 0.5 and re.search(r"^\| matmul \| ", r.stdout, re.M), r.stdout
    assert "2 steps profiled" in r.stdout and (tmp_path / "trace.json").stat().st_size > 0
    assert not list(tmp_path.rglob("ckpt.pt"))  # stopped after the profiled steps, before any checkpoint


def test_loss_step_times_every_loss_and_they_agree(tmp_path):
    """bench/loss_step.py on CPU (a smoke run; its numbers mean something on a GPU only): one row per loss,
    this checkout's CrossEntropy and another checkout's given by --repo, all with the same loss value."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.py").write_text((ROOT / "model.py").read_text())
    r = subprocess.run(
        [
            sys.executable,
            "bench/loss_step.py",
            "--device=cpu",
            "--rows=64",
            "--vocab=300",
            "--repeat=1",
            f"--repo={other}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = re.findall(r"^\| (F\.cross_entropy|CrossEntropy) .*\| ([\d.]+) \|$", r.stdout, re.M)
    assert [name for name, _ in rows] == ["F.cross_entropy", "CrossEntropy", "CrossEntropy"], r.stdout
    assert len({value for _, value in rows}) == 1, r.stdout


def test_lazy_layers_cost_times_the_diagnosis_and_the_solvers_agree():
    r = subprocess.run(
        [
            sys.executable,
            "bench/lazy_layers_cost.py",
            "--shape=gpt2-12x512",
            "--seq_len=48",
            "--solver_seq_len=40",
            "--seqs=1",
            "--device=cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    solvers = re.search(
        r"^\| 40 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| ([\d.e+-]+) \| [\d.]+ \| ([\d.e+-]+) \|$", r.stdout, re.M
    )
    assert solvers, r.stdout
    assert float(solvers[1]) < 1e-5  # float32 singular values: float32 precision relative to the largest
    # eigvalsh of P P^T gives svdvals' singular values (up to float64 squaring)
    assert float(solvers[2]) < 1e-6
    diagnosis = re.search(r"^\| 48 \| 1 \| ([\d.]+) \| ([\d.]+) \|$", r.stdout, re.M)
    assert diagnosis and float(diagnosis[2]) > 0, r.stdout
