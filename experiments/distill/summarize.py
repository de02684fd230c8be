"""Summarise the distillation study (README.md beside this file): per row, the mean ± sd over seeds of the
final val loss (plain cross-entropy, the growth loop's statistic), the mean of the last 3, the KL to the
teacher on the same val windows, and the FLOPs: the student's training (6N + attention per token), the
teacher's forward passes (a third of its own training FLOPs per token) when distilling, and the reference's
training for every row that needs the reference.

    python experiments/distill/summarize.py --runs out/distill --save experiments/distill/curves.json
    python experiments/distill/summarize.py --curves experiments/distill/curves.json   # no runs
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "experiments")]
from study import mean_sd, read_run  # noqa: E402

from growth import score  # noqa: E402
from inheritune.util import atomic_write  # noqa: E402

# label: (run folders under --runs, one per seed; whether the row needs the reference: inherits or distils)
ROWS = {
    "reference, 12 layers": ("ref12", False),
    "inherited 6 layers": ("inherit6_kd0_s*", True),
    "inherited 6 layers, kd_ratio 0.5": ("inherit6_kd0.5_s*", True),
    "inherited 6 layers, kd_ratio 1": ("inherit6_kd1_s*", True),
    "random init, 6 layers": ("random6_kd0_s*", False),
    "random init, 6 layers, kd_ratio 1": ("random6_kd1_s*", True),
}
K = 3  # the growth loop's statistic: the mean of the last 3 val evaluations


def print_rows(rows: dict) -> None:
    ref = rows["reference, 12 layers"]["runs"][0]
    ref_flops, teacher_per_token = ref["flops_per_token"] * ref["tokens"], ref["flops_per_token"] / 3
    print("| run | seeds | final val | mean of last 3 | final KL to the teacher | PFLOPs: student + teacher "
          "forward (+ reference) |\n|---|---|---|---|---|---|")  # fmt: skip
    for label, row in rows.items():
        r = row["runs"]
        if not r:
            print(f"| {label} | 0 | not run | | | |")
            continue
        student = r[0]["flops_per_token"] * r[0]["tokens"]
        teacher = teacher_per_token * r[0]["tokens"] if r[0]["kd_ratio"] else 0
        total = student + teacher + (ref_flops if row["with_reference"] else 0)
        parts = f"{student / 1e15:.0f} + {teacher / 1e15:.0f}"
        parts += f" + {ref_flops / 1e15:.0f}" if row["with_reference"] else ""
        finals, kls = [x["curve"][-1][1] for x in r], [x["kl"][-1][1] for x in r if x["kl"]]
        print(
            f"| {label} | {len(r)} | {mean_sd(finals)} | {mean_sd([score(x['curve'], K) for x in r])} | "
            f"{mean_sd(kls)} | {total / 1e15:.0f} ({parts}) |"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", help="the study's out folder (run.py's out/distill)")
    src.add_argument("--curves", help="the compact JSON written by --save")
    p.add_argument("--save", help="write the compact JSON here")
    args = p.parse_args()
    if args.runs:
        runs = Path(args.runs)
        rows = {
            label: {"with_reference": with_ref, "runs": [read_run(f) for f in sorted(runs.glob(pattern))]}
            for label, (pattern, with_ref) in ROWS.items()
        }
    else:
        rows = json.loads(Path(args.curves).read_text())
    if args.save:
        text = json.dumps(rows, separators=(",", ":"))
        atomic_write(Path(args.save), lambda tmp: Path(tmp).write_text(text))
    print_rows(rows)


if __name__ == "__main__":
    main()
