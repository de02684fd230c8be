"""What lazy_layers.py costs on a large reference: the seconds and peak memory of its diagnosis, 7B-shaped by default.

    python bench/lazy_layers_cost.py [--shape llama-7b] [--seq_len 256,1024] [--seqs 8] [--device auto]

The model is built with random weights on the device in float32, as lazy_layers.py loads a reference (no file is
written), and lazy_layers.diagnose runs on --seqs windows of random tokens for each --seq_len. Its time is mostly
the singular values of every head's T x T map, and their solver's work depends on the matrices: random weights
give near-uniform maps, so the solvers are also timed alone on one layer's worth of sharp maps (causal softmax of
N(0, 3^2) logits): torch.linalg.svdvals in float64 (what lazy_layers.py uses) on the device and on the CPU, in
float32 on the device, and eigvalsh of P P^T, whose square roots are the same singular values; the last two with
their largest difference from float64 svdvals, relative to the largest value.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lazy_layers import diagnose, peak_memory_gb  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from runtime import resolve_device  # noqa: E402

SHAPES = {"llama-7b": dict(arch="llama", n_layer=32, n_head=32, n_embd=4096, intermediate_size=11008,
                           vocab_size=32000, block_size=4096),
          "gpt2-12x512": dict(arch="gpt2", n_layer=12, n_head=8, n_embd=512, vocab_size=50257, block_size=1024)}


def timed(fn, device: torch.device):
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="llama-7b", choices=SHAPES)
    p.add_argument("--seq_len", default="256,1024", help="comma-separated window lengths")
    p.add_argument("--seqs", type=int, default=8)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device, cfg = resolve_device(args.device), ModelConfig(**SHAPES[args.shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(cfg).eval()
    print(f"{args.shape}: {model.num_params() / 1e9:.2f}B parameters in float32 on {device}; "
          f"{peak_memory_gb(device):.1f} GB peak so far")
    print("| T | diagnosis s | peak GB | svdvals s (one layer) | on CPU s | float32 s | diff | eigvalsh(P P^T) s "
          "| diff |\n|---|---|---|---|---|---|---|---|---|")
    for T in map(int, args.seq_len.split(",")):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        idx = torch.randint(0, cfg.vocab_size, (args.seqs, T), device=device)
        _, seconds = timed(lambda: diagnose(model, idx, 1e-2, 0.5), device)
        peak = peak_memory_gb(device)
        allowed = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        maps = (torch.randn(cfg.n_head, T, T, dtype=torch.float64, device=device) * 3).masked_fill(
            ~allowed, float("-inf")).softmax(-1)
        s, t_svd = timed(lambda: torch.linalg.svdvals(maps), device)
        on_cpu = maps.cpu()
        _, t_cpu = timed(lambda: torch.linalg.svdvals(on_cpu), device)
        single = maps.float()
        s32, t_32 = timed(lambda: torch.linalg.svdvals(single), device)
        e, t_eig = timed(lambda: torch.linalg.eigvalsh(maps @ maps.mT).flip(-1).clamp(min=0).sqrt(), device)
        diff = lambda other: ((s - other.double()).abs() / s[..., :1]).max().item()  # noqa: E731
        print(f"| {T} | {seconds:.1f} | {peak:.1f} | {t_svd:.2f} | {t_cpu:.2f} | {t_32:.2f} | {diff(s32):.1e} | "
              f"{t_eig:.2f} | {diff(e):.1e} |", flush=True)


if __name__ == "__main__":
    main()
