"""Which layers to inherit: where a reference's attention goes lazy (the paper's attention-degeneration
analysis).

    python lazy_layers.py --ref REF --data DATA --out DIR [--seqs 8] [--seq_len 256] [--device cuda]

REF is anything weights.load_model reads; DATA is a folder of token bins from prepare_owt.py (its val split is
read) or a text file, tokenised with the reference's tokenizer. On --seqs windows of --seq_len tokens spread
evenly over the data, every layer's causal attention probabilities are formed explicitly from the model's own
queries and keys, one sequence and one layer at a time (memory: one heads x T x T map), and for each head:
- rank: the numerical rank of the T x T attention matrix, singular values above --rank_tol times the largest;
- rank_90: the paper's measure, the fewest singular values that hold 90% of their squared sum;
- mass: the dominant single-column share, the largest part of the matrix's total attention (T, one per query)
  that one key position receives: 1 when every query looks only at the same token, ~1/T for attention to
  oneself.
Each is averaged over the sequences, and per layer summarised as the paper does (max over heads) and as the
mean. From the residual stream x_l that layer l reads and x_l+1 that it writes (before the final norm), mean
over every token and sequence:
- block_influence: ShortGPT's 1 - cos(x_l, x_l+1) (arXiv 2403.03853): near 0, the layer changes little;
- angular_distance: arccos(cos(x_l, x_l+1)) / pi; and between any two streams, for Gromov et al.'s rule (arXiv
  2403.17887): to drop n layers, drop the block l .. l+n-1 whose x_l and x_l+n are closest. The report names
  that block for the n layers the suggested depth leaves out (all tokens are averaged, not the last only).

A layer is lazy when its heads put on average at least --lazy_mass of their attention on one key. The
suggested starting depth for the growth loop is the number of layers before the first lazy one: the paper's
reading is that the early layers carry what is worth inheriting, and the loop then grows from there while the
reference is not matched. Writes DIR/lazy_layers.json (every number, the settings, the reference's identity)
and DIR/lazy_layers.png (layers x heads heatmaps and the per-layer curves), and prints the table."""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inheritune.runtime import resolve_device
from inheritune.util import UserError, atomic_write, check_can_create, cli, pyplot
from layer_scores import diagnose, load_sequences
from weights import checkpoint_identity, load_model, open_weights


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: the GPU's allocations, or on a CPU the process's peak RSS (Linux counts it in KiB,
    macOS in bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e9
    )


