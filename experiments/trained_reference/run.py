"""Every run of the trained-reference study (README.md beside this file), in dependency order, several at a
time on one GPU (small models leave most of an H200 idle; --jobs 1 runs them one by one).

    python experiments/trained_reference/run.py [--jobs 4] [--seeds 1,2,3] [--only NAME,...] \
        [--set key=value ...]

Each job is a plain train.py, inherit.py or lazy_layers.py command, printed when it starts, its output in
out/trained_reference/logs/NAME.txt. Rerunning after an interruption continues: train.py continues a run whose
out_dir holds its checkpoint, and the growth loop its rounds. --set adds a train.py override to every run (a
smoke test on a CPU: --set n_embd=64 --set max_iters=20 ...). --only runs the named jobs or groups of jobs (a
name without its last _suffix: --only random6_2x runs random6_2x_s1, _s2, _s3), taking what they wait for as
done."""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from jobs import pick, run_jobs  # noqa: E402

CONFIG = "experiments/trained_reference/config"
OUT = "out/trained_reference"
DATA = "data/offline_english"


def jobs(
    seeds: list[int], overrides: list[str], lazy_seq_lens: list[int]
) -> list[tuple[str, list[str], list[str]]]:
    """(name, command, names it waits for), in priority order: a free slot takes the first job whose waits are
    done. The long 2x-steps baselines queue behind the reference so that they never hold up the runs that need
    it (and, should the reference fail, are skipped with them: --only random6_2x runs them alone)."""
    py = [sys.executable]

    def train(config, *args):
        return py + ["train.py", f"{CONFIG}/{config}.py", *args, *overrides]

    ref = f"{OUT}/ref12/ckpt.pt"
    out = [("ref12", train("ref12"), [])]
    out += [
        (f"random6_s{s}", train("random6", f"--seed={s}", f"--out_dir={OUT}/random6_s{s}"), []) for s in seeds
    ]
    for seq_len in lazy_seq_lens:
        command = (
            f"lazy_layers.py --ref {ref} --data {DATA} --seq_len {seq_len} --out {OUT}/lazy_ref12_{seq_len}"
        )
        out.append((f"lazy_ref12_{seq_len}", py + command.split(), ["ref12"]))
    for s in seeds:
        out.append((f"grow6_s{s}", train("grow6", f"--seed={s}", f"--out_dir={OUT}/grow6_s{s}"), ["ref12"]))
    for s in seeds:
        init = f"{OUT}/paper6_init_s{s}.pt"
        command = f"inherit.py --ref {ref} --n_layer 6 --reinit wpe,ln_f --seed {s} --out {init}"
        out.append((f"paper6_init_s{s}", py + command.split(), ["ref12"]))
        paper6 = train("paper6", f"--seed={s}", f"--ref={init}", f"--out_dir={OUT}/paper6_s{s}")
        out.append((f"paper6_s{s}", paper6, [f"paper6_init_s{s}"]))
    for s in seeds:
        random6_2x = train("random6_2x", f"--seed={s}", f"--out_dir={OUT}/random6_2x_s{s}")
        out.append((f"random6_2x_s{s}", random6_2x, ["ref12"]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=4, help="runs at a time")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--lazy_seq_len", default="256,1024", help="lazy_layers.py window lengths, one run each")
    p.add_argument(
        "--only", help="comma-separated job names or groups (e.g. random6_2x,ref12): run only these"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="train.py override for every run"
    )
    args = p.parse_args()
    todo = jobs(
        [int(s) for s in args.seeds.split(",")],
        [f"--{kv}" for kv in args.set],
        [int(n) for n in args.lazy_seq_len.split(",")],
    )
    todo, skipped = pick(todo, args.only)
    run_jobs(todo, args.jobs, ROOT / OUT / "logs", skipped)


if __name__ == "__main__":
    main()
