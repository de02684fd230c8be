"""What every script shares and that needs no torch: user errors, the CLI wrapper, config files and --key=value
overrides on a dataclass, atomic writes, loss plots."""
import ast
import difflib
import os
import sys
import tempfile
import types
from dataclasses import fields
from pathlib import Path


class UserError(Exception):
    """A bad input the user can fix: scripts print it as one line and exit non-zero."""


def cli(main) -> None:
    """Run a script's main(); a UserError becomes one line on stderr and exit code 1."""
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")


def coerce(key: str, value, annotation):
    """value (a config-file object or a command-line string) as the field's declared type, or a UserError."""
    args = getattr(annotation, "__args__", ())
    optional, kind = type(None) in args, next(t for t in (args or (annotation,)) if t is not type(None))
    if isinstance(value, str) and kind is not str or value == "None":
        text = {"true": "True", "false": "False"}.get(value.strip().lower(), value.strip())
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UserError(f"{key} expects {kind.__name__}, got '{text}'") from None
    if value is None and optional:
        return None
    if kind is float and type(value) is int:
        return float(value)
    if kind is int and type(value) is float and value.is_integer():  # --max_iters=1e5
        return int(value)
    if type(value) is not kind:
        raise UserError(f"{key} expects {kind.__name__}{' or None' if optional else ''}, got {value!r}")
    return value


def set_key(cfg, key: str, value) -> None:
    valid = {f.name: f.type for f in fields(cfg)}
    if key not in valid:
        close = difflib.get_close_matches(key, valid, n=1)
        raise UserError(f"unknown config key '{key}'" + (f"; did you mean '{close[0]}'?" if close else ""))
    setattr(cfg, key, coerce(key, value, valid[key]))


def apply_config_args(cfg, argv: list[str], example: str):
    """Config files (plain Python assigning keys) and --key=value overrides onto the dataclass cfg, left to right."""
    for arg in argv:
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                raise UserError(f"'{arg}': overrides are written --key=value")
            set_key(cfg, key, value)
            continue
        path = Path(arg)
        if not path.is_file():
            raise UserError(f"config file {arg} not found; configs live in config/, e.g. {example}")
        namespace = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        for key, value in namespace.items():
            if not key.startswith("_") and not isinstance(value, (types.ModuleType, types.FunctionType, type)):
                set_key(cfg, key, value)
    return cfg


def atomic_write(path, write) -> None:
    """Call write(tmp_path), then rename onto path: readers never see a half-written file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}); choose a writable output path") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions a plain open would
        fd = os.open(tmp, os.O_RDONLY)
        os.fsync(fd)  # on disk before the rename, so a crash cannot leave an empty file under the real name
        os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"writing {path} failed ({e.strerror}); free some space or choose another path") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plot_curves(curves: dict, path: Path, reference: float | None = None) -> None:
    """Val (and train) loss against step; skipped with a note if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: no {path})")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, data in curves.items():
        if data and isinstance(data[0], dict):  # a run's log records
            for key, style in (("train_loss", "-"), ("val_loss", "o-")):
                pts = [(r["step"], r[key]) for r in data if key in r]
                if pts:
                    ax.plot(*zip(*pts), style, label=key.replace("_", " "), markersize=3)
        elif data:
            ax.plot(*zip(*data), "o-", label=label, markersize=3)
    if reference is not None:
        ax.axhline(reference, color="k", linestyle="--", label="reference")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
