"""Summarise the GPT-2 offline-English study (experiments/offline_gpt2/README.md): a table (mean ± sd over
seeds), val curves as PNG, and the compact val curves as JSON, so the study can be re-analysed without its
runs.

    python experiments/offline_gpt2/plot_offline.py --runs RUNS.json \
        --png experiments/offline_gpt2/offline_gpt2.png \
        --save experiments/offline_gpt2/offline_gpt2_curves.json
    python experiments/offline_gpt2/plot_offline.py --runs experiments/offline_gpt2/offline_gpt2_curves.json \
        --png /tmp/offline_gpt2.png    # again, from the compact copy
RUNS.json: {"groups": {label: [log.jsonl paths]}, "reference": {label: log.jsonl path}} (written by hand per
study), or the compact JSON this script writes with --save (then logs are not needed). """

import argparse
import json
import statistics
from pathlib import Path


def val_curve(log_path):
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines()][1:]
    return [[r["step"], r["val_loss"]] for r in records if "val_loss" in r]


def summary(curves, k=3):
    finals = [c[-1][1] for c in curves]
    means = [statistics.mean(v for _, v in c[-k:]) for c in curves]

    def sd(xs):
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    return (
        f"{statistics.mean(finals):.4f} ± {sd(finals):.4f}",
        f"{statistics.mean(means):.4f} ± {sd(means):.4f}",
        f"{statistics.mean(c[0][1] for c in curves):.3f}",
        len(curves),
        curves[0][-1][0],
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", required=True)
    p.add_argument("--png", required=True)
    p.add_argument("--save", help="write the compact curves here")
    args = p.parse_args()
    spec = json.loads(Path(args.runs).read_text())
    groups = {
        label: [c if isinstance(c, list) else val_curve(c) for c in paths]
        for label, paths in spec["groups"].items()
    }
    if args.save:
        Path(args.save).write_text(json.dumps({"groups": groups}, indent=None))
    print("| run | seeds | steps | step-0 val | final val (mean ± sd) | mean of last 3 evals |")
    print("|---|---|---|---|---|---|")
    for label, curves in groups.items():
        final, mean_k, step0, n, steps = summary(curves)
        print(f"| {label} | {n} | {steps} | {step0} | {final} | {mean_k} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({label.split(":")[0] for label in groups})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for i, (label, curves) in enumerate((g, c) for g, c in groups.items() if g.split(":")[0] == panel):
            for j, c in enumerate(curves):
                ax.plot(*zip(*c), color=f"C{i}", alpha=0.8, label=label.split(":", 1)[1] if j == 0 else None)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylabel("val loss")
        ax.set_ylim(2.0, 4.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
