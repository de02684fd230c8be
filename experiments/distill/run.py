"""Every run of the distillation study (README.md beside this file), several at a time on one GPU (small
models leave most of it idle; --jobs 1 runs them one by one).

    python experiments/distill/run.py [--jobs 5] [--seeds 1,2,3] [--only NAME,...] [--set key=value ...]

Each job is a plain train.py command, printed when it starts, its output in out/distill/logs/NAME.txt.
Rerunning after an interruption continues every run from its checkpoint. --set adds a train.py override
to every run (a smoke test on a CPU: --set n_embd=64 --set max_iters=20 ...); --only runs the named jobs or
groups (a name without its last _suffix: --only inherit6_kd1 runs its three seeds), taking what they wait for
as done."""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from jobs import pick, run_jobs  # noqa: E402

CONFIG, OUT = "experiments/distill/config", "out/distill"
REFERENCE = f"{OUT}/ref12/ckpt.pt"
# (row, config, kd_ratio): the inherited student and random init, without and with distillation
ROWS = [("inherit6", "inherit6", r) for r in (0, 0.5, 1)] + [("random6", "random6", r) for r in (0, 1)]


def jobs(seeds: list[int], overrides: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(name, command, names it waits for), in priority order: the reference and the runs that need nothing
    from it first."""
    out = [("ref12", [sys.executable, "train.py", f"{CONFIG}/ref12.py", *overrides], [])]
    for row, config, ratio in sorted(ROWS, key=lambda r: r[0] != "random6" or r[2] != 0):
        for s in seeds:
            name = f"{row}_kd{ratio:g}_s{s}"
            args = [f"{CONFIG}/{config}.py", f"--seed={s}", f"--out_dir={OUT}/{name}"]
            if ratio and row == "random6":  # the inherited rows' teacher is their ref already
                args.append(f"--teacher={REFERENCE}")
            args += [f"--kd_ratio={ratio:g}"] if ratio else []
            needs = ["ref12"] if row == "inherit6" or ratio else []
            out.append((name, [sys.executable, "train.py", *args, *overrides], needs))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=5, help="runs at a time")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--only", help="comma-separated job names or groups: run only these")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="train.py override for every run"
    )
    args = p.parse_args()
    todo = jobs([int(s) for s in args.seeds.split(",")], [f"--{kv}" for kv in args.set])
    todo, skipped = pick(todo, args.only)
    run_jobs(todo, args.jobs, ROOT / OUT / "logs", skipped)


if __name__ == "__main__":
    main()
