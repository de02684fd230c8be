"""A run folder's records and the rules for continuing a run: one command at a time in a folder (RunLock),
log.jsonl written and read back, the recipe a run (or a growth loop) must keep to continue, and what a rerun
of a command does. train.py and growth.py share them."""

import fcntl
import json
import os
from dataclasses import fields, replace
from pathlib import Path

from inheritune.tensor_files import safe_torch_load
from inheritune.util import UserError, atomic_write

# Keys with no effect on what is learned (beyond rounding): a run may continue with them changed.
RESUMABLE_CHANGES = {
    "out_dir", "init_from", "device", "dtype", "compile", "compile_mode", "compile_scope", "attention",
    "micro_batch_size", "log_interval", "eval_interval", "checkpoint_interval", "peak_flops",
}  # fmt: skip


def recipe_of(config: dict) -> dict:
    """What a run learns from: its config without the keys it may change and still continue."""
    return {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}


def check_same_recipe(cfg, saved: dict, what: str, may_change=RESUMABLE_CHANGES) -> None:
    """A run (or a growth loop) continues only with the recipe it began with (data, batch, schedule, seed). A
    key the saved config lacks (TrainConfig gained it after the run was saved) counts as its default."""
    if not saved:  # nothing began yet
        return
    was = {f.name: saved.get(f.name, f.default) for f in fields(cfg) if f.name not in may_change}
    changed = [f"{k}={getattr(cfg, k)!r} (was {v!r})" for k, v in was.items() if getattr(cfg, k) != v]
    if changed:
        raise UserError(
            f"{what} was made with other settings: {', '.join(changed)}; rerun it with its own settings "
            f"(its log.jsonl's first line), choose another out_dir, or delete it to start over"
        )


def continue_or_refuse(cfg, master: bool):
    """train.py's config as it should run: rerunning a command never destroys work. When out_dir already holds
    a checkpoint, the same command (a rerun, a requeued job, a torchrun restart) continues that run
    (init_from=resume), and any other command is refused."""
    path = Path(cfg.out_dir) / "ckpt.pt"
    if cfg.init_from == "resume" and not cfg.grow and not path.exists():
        raise UserError(
            f"init_from=resume but {path} does not exist; start with init_from=scratch or inherit"
        )
    if cfg.grow or cfg.init_from == "resume" or not path.exists():
        return cfg  # the growth loop continues its rounds itself
    ckpt = safe_torch_load(path)
    saved = ckpt.get("train_config") if isinstance(ckpt, dict) else None
    if saved is None:
        raise UserError(f"{path} exists and is not a train.py run's checkpoint; choose another out_dir")
    check_same_recipe(cfg, saved, f"{path} (a run at step {ckpt['step']})", RESUMABLE_CHANGES - {"init_from"})
    if master:
        print(f"{path} holds this command's run at step {ckpt['step']}: continuing it", flush=True)
    return replace(cfg, init_from="resume")


def write_log(path, records: list[dict]) -> None:
    """The whole log.jsonl, replaced atomically (a checkpoint and its log always agree)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)))


def append_log(path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(path) -> list[dict]:
    """A run's log.jsonl: a {"config": ...} header, then one record per evaluation or logged step (a line cut
    short by a kill is dropped: resuming rewrites it)."""
    records = []
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


class RunLock:
    """One command at a time in a run folder: an exclusive lock on folder/.lock, which the operating system
    drops when its process ends, however it ends. take() creates the folder when it has to; release() removes
    the lock file, and the folders take() created if nothing else was written to them (a start that failed
    leaves nothing behind)."""

    def __init__(self, folder):
        self.folder, self.file, self.created = Path(folder), None, []
        self.path = self.folder / ".lock"

    def take(self) -> int | None:
        """None once this process holds the lock; else the holder's pid (0 if it has not written it yet)."""
        self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip()
                f.close()
                return int(holder) if holder.isdigit() else 0
            if self.still_the_lock_file(f):
                break
            f.close()  # its last holder removed it between our open and our lock: take the new one
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return None

    def still_the_lock_file(self, f) -> bool:
        try:
            return os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.file is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: a waiter then finds another file and retries
        self.file.close()
        self.file = None
        for folder in self.created:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