def report_table(report: dict) -> str:
    T = report["settings"]["seq_len"]
    lines = [
        f"| layer | rank max (of {T}) | rank mean | rank_90 max | mass max | mass mean | lazy | block "
        "influence | angular distance |",
        "|---" * 9 + "|",
    ]
    for e in report["layers"]:
        lines.append(
            f"| {e['layer']} | {e['rank_max']:.1f} | {e['rank_mean']:.1f} | {e['rank_90_max']:.1f} | "
            f"{e['mass_max']:.3f} | {e['mass_mean']:.3f} | {'lazy' if e['lazy'] else ''} | "
            f"{e['block_influence']:.4f} | {e['angular_distance']:.4f} |"
        )
    lines.append(f"suggested starting depth: {report['suggested_depth']} ({report['rule']})")
    if g := report["gromov"]:
        lines.append(
            f"Gromov et al.'s {g['drop']} layers to drop at that depth: {g['layers'][0]}-{g['layers'][-1]} "
            f"(angular distance {g['distance']:.4f} between their input and output)"
        )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    if (plt := pyplot(path)) is None:
        return
    layers, T = report["layers"], report["settings"]["seq_len"]
    fig, axes = plt.subplots(2, 3, figsize=(18, 8))
    for col, (key, title, scale) in enumerate(
        (("rank", f"rank / {T}", T), ("mass", "dominant-column mass", 1))
    ):
        grid = np.array([e["heads"][key] for e in layers]).T / scale
        image = axes[0, col].imshow(grid, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis")
        axes[0, col].set(title=f"{title}, per head", xlabel="layer", ylabel="head")
        fig.colorbar(image, ax=axes[0, col])
        for how, style in (("max", "o-"), ("mean", "s--")):
            axes[1, col].plot(
                [e[f"{key}_{how}"] / scale for e in layers], style, label=f"{how} over heads", ms=3
            )
        axes[1, col].axvline(report["suggested_depth"] - 0.5, color="k", ls=":", label="suggested depth")
        axes[1, col].set(xlabel="layer", ylabel=title, ylim=(0, 1.05))
        axes[1, col].legend()
        axes[1, col].grid(alpha=0.3)
    plot_streams(report, axes[:, 2], fig)
    fig.suptitle(
        f"{Path(report['reference']['path']).name}: {len(layers)} layers, "
        f"{report['settings']['seqs']} sequences of {T}"
    )
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_streams(report: dict, axes, fig) -> None:
    """The residual-stream scores: every pair's angular distance, and each layer's block influence and
    angular distance (with Gromov et al.'s block to drop, if the suggested depth leaves layers out)."""
    pairs = np.array(report["angular_distances"])
    image = axes[0].imshow(pairs, origin="lower", cmap="viridis")
    axes[0].set(title="angular distance between streams x_i, x_j", xlabel="j", ylabel="i")
    fig.colorbar(image, ax=axes[0])
    for key, style in (("block_influence", "o-"), ("angular_distance", "s--")):
        axes[1].plot([e[key] for e in report["layers"]], style, label=key.replace("_", " "), ms=3)
    if g := report["gromov"]:
        axes[1].axvspan(
            g["layers"][0] - 0.5, g["layers"][-1] + 0.5, alpha=0.15, color="k", label="Gromov drop"
        )
    axes[1].set(xlabel="layer", ylabel="1 - cos, arccos(cos) / pi")
    axes[1].legend()
    axes[1].grid(alpha=0.3)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="project .pt, run or HF folder, hub name, or .gguf")
    p.add_argument("--data", required=True, help="token bins folder (its val split) or a text file")
    p.add_argument("--out", required=True, help="folder for lazy_layers.json and lazy_layers.png")
    p.add_argument(
        "--tokenizer", help="override the reference's tokenizer (gpt2, tokenizer.json, folder, .gguf)"
    )
    p.add_argument("--seqs", type=int, default=8, help="sequences, spread evenly over the data")
    p.add_argument("--seq_len", type=int, default=256, help="tokens per sequence (T)")
    p.add_argument(
        "--rank_tol", type=float, default=1e-2, help="singular values above this x the largest count"
    )
    p.add_argument(
        "--lazy_mass", type=float, default=0.5, help="mean single-key mass from which a layer is lazy"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    args = p.parse_args(argv)
    if args.seqs < 1 or args.seq_len < 2 or not 1e-6 <= args.rank_tol < 1 or not 0 < args.lazy_mass <= 1:
        raise UserError(
            "--seqs must be >= 1, --seq_len >= 2, --rank_tol in [1e-6, 1) and --lazy_mass in (0, 1]"
        )
    check_can_create(args.out)
    if (Path(args.out) / "lazy_layers.json").exists() and not args.overwrite:
        raise UserError(
            f"--out {args.out} holds a report already; choose another folder, or pass --overwrite"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    out, device = Path(args.out), resolve_device(args.device)
    reference = open_weights(args.ref)  # opened once: its weights, tokenizer and identity
    model = load_model(reference, device=device)
    if args.seq_len > model.config.block_size:
        raise UserError(
            f"--seq_len {args.seq_len} is longer than the reference's context of {model.config.block_size} "
            f"tokens"
        )
    shape = model.config.vocab_size, args.seqs, args.seq_len
    sequences = load_sequences(args.data, reference, args.tokenizer, *shape)
    started = time.perf_counter()
    found = diagnose(model, sequences.to(device), args.rank_tol, args.lazy_mass)
    peak = peak_memory_gb(device)  # the model included; the time below is without its loading
    cost = {
        "seconds": round(time.perf_counter() - started, 1),
        f"peak_{device.type}_memory_gb": round(peak, 2),
    }
    settings = {
        k: getattr(args, k) for k in ("data", "tokenizer", "seqs", "seq_len", "rank_tol", "lazy_mass")
    }
    report = {
        "reference": checkpoint_identity(reference.path) | {"path": args.ref},  # the path as given: portable
        "config": model.config.to_dict(),
        "settings": settings | {"device": str(device), "dtype": "float32"},
        "cost": cost,
        **found,
    }
    atomic_write(out / "lazy_layers.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    plot(report, out / "lazy_layers.png")
    print(report_table(report))
    print(f"diagnosis: {cost['seconds']:.1f} s; peak {device.type} memory {peak:.2f} GB")
    print(f"wrote {out / 'lazy_layers.json'} and {out / 'lazy_layers.png'}")


if __name__ == "__main__":
    cli(main)
