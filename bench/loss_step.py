"""The training loss alone: forward + backward time of the loss on a micro-batch's logits, compiled, on one
GPU.

    python bench/loss_step.py --rows 65536 --vocab 50257            # GPT-2 124M at micro-batch 64
    # also another checkout's CrossEntropy
    python bench/loss_step.py --repo /path/to/other/checkout

Rows are tokens (micro-batch x block), the logits are (rows, vocab padded to 64) bf16 as the head produces
them. It times F.cross_entropy on the sliced float32 logits (the plain path) and CrossEntropy (this
checkout's and each --repo's): wall time of forward+backward between two syncs, 3 warm-up and --repeat timed
runs, median. It also prints the GB/s of the minimum traffic (read the logits twice, write their gradient
once) to compare against ~4.3 TB/s."""

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def cross_entropy_of(repo: Path):
    """CrossEntropy from a checkout (its inheritune/losses.py, or its model.py where older checkouts defined
    it), imported from that file under a name of its own."""
    sys.path.insert(0, str(repo))
    path = repo / "inheritune" / "losses.py"
    path = path if path.exists() else repo / "model.py"
    spec = importlib.util.spec_from_file_location(f"losses_{abs(hash(str(repo)))}", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dynamo looks globals up there
    spec.loader.exec_module(module)
    sys.path.remove(str(repo))
    return module.CrossEntropy


def time_ms(fn, logits, targets, repeat):
    sync = torch.cuda.synchronize if logits.is_cuda else (lambda: None)
    times = []
    for i in range(3 + repeat):
        logits.grad = None
        sync()
        start = time.perf_counter()
        fn(logits, targets).backward()
        sync()
        if i >= 3:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(
    rows: int, vocab: int, repeat: int, repos: list[Path], device: str, backend: str = "inductor"
) -> list[tuple[str, float, float]]:
    """(loss, forward+backward ms, loss value) of each loss on the same random bf16 logits, compiled with
    `backend` (inductor: the kernels train.py runs; aot_eager: the same tracing, no kernels generated)."""
    padded = (vocab + 63) // 64 * 64
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(rows, padded, device=device, generator=g).mul(3).bfloat16().requires_grad_()
    targets = torch.randint(0, vocab, (rows,), device=device, generator=g)
    losses = {"F.cross_entropy (sliced, float32)": lambda x, t: F.cross_entropy(x[:, :vocab].float(), t)}
    for repo in [ROOT, *repos]:
        label = "this checkout" if repo == ROOT else str(repo)
        ce = cross_entropy_of(repo.resolve())
        losses[f"CrossEntropy ({label})"] = lambda x, t, ce=ce: ce.apply(x, t, vocab)
    results = []
    for name, fn in losses.items():
        compiled = torch.compile(fn, dynamic=False, backend=backend)
        results.append((name, time_ms(compiled, logits, targets, repeat), compiled(logits, targets).item()))
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=65536)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument(
        "--repo", action="append", default=[], help="another checkout whose model.CrossEntropy to time"
    )
    p.add_argument("--device", default="cuda", help="cpu only checks that the script runs")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device (check CUDA_VISIBLE_DEVICES), or pass --device cpu for a smoke run")
    padded = (args.vocab + 63) // 64 * 64
    bytes_min = 3 * args.rows * padded * 2  # read the bf16 logits twice, write their gradient once
    print(
        f"logits ({args.rows}, {padded}) bf16 = {args.rows * padded * 2 / 1e9:.2f} GB; forward+backward, "
        f"compiled, median of {args.repeat}\n| loss | ms | GB/s of the minimum traffic | loss value |\n"
        "|---|---|---|---|"
    )
    for name, ms, value in measure(
        args.rows, args.vocab, args.repeat, list(map(Path, args.repo)), args.device
    ):
        print(f"| {name} | {ms:.2f} | {bytes_min / ms / 1e6:,.0f} | {value:.5f} |", flush=True)


if __name__ == "__main__":
    main()
