"""The studies' job runner: plain commands (train.py, inherit.py, ...) several at a time on one machine, each
started once the jobs it waits for are done, its output in LOGS/NAME.txt. A study's run.py lists its jobs and
calls run_jobs; `--only` picks some of them (a name, or a group: the name without its last _suffix)."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pick(todo: list, only: str | None) -> tuple[list, set]:
    """(the jobs --only names, the names of those skipped and taken as done)."""
    if not only:
        return todo, set()
    wanted = set(only.split(","))
    called = lambda name: {name, name.rsplit("_", 1)[0]}  # noqa: E731  the job's name and its group's
    if unknown := wanted - set().union(*(called(j[0]) for j in todo)):
        sys.exit(
            f"error: --only {','.join(sorted(unknown))}: no such job; jobs: {', '.join(j[0] for j in todo)}"
        )
    skipped = {j[0] for j in todo if not called(j[0]) & wanted}
    return [j for j in todo if j[0] not in skipped], skipped


def run_jobs(todo: list, at_once: int, logs: Path, skipped: set = frozenset()) -> None:
    """Run (name, command, names it waits for) jobs, at_once at a time, in list order as their waits finish;
    what waits on a failed job is skipped. Exits 1 if any failed."""
    logs.mkdir(parents=True, exist_ok=True)
    todo, running, done, failed = list(todo), {}, set(skipped), set()
    t0 = time.time()
    say = lambda text: print(f"[{time.time() - t0:6.0f} s] {text}", flush=True)  # noqa: E731
    while todo or running:
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                (done if proc.returncode == 0 else failed).add(name)
                say(f"{name}: {'done' if proc.returncode == 0 else 'FAILED'}")
        while blocked := [j for j in todo if set(j[2]) & failed]:  # what waits on a failure never runs
            for job in blocked:
                todo.remove(job)
                failed.add(job[0])
                say(f"{job[0]}: skipped (waits on {sorted(set(job[2]) & failed)})")
        while len(running) < at_once and (ready := next((j for j in todo if set(j[2]) <= done), None)):
            todo.remove(ready)
            name, cmd, _ = ready
            say(f"{name}: {' '.join(map(str, cmd[1:]))}")
            with open(logs / f"{name}.txt", "w") as out:  # the child keeps its own copy of the file
                running[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        time.sleep(1)
    say(f"finished: {len(done - set(skipped))} done, {len(failed)} failed {' '.join(sorted(failed))}")
    sys.exit(1 if failed else 0)
