"""What lazy_layers.py costs on a large reference: the seconds and peak memory of its diagnosis, 7B-shaped by
default.

    python bench/lazy_layers_cost.py [--shape llama-7b] [--seq_len 256,1024] [--solver_seq_len 256,1024] \
        [--seqs 8]

The model is built with random weights on the device in float32, as lazy_layers.py loads a reference (no file
is written), and layer_scores.diagnose runs on --seqs windows of random tokens for each --seq_len. Its time is
mostly the singular values of every head's T x T map, and their solver's work depends on the matrices: random
weights give near-uniform maps, so the solvers are also timed alone on one layer's worth of sharp maps (causal
softmax of N(0, 3^2) logits): torch.linalg.svdvals in float64 on the device and on the CPU, in float32 on the
device, and eigvalsh of P P^T in float64 (what lazy_layers.py uses), whose square roots are the same singular
values; the last two with their largest difference from float64 svdvals, relative to the largest value.
Measured: experiments/lazy_layers/cost_llama7b.md."""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from inheritune.runtime import resolve_device  # noqa: E402
from layer_scores import diagnose, squared_singular_values  # noqa: E402
from lazy_layers import peak_memory_gb  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402

SHAPES = {
    "llama-7b": dict(
        arch="llama",
        n_layer=32,
        n_head=32,
        n_embd=4096,
        intermediate_size=11008,
        vocab_size=32000,
        block_size=4096,
    ),
    "gpt2-12x512": dict(arch="gpt2", n_layer=12, n_head=8, n_embd=512, vocab_size=50257, block_size=1024),
}


def timed(fn, device: torch.device):
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def time_solvers(n_head: int, T: int, device: torch.device) -> tuple[dict, dict]:
    """One layer's worth of sharp maps through each solver (each called once before, to leave setup out):
    (seconds by solver, largest difference from float64 svdvals relative to the largest singular value)."""
    allowed = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    logits = torch.randn(n_head, T, T, dtype=torch.float64, device=device) * 3
    maps = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    on_cpu, single = maps.cpu(), maps.float()
    solvers = {
        "svdvals": lambda: torch.linalg.svdvals(maps),
        "on CPU": lambda: torch.linalg.svdvals(on_cpu),
        "float32": lambda: torch.linalg.svdvals(single),
        "eigvalsh": lambda: squared_singular_values(maps).sqrt(),
    }
    values, seconds = {}, {}
    for name, solve in solvers.items():
        timed(lambda solve=solve: solve()[..., :1], device)
        values[name], seconds[name] = timed(solve, device)
    s = values["svdvals"]
    return seconds, {name: ((s - v.to(s)).abs() / s[..., :1]).max().item() for name, v in values.items()}


def time_diagnosis(model: GPT, T: int, seqs: int, device: torch.device) -> tuple[float, float]:
    """(seconds, peak GB) of layer_scores.diagnose on `seqs` windows of T random tokens."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    idx = torch.randint(0, model.config.vocab_size, (seqs, T), device=device)
    _, seconds = timed(lambda: diagnose(model, idx, 1e-2, 0.5), device)
    return seconds, peak_memory_gb(device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="llama-7b", choices=SHAPES)
    p.add_argument("--seq_len", default="256,1024", help="comma-separated window lengths of the diagnosis")
    p.add_argument(
        "--solver_seq_len", default="256,1024", help="comma-separated map sizes to time the solvers at"
    )
    p.add_argument("--seqs", type=int, default=8)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device, cfg = resolve_device(args.device), ModelConfig(**SHAPES[args.shape])
    torch.manual_seed(0)
    print(
        f"solvers on one layer's maps ({cfg.n_head} heads), seconds, and the largest difference from float64 "
        f"svdvals relative to the largest singular value:\n| T | svdvals float64 | on CPU | float32 | diff | "
        f"eigvalsh(P P^T) | diff |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    for T in map(int, filter(None, args.solver_seq_len.split(","))):
        s, diff = time_solvers(cfg.n_head, T, device)
        print(
            f"| {T} | {s['svdvals']:.2f} | {s['on CPU']:.2f} | {s['float32']:.2f} | {diff['float32']:.1e} | "
            f"{s['eigvalsh']:.2f} | {diff['eigvalsh']:.1e} |",
            flush=True,
        )
    with torch.device(device):
        model = GPT(cfg).eval()
    print(
        f"\n{args.shape}: {model.num_params() / 1e9:.2f}B parameters in float32 on {device}; "
        f"{peak_memory_gb(device):.1f} GB peak so far\n| T | sequences | diagnosis s | peak GB |\n"
        "|---|---|---|---|",
        flush=True,
    )
    for T in map(int, filter(None, args.seq_len.split(","))):
        seconds, peak = time_diagnosis(model, T, args.seqs, device)
        print(f"| {T} | {args.seqs} | {seconds:.1f} | {peak:.1f} |", flush=True)


if __name__ == "__main__":
    main()
