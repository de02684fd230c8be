"""Does this checkout compute what another one does? Logits (float32 and bf16 autocast) and bf16 gradients of
a GPT-2 and a LLaMA model, built from the same seed by each checkout's model.py, compared exactly; with
--families, also each LLaMA-shaped family's loss eager against torch.compile on this checkout (features
switched on).

    python bench/same_numbers.py --repo /path/to/other/checkout [--device cuda] [--families]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "gpt2": dict(n_layer=4, n_head=12, n_embd=768),
    "llama": dict(n_layer=4, n_head=16, n_kv_head=4, n_embd=1024, rope_theta=5e5),
}
FAMILIES = {
    "qwen3": dict(head_dim=128),
    "mistral": dict(sliding_window=128),
    "qwen2": {},
    "llama": dict(
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    ),
}


def numbers(device: str) -> dict:
    """Run inside one checkout (sys.path set by the caller): every number we compare, on the CPU
    afterwards."""
    from model import GPT, ModelConfig

    x = torch.randint(0, 50000, (4, 512), generator=torch.Generator().manual_seed(0)).to(device)
    out = {}
    for arch, shape in SHAPES.items():
        torch.manual_seed(0)
        model = GPT(ModelConfig(arch=arch, vocab_size=50257, block_size=1024, **shape)).to(device)
        with torch.no_grad():
            out[f"{arch} logits float32"] = model(x).cpu()
            with torch.autocast(device, torch.bfloat16):
                out[f"{arch} logits bf16"] = model(x).float().cpu()
        with torch.autocast(device, torch.bfloat16):
            model(x, torch.roll(x, -1, 1)).backward()
        for name, p in model.named_parameters():
            out[f"{arch} grad bf16 {name}"] = p.grad.float().cpu()
    return out


def families(device: str) -> None:
    from model import GPT, ModelConfig

    x = torch.randint(0, 50000, (4, 512), generator=torch.Generator().manual_seed(0)).to(device)
    for arch, features in FAMILIES.items():
        torch.manual_seed(0)
        model = GPT(
            ModelConfig(
                arch=arch,
                n_layer=4,
                n_head=16,
                n_kv_head=4,
                n_embd=1024,
                vocab_size=50257,
                block_size=1024,
                **features,
            )
        ).to(device)
        with torch.autocast(device, torch.bfloat16):
            eager, compiled = (
                model(x, torch.roll(x, -1, 1)).item(),
                torch.compile(model)(x, torch.roll(x, -1, 1)),
            )
        compiled.backward()
        finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters())
        print(
            f"{arch} {features}: loss eager {eager:.5f}, compiled {compiled.item():.5f}, gradients finite: "
            f"{finite}"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", help="the other checkout")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--families", action="store_true")
    p.add_argument("--dump", help=argparse.SUPPRESS)  # internal: write this checkout's numbers here
    args = p.parse_args()
    if args.dump:
        torch.save(numbers(args.device), args.dump)
        return
    if args.families:
        sys.path.insert(0, str(ROOT))
        families(args.device)
    if args.repo:
        with tempfile.TemporaryDirectory() as tmp:
            results = []
            # each checkout in its own process, its own model.py
            for repo in (Path(args.repo).resolve(), ROOT):
                dump = Path(tmp) / f"{len(results)}.pt"
                subprocess.run(
                    [sys.executable, __file__, "--dump", str(dump), "--device", args.device],
                    check=True,
                    env={**os.environ, "PYTHONPATH": str(repo)},
                )
                results.append(torch.load(dump, weights_only=True))
        other, this = results
        for group in sorted({" ".join(k.split()[:3]) for k in this}):
            keys = [k for k in this if k.startswith(group)]
            diff = max((this[k] - other[k]).abs().max().item() for k in keys)
            print(
                f"{group}: {'identical' if diff == 0 else f'max |difference| {diff:.3g}'} ({len(keys)} "
                "tensors)"
            )


if __name__ == "__main__":
    main()
