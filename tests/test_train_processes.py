"""train.py as processes: bit-identical resume after SIGKILL, torchrun restarting a killed rank, SIGTERM and
Ctrl-C, one run per folder, and a bad input reported once under torchrun. (DDP ranks against one process:
tests/test_train_ddp.py.)"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    FP8_ON_CPU,
    PLAIN,
    ROOT,
    TINY,
    assert_same_updates,
    run_log,
    run_train,
    train_here,
    wait_for,
    without_timing,
)
from inheritune.runs import RunLock
from inheritune.util import UserError


# killed once step 10 is logged: enough steps after it that the kill lands before the end
@pytest.mark.parametrize(
    "path,steps,batch,distil",
    [(PLAIN, 60, 8, False), (FP8_ON_CPU, 14, 4, False), (PLAIN, 40, 8, True)],
    ids=["plain", "fp8", "distilling"],
)
def test_sigkill_then_resume_is_bit_identical(small_bins, reference, tmp_path, path, steps, batch, distil):
    common = [*TINY, f"--data_dir={small_bins}", f"--max_iters={steps}", f"--batch_size={batch}"]
    common += ["--checkpoint_interval=7"]
    common += ["--kd_ratio=0.7", "--kd_temperature=1.5", f"--teacher={reference}"] if distil else []
    run_train(*common, f"--out_dir={tmp_path / 'straight'}", path=path)
    proc = run_train(
        *common, f"--out_dir={tmp_path / 'killed'}", background=tmp_path / "killed.txt", path=path
    )
    ckpt, log = tmp_path / "killed" / "ckpt.pt", tmp_path / "killed" / "log.jsonl"
    wait_for(
        lambda: ckpt.exists() and log.exists() and '"step": 10,' in log.read_text(), proc, 120, "step 10"
    )
    proc.send_signal(signal.SIGKILL)  # after the step-7 checkpoint, before the last
    proc.wait()
    assert 7 <= torch.load(ckpt, weights_only=True)["step"] < steps
    stale = tmp_path / "killed" / ".ckpt.pt.x1y2z3.tmp"  # what a kill in the middle of a save leaves behind
    stale.write_bytes(b"partial")
    run_train(*common, f"--out_dir={tmp_path / 'killed'}", path=path)  # the same command again: it continues
    assert not stale.exists()
    a, b = (
        torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True),
        torch.load(ckpt, weights_only=True),
    )
    assert a["step"] == b["step"] == steps
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert without_timing(run_log(tmp_path / "straight")[1]) == without_timing(
        run_log(tmp_path / "killed")[1]
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
    train_here(*common, f"--out_dir={tmp_path / 'straight'}")  # one process: the same run (test above)
    env = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    output = tmp_path / "killed.txt"
    proc = run_train(
        *common, f"--out_dir={tmp_path / 'killed'}", torchrun=3, restarts=1, env=env, background=output
    )
    log = tmp_path / "killed" / "log.jsonl"
    wait_for(lambda: log.exists() and '"step": 15,' in log.read_text(), proc, 120, "step 15")
    os.kill(torchrun_worker(proc.pid, local_rank=1), signal.SIGKILL)  # after the step-14 checkpoint
    assert proc.wait(timeout=300) == 0, output.read_text()[-3000:]
    assert "holds this command's run at step 14: continuing it" in output.read_text()
    assert re.search(r"resume: .* steps [1-9]\d* -> 40", output.read_text())  # continued, not started over
    a = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "ckpt.pt", weights_only=True)
    assert a["step"] == b["step"] == 40
    # not bit-identical: the uninterrupted run is one process, and DDP regroups its gradient buckets after a
    # (re)start's first step, which changes the order in which the ranks' gradients are summed, and the
    # pending train loss resumes as the ranks' float32 mean
    assert_same_updates(common, tmp_path / "straight", tmp_path / "killed")
    straight = without_timing(run_log(tmp_path / "straight")[1])
    killed = without_timing(run_log(tmp_path / "killed")[1])
    assert [r["step"] for r in straight] == [r["step"] for r in killed]
    for x, y in zip(straight, killed):
        assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], rel=1e-4) for k in x), (x, y)


def test_torchrun_restarts_refused_on_the_shared_store(small_bins, tmp_path):
    env = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "0"}
    r = run_train(
        *TINY,
        f"--data_dir={small_bins}",
        f"--out_dir={tmp_path}",
        torchrun=2,
        restarts=1,
        check=False,
        env=env,
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
    wait_for(lambda: (out / "log.jsonl").exists(), proc, 60, "the run's start")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    output = (tmp_path / "out.txt").read_text()
    assert (
        proc.returncode == 143
        and "SIGTERM at step" in output
        and "rerun the same command to continue" in output
    ), output
    assert 0 < torch.load(out / "ckpt.pt", weights_only=True)["step"] < 100000


def test_one_run_per_folder_ctrl_c_checkpoints_and_a_killed_runs_lock_dies_with_it(small_bins, tmp_path):
    out = tmp_path / "run"
    args = *TINY, f"--data_dir={small_bins}", "--max_iters=100000", "--checkpoint_interval=100000"
    args += (f"--out_dir={out}",)
    first = run_train(*args, background=tmp_path / "first.txt")
    wait_for(lambda: (out / "log.jsonl").exists(), first, 60, "the run's start")
    in_use = f"out_dir {out} is in use by another train.py run (pid {first.pid}): wait for it to end"
    with pytest.raises(UserError, match=re.escape(in_use)):
        train_here(*args)
    ranks = run_train(
        *args, torchrun=2, check=False
    )  # under torchrun, rank 0 takes the lock and names its holder
    assert ranks.returncode != 0 and (ranks.stdout + ranks.stderr).count(in_use) == 2, ranks.stderr
    first.send_signal(signal.SIGINT)
    first.wait(timeout=60)
    output = (tmp_path / "first.txt").read_text()
    step = torch.load(out / "ckpt.pt", weights_only=True)["step"]
    stopped = f"interrupted (Ctrl-C) at step {step}: checkpoint in {out / 'ckpt.pt'}; rerun the same command"
    assert first.returncode == 130 and stopped in output and "Traceback" not in output, output
    assert not (out / ".lock").exists()
    second = run_train(*args, background=tmp_path / "second.txt")  # the same command continues the run
    continuing = f"holds this command's run at step {step}: continuing it"
    wait_for(lambda: continuing in (tmp_path / "second.txt").read_text(), second, 60, "the rerun's start")
    second.kill()
    second.wait(timeout=60)
    assert (
        out / ".lock"
    ).exists()  # left behind by SIGKILL, and locking nothing: the kernel dropped the lock
    lock = RunLock(out)
    assert lock.take() is None
    lock.release()


@pytest.mark.skipif((ROOT / "out" / "gpt2_large" / "ckpt.pt").exists(), reason="the reference exists here")
def test_error_untrained_reference_is_named_by_rank_0_and_again_last_in_torchruns_summary(
    small_bins, tmp_path
):
    r = run_train(
        ROOT / "config" / "gpt2_large_inherit18.py",
        f"--data_dir={small_bins}",
        "--device=cpu",
        "--compile=False",
        f"--out_dir={tmp_path / 'x'}",
        torchrun=2,
        check=False,
    )
    line = "error: reference ref=out/gpt2_large/ckpt.pt does not exist: train it first (torchrun "
    line += "--nproc_per_node=N train.py config/gpt2_large.py writes it)"
    output = r.stdout + r.stderr
    assert r.returncode != 0 and output.count(line) == 2, output  # rank 0's line; the other rank says nothing
    summary = r.stderr[r.stderr.index("Root Cause") :]  # torchrun's summary, printed last, shows it again
    assert "rank      : 0" in summary and f"traceback : {line}" in summary, summary
    assert not (tmp_path / "x").exists()
