"""train.py under torchrun: 2 and 3 DDP ranks learn what one process learns (plain, float8, and distilling
with a float8 student). A file of its own so that make test's two workers share the process tests."""

import pytest

from conftest import FP8_ON_CPU, PLAIN, TINY, assert_same_updates, run_log, run_train


# 3 ranks: the paper's, and the card's, GPU count; 2 ranks through the float8 path (slow on a CPU: 6 steps)
@pytest.mark.parametrize(
    "ranks,batch_size,steps,path,distil",
    [(3, 12, 10, PLAIN, False), (2, 8, 6, FP8_ON_CPU, False), (2, 8, 6, FP8_ON_CPU, True)],
    ids=["3", "2-fp8", "2-fp8-distilling"],  # distilling: a bf16 teacher beside a float8 student
)
def test_one_process_and_ddp_ranks_agree(
    small_bins, reference, tmp_path, ranks, batch_size, steps, path, distil
):
    # bias=False: GPT-2's key bias has an exactly zero gradient (softmax ignores a shift shared by every key),
    # so Adam steps it by pure rounding noise, which no tolerance derived from float32 bounds. fp8: each
    # micro-batch's float8 scales are its own whichever rank runs it; only the gradients' summation order
    # differs
    common = [
        *TINY,
        f"--data_dir={small_bins}",
        f"--max_iters={steps}",
        f"--batch_size={batch_size}",
        "--bias=False",
    ]
    common += ["--kd_ratio=0.5", "--kd_temperature=2", f"--teacher={reference}"] if distil else []
    run_train(*common, f"--out_dir={tmp_path / 'one'}", path=path)
    ddp = run_train(*common, f"--out_dir={tmp_path / 'two'}", torchrun=ranks, path=path)
    cfg1, log1 = run_log(tmp_path / "one")
    cfg2, log2 = run_log(tmp_path / "two")
    assert cfg1["batch_size"] == cfg2["batch_size"] == batch_size  # the global batch does not depend on world
    assert (
        f"{batch_size} x 32 tokens/step = {ranks} ranks x 2 x {batch_size // (2 * ranks)} accum" in ddp.stdout
    )
    assert [r["step"] for r in log1] == [r["step"] for r in log2]
    for a, b in zip(log1, log2):  # losses of near-equal weights: agree to ~1e-7 relative, 1e-4 leaves room
        for key in ("train_loss", "val_loss", "ce_loss", "kd_loss", "val_kl"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (a, b)
    assert_same_updates([*common, *path["args"]], tmp_path / "one", tmp_path / "two")
