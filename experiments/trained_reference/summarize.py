"""Summarise the trained-reference study (README.md beside this file): the table (mean ± sd over seeds, and
the training FLOPs of each row, the reference's own training counted in for every inherited row), what each
seed's growth loop chose and what deciding on the mean of the seeds (grow_seeds=3) gives, and the val curves
as PNG.

    python experiments/trained_reference/summarize.py --runs out/trained_reference \
        --save experiments/trained_reference/curves.json --png experiments/trained_reference/curves.png
    # no runs
    python experiments/trained_reference/summarize.py --curves experiments/trained_reference/curves.json
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "experiments")]
from study import mean_sd, read_run  # noqa: E402

from growth import score, verdict  # noqa: E402
from inheritune.util import atomic_write, pyplot  # noqa: E402

# label: (its run folders under --runs, one per seed; whether the reference's training is part of its cost)
ROWS = {
    "reference, 12 layers": ("ref12", False),
    "inherited 6 layers (the growth loop's round 1)": ("grow6_s*/round1_6L", True),
    "inherited 6 layers, wpe and ln_f fresh (the published code)": ("paper6_s*", True),
    "random init, 6 layers": ("random6_s*", False),
    "random init, 6 layers, 2x steps": ("random6_2x_s*", False),
}
K = 3  # the growth loop's statistic: the mean of the last 3 val evaluations


def read_growth(runs: Path) -> list[dict]:
    out = []
    for path in sorted(runs.glob("grow6_s*/growth.json")):
        state = json.loads(path.read_text())
        out.append(
            {
                "seed": state["rounds"][0]["runs"][0]["seed"],
                "reference_score": state["reference_score"],
                "statistic": state["statistic"],
                "k": state["k"],
                "tolerance": state["recipe"]["grow_tolerance"],
                "rounds": [
                    {
                        "n_layer": r["n_layer"],
                        "score": r["score"],
                        "margin": r["margin"],
                        "matches": r["matches"],
                    }
                    for r in state["rounds"]
                ],
            }
        )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", help="the study's out folder (run.py's out/trained_reference)")
    src.add_argument("--curves", help="the compact JSON written by --save")
    p.add_argument("--save", help="write the compact JSON here")
    p.add_argument("--png", help="write the val curves here")
    args = p.parse_args()
    if args.runs:
        runs = Path(args.runs)
        rows = {
            label: {"with_reference": with_ref, "runs": [read_run(f) for f in sorted(runs.glob(pattern))]}
            for label, (pattern, with_ref) in ROWS.items()
        }
        study = {"rows": rows, "growth": read_growth(runs)}
    else:
        study = json.loads(Path(args.curves).read_text())
    if args.save:
        text = json.dumps(study, separators=(",", ":"))
        atomic_write(Path(args.save), lambda tmp: Path(tmp).write_text(text))
    print_rows(study["rows"])
    print_growth(study["growth"])
    if args.png:
        plot(study["rows"], args.png)


def print_rows(rows: dict) -> None:
    ref_flops = rows["reference, 12 layers"]["runs"][0]["flops"]
    print("| run | seeds | steps | step-0 val | final val | mean of last 3 | training PFLOPs |")
    print("|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        r = row["runs"]
        flops = r[0]["flops"] + (ref_flops if row["with_reference"] else 0)
        plus = f" ({r[0]['flops'] / 1e15:.0f} + reference)" if row["with_reference"] else ""
        print(
            f"| {label} | {len(r)} | {r[0]['steps']} | {mean_sd([x['curve'][0][1] for x in r], 3)} | "
            f"{mean_sd([x['curve'][-1][1] for x in r])} | {mean_sd([score(x['curve'], K) for x in r])} | "
            f"{flops / 1e15:.0f}{plus} |"
        )
    print()


def print_growth(growth: list) -> None:
    for g in growth:
        tried = ", ".join(
            f"{r['n_layer']}L {r['score']:.4f} ({r['margin']:+.4f}, {'matches' if r['matches'] else 'worse'})"
            for r in g["rounds"]
        )
        chosen = next((r["n_layer"] for r in g["rounds"] if r["matches"]), None)
        print(
            f"growth loop, seed {g['seed']}: reference {g['reference_score']:.4f} ({g['statistic']}, "
            f"k={g['k']}); {tried}; chose {chosen if chosen else 'no depth'}"
        )
    if growth:
        first = [g["rounds"][0]["score"] for g in growth]
        v = verdict(first, growth[0]["reference_score"], growth[0]["tolerance"])
        noise = ", within seed noise" if v["within_noise"] else ", outside seed noise (2 standard errors)"
        print(
            f"deciding on the mean of the {len(first)} seeds (grow_seeds={len(first)}): score "
            f"{v['score']:.4f} ± {v['seed_sd']:.4f}, margin {v['margin']:+.4f}, "
            f"{'matches' if v['matches'] else 'worse'}{noise}"
        )


def plot(rows: dict, png: str) -> None:
    if (plt := pyplot(png)) is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, first_step in zip(axes, (0, 2000)):
        for i, (label, row) in enumerate(rows.items()):
            for j, run in enumerate(row["runs"]):
                steps, vals = zip(*[(s, v) for s, v in run["curve"] if s >= first_step])
                style = {"color": f"C{i}", "alpha": 0.8, "ls": "--" if i == 0 else "-"}
                ax.plot(steps, vals, **style, label=label if j == 0 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("val loss")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(2.1, 4.0)
    axes[1].set_ylim(2.18, 2.42)
    axes[1].set_title("from step 2000")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
