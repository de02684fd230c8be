"""Does this checkout train what another one trains? The same small CPU runs in each checkout, compared bit
for bit: a reference from scratch, the growth loop from it, inherit.py, a run from the inherited checkpoint, a
2-rank DDP run, eval.py's val loss and lazy_layers.py's diagnosis. Every checkpoint tensor (model and
optimizer state) must be equal, and every log record, growth.json and report equal but for timings and the
checkout's own folder.

    python bench/same_runs.py --repo /path/to/other/checkout --data DATA [--work DIR]

DATA is a folder of token bins (prepare_owt.py); a small vocabulary keeps it quick (minutes on 2 cores). For a
change that should not touch the numbers: a move, a rename, a split of a function."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--arch=gpt2",
    "--n_layer=4",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=8",
    "--micro_batch_size=2",
    "--learning_rate=3e-3",
    "--min_lr=3e-4",
    "--warmup_iters=5",
    "--eval_tokens=2048",
    "--log_interval=5",
    "--eval_interval=10",
    "--checkpoint_interval=10",
    "--device=cpu",
]
# Not compared: timings, and a checkpoint file's byte fingerprint (a tree whose torch.save writes to a path
# names the archive after that file, a random temporary name); the tensors themselves are compared.
NOT_COMPARED = {"tok_per_s", "mfu", "peak_mem_gb", "cost", "fingerprint"}


def commands(data: str) -> list[list[str]]:
    """The runs, in order, relative to a work folder (the growth loop and the rest read the first run)."""
    train = ["train.py", *TINY, f"--data_dir={data}"]
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [
        [*train, "--max_iters=40", "--out_dir=ref"],
        [
            *train,
            "--ref=ref/ckpt.pt",
            "--grow=True",
            "--n_layer=1",
            "--grow_step=1",
            "--max_iters=20",
            "--grow_last_k=2",
            "--grow_tolerance=-100",
            "--out_dir=grow",
        ],
        ["inherit.py", "--ref", "ref/ckpt.pt", "--layers", "0,2", "--out", "inherited.pt"],
        [*train, "--init_from=pretrained", "--ref=inherited.pt", "--max_iters=20", "--out_dir=pretrained"],
        [*torchrun, *train, "--max_iters=20", "--bias=False", "--out_dir=ddp"],
        ["eval.py", "--ckpt", "ref", "--val_data", data, "--out", "eval.json"],
        [
            "lazy_layers.py",
            "--ref",
            "ref",
            "--data",
            data,
            "--seqs",
            "2",
            "--seq_len",
            "32",
            "--device",
            "cpu",
            "--out",
            "lazy",
        ],
    ]


def run_all(repo: Path, work: Path, data: str) -> None:
    work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    for cmd in commands(data):
        script = next(c for c in cmd if c.endswith(".py"))
        cmd = [a.replace(script, str(repo / script)) if a == script else a for a in cmd]
        r = subprocess.run([sys.executable, *cmd], cwd=work, env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"{repo}: {script} failed:\n{r.stderr[-3000:]}")


def portable(value, work: str):
    """value with the work folder's path replaced and NOT_COMPARED keys dropped, so two checkouts' records
    compare."""
    if isinstance(value, dict):
        return {k: portable(v, work) for k, v in value.items() if k not in NOT_COMPARED}
    if isinstance(value, (list, tuple)):
        return [portable(v, work) for v in value]
    if isinstance(value, str):
        return value.replace(work, "<work>")
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.dim() == 0 else value
    return value


def difference(a, b, where: str = "") -> str | None:
    """Where a and b first differ (tensors element for element, in dtype and shape; the rest by ==), or
    None."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return where or "a tensor against another type"
        equal = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return None if equal else where
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where} keys {sorted(set(a) ^ set(b))}"
        return next((d for k in a if (d := difference(a[k], b[k], f"{where}.{k}")) is not None), None)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next(
            (d for i, (x, y) in enumerate(zip(a, b)) if (d := difference(x, y, f"{where}[{i}]"))), None
        )
    return None if a == b else f"{where}: {str(a)[:80]} against {str(b)[:80]}"


def read(path: Path, work: Path):
    if path.suffix == ".pt":
        return portable(torch.load(path, map_location="cpu", weights_only=True), str(work))
    if path.suffix == ".jsonl":
        return [portable(json.loads(line), str(work)) for line in path.read_text().splitlines()]
    return portable(json.loads(path.read_text()), str(work))


def compare(a: Path, b: Path) -> bool:
    """Print one line per file the runs wrote; True when every file is the same in both."""
    names = sorted({p.relative_to(a) for p in a.rglob("*") if p.suffix in (".pt", ".json", ".jsonl")})
    all_same = True
    for name in names:
        where = difference(read(a / name, a), read(b / name, b)) if (b / name).exists() else "missing"
        all_same &= where is None
        print(f"identical  {name}" if where is None else f"DIFFERS    {name}  at {where}")
    return all_same


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="the other checkout")
    p.add_argument("--data", required=True, help="token bins folder (prepare_owt.py)")
    p.add_argument("--work", help="where the runs go (default: a temporary folder, removed afterwards)")
    args = p.parse_args()
    data = str(Path(args.data).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp).resolve()
        for name, repo in (("other", Path(args.repo).resolve()), ("this", ROOT)):
            print(f"running in {repo} ...", flush=True)
            run_all(repo, work / name, data)
        if not compare(work / "other", work / "this"):
            sys.exit("the checkouts trained differently")
    print("every checkpoint, log and report is the same in both checkouts")


if __name__ == "__main__":
    main()
