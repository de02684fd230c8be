"""Table, compact curves and plot of the SmolLM2-135M study (experiments/smollm2/README.md).

    # the runs: eval_NAME.json and NAME/log.jsonl per run
    python experiments/smollm2/plot_smollm2.py out/smollm2
    # again, from the compact copy
    python experiments/smollm2/plot_smollm2.py experiments/smollm2/smollm2_curves.json
From a folder of runs it (re)writes smollm2_curves.json; either way it prints the table and writes
smollm2_study.png next to this script."""

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS = {"inherited 15L": "inherit15_s", "random 15L": "random15_s", "inherited 20L": "inherit20_s"}


# inherit15_s1, _s2, ... (not inherit15_step0)
def members(runs: dict, prefix: str) -> list[tuple[str, dict]]:
    return [(n, r) for n, r in runs.items() if n.startswith(prefix) and n[len(prefix) :].isdigit()]


TASK = "inheritune_next_sentence"


def collect(folder: Path) -> dict:
    """{name: {"val": [[step, loss], ...], "final_val", "acc", "acc_norm", "tok_per_s"}} plus the untrained
    models."""
    runs = {}
    for ev in sorted(folder.glob("eval_*.json")):
        name, d = ev.stem[5:], json.loads(ev.read_text())
        r = {
            "final_val": d["val"]["val_loss"],
            "acc": d["results"][TASK]["acc,none"],
            "acc_norm": d["results"][TASK]["acc_norm,none"],
        }
        log = folder / name / "log.jsonl"
        if log.exists():
            recs = [json.loads(x) for x in log.read_text().splitlines()[1:]]
            r["val"] = [[x["step"], round(x["val_loss"], 4)] for x in recs if "val_loss" in x]
            r["tok_per_s"] = statistics.median(x["tok_per_s"] for x in recs if "tok_per_s" in x)
        runs[name] = r
    return runs


def fmt(values, digits=3):
    return (
        f"{values[0]:.{digits}f}"
        if len(values) == 1
        else f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    )


def main():
    src = Path(sys.argv[1])
    runs = json.loads(src.read_text()) if src.is_file() else collect(src)
    if not src.is_file():
        (HERE / "smollm2_curves.json").write_text(json.dumps(runs, indent=1))
    print(
        "| model | seeds | val loss (step 0) | val loss (final) | next-sentence acc | acc_norm "
        "|\n|---|---|---|---|---|---|"
    )
    ref = runs["reference30"]
    print(
        f"| SmolLM2-135M reference, 30L, untrained here | - | - | {ref['final_val']:.3f} | {ref['acc']:.3f} "
        "| "
        f"{ref['acc_norm']:.3f} |"
    )
    for label, prefix in GROUPS.items():
        group = [r for _, r in members(runs, prefix)]
        step0 = runs.get(prefix.replace("_s", "_step0"))
        print(
            f"| {label}, 1000 steps | {len(group)} | {fmt([r['val'][0][1] for r in group])} | "
            f"{fmt([r['final_val'] for r in group])} | {fmt([r['acc'] for r in group])} | "
            f"{fmt([r['acc_norm'] for r in group])} |"
        )
        if step0:
            print(
                f"| {label}, step 0 (no training) | - | {step0['final_val']:.3f} | - | {step0['acc']:.3f} | "
                f"{step0['acc_norm']:.3f} |"
            )
    for label, prefix in GROUPS.items():
        rates = [r["tok_per_s"] for _, r in members(runs, prefix)]
        print(f"{label}: median {statistics.median(rates):,.0f} tok/s per run")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, prefix), color in zip(GROUPS.items(), ("C0", "C3", "C2")):
        for i, (_, r) in enumerate(members(runs, prefix)):
            pts = [p for p in r["val"] if p[0] > 0]
            ax.plot(*zip(*pts), "o-", color=color, markersize=3, alpha=0.8, label=label if i == 0 else None)
    ax.axhline(ref["final_val"], color="k", linestyle="--", label="reference 30L (untrained here)")
    ax.set_xlabel("step (32K tokens each)")
    ax.set_ylabel("val loss")
    ax.set_title("SmolLM2-135M: inherited vs random init, ~24M-token offline corpus")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "smollm2_study.png", dpi=120)


if __name__ == "__main__":
    main()
