"""What every script shares and that needs no torch: user errors, the CLI wrapper, config keys declared as
dataclass fields (`setting`: default, help and accepted values), config files and --key=value overrides onto
them, atomic writes, loss plots, hub names."""

import ast
import contextlib
import difflib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
import types
from dataclasses import field, fields
from pathlib import Path


class UserError(Exception):
    """A bad input the user can fix: scripts print it as one line and exit non-zero."""


def cli(main, interrupted: str = "interrupted") -> None:
    """Run a script's main(); a UserError becomes one line on stderr and exit code 1, a Ctrl-C the line
    `interrupted` and exit code 130. Under torchrun only rank 0 prints: every check before training sees the
    same inputs on every rank, and the checks during training decide on all-reduced values, so the ranks fail
    together with the same message. torchrun stops every rank as soon as one exits, so the other ranks wait
    (torchrun stops them within moments) and leave rank 0 the time to say why."""
    master = os.environ.get("RANK", "0") == "0"
    try:
        main()
    except UserError as e:
        if master:
            tell_torchrun(f"error: {e}")
            sys.exit(f"error: {e}")
        time.sleep(30)
        sys.exit(1)
    except KeyboardInterrupt:
        if master:
            print(interrupted, file=sys.stderr)
        sys.exit(130)


def tell_torchrun(line: str) -> None:
    """Under torchrun, the line again in the error file torchrun reads (TORCHELASTIC_ERROR_FILE): its failure
    summary, printed last, then shows our line where it would show a traceback."""
    if path := os.environ.get("TORCHELASTIC_ERROR_FILE"):
        with contextlib.suppress(OSError):
            Path(path).write_text(json.dumps({"message": line, "timestamp": str(int(time.time()))}))


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


def apply_config_file(cfg, path: Path, chain=()) -> None:
    """A config file: plain Python assigning keys. `base = "other.py"` (resolved next to the file) is applied
    first, so a run's config states only what differs from the recipe it builds on."""
    if path.resolve() in chain:
        raise UserError(f"config {path} builds on itself through base = ... ({' -> '.join(map(str, chain))})")
    namespace = {}
    try:
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    except Exception as e:  # the config is user code: its failure is the user's to fix, in one line
        hint = (
            ' (a config that builds on another says base = "other.py", resolved next to it, instead of '
            "exec(open(...)) relative to the working directory)"
            if isinstance(e, OSError)
            else ""
        )
        raise UserError(f"config file {path} failed: {type(e).__name__}: {e}{hint}") from None
    if "base" in namespace:
        apply_config_file(cfg, path.parent / namespace.pop("base"), (*chain, path.resolve()))
    for key, value in namespace.items():
        if not key.startswith("_") and not isinstance(value, (types.ModuleType, types.FunctionType, type)):
            set_key(cfg, key, value)


def apply_config_args(cfg, argv: list[str], example: str, usage: str):
    """Config files and --key=value overrides onto the dataclass cfg, left to right; -h/--help prints every
    key."""
    if {"-h", "--help"} & set(argv):
        print(config_help(type(cfg), usage))
        sys.exit(0)
    for arg in argv:
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                raise UserError(f"'{arg}': overrides are written --key=value")
            set_key(cfg, key, value)
        elif Path(arg).is_file():
            apply_config_file(cfg, Path(arg))
        else:
            raise UserError(f"config file {arg} not found; configs live in config/, e.g. {example}")
    return cfg


def setting(default, help: str, *, choices=None, at_least=None, above=None, below=None, at_most=None):
    """A config key, as a dataclass field: its default, its line in --help, and what it accepts: one of
    `choices`, or a range (>= at_least or > above, and < below or <= at_most; an optional key left at None
    passes)."""
    rules = {"choices": choices, "at_least": at_least, "above": above, "below": below, "at_most": at_most}
    return field(default=default, metadata={"help": help, **rules})


def config_help(cls, usage: str) -> str:
    """--help: usage, then every key with its default and meaning, in the dataclass's order, under the titles
    of its SECTIONS ({first key of a section: title})."""
    lines, sections = [usage], getattr(cls, "SECTIONS", {})
    for f in fields(cls):
        if f.name in sections:
            lines += ["", f"{sections[f.name]}:"]
        default = f"{f.default:g}" if isinstance(f.default, float) else f.default
        key = f"  --{f.name}={default}".ljust(34)
        lines.append(f"{key} {f.metadata.get('help', '')}{accepts(f.metadata)}")
    return "\n".join(lines)


def accepts(rules) -> str:
    """What a key accepts, as --help states it after the key's meaning: "; one of a, b", "; >= 1", or ""."""
    if rules.get("choices") is not None:
        return f"; one of {', '.join(map(str, rules['choices']))}"
    bounded = any(rules.get(k) is not None for k in ("at_least", "above", "below", "at_most"))
    return f"; {range_text(rules)}" if bounded else ""


def check_settings(cfg) -> None:
    """Each key's value against its field's rules (see `setting`): among its choices, inside its range."""
    for f in fields(cfg):
        value, rules = getattr(cfg, f.name), f.metadata
        if rules.get("choices") is not None and value not in rules["choices"]:
            raise UserError(f"{f.name}={value!r}; use one of {', '.join(map(str, rules['choices']))}")
        if value is not None and out_of_range(value, rules):
            raise UserError(f"{f.name}={value!r} is out of range: it must be {range_text(rules)}")


def out_of_range(value, rules) -> bool:
    """Whether value breaks a bound of the rules (at_least, above, below, at_most)."""
    low, above, below, high = (rules.get(k) for k in ("at_least", "above", "below", "at_most"))
    return (
        (low is not None and value < low)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
        or (high is not None and value > high)
    )


def range_text(rules) -> str:
    """'>= 1', '> 0', 'in [0, 1)' or 'in [0, 1]': a range as the error message states it."""
    closed, low = (True, rules["at_least"]) if rules.get("at_least") is not None else (False, rules["above"])
    if rules.get("at_most") is not None:
        return f"in {'[' if closed else '('}{low:g}, {rules['at_most']:g}]"
    if rules.get("below") is None:
        return f"{'>=' if closed else '>'} {low:g}"
    return f"in {'[' if closed else '('}{low:g}, {rules['below']:g})"


def check_can_create(folder) -> None:
    """Fail now, not after minutes of loading, when `folder` cannot be created or written; creates nothing."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot create {folder}: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in {existing} (permission denied); choose another path")


def check_new_output(path: Path, overwrite: bool, example: str) -> None:
    """A script's output file: a path it can create, not a folder, not an existing file unless overwrite."""
    if path.is_dir():
        raise UserError(f"--out {path} is a folder: give a file path, e.g. {path / example}")
    if path.exists() and not overwrite:
        raise UserError(f"--out {path} exists; choose another path, or pass --overwrite to replace it")
    check_can_create(path.parent)


def atomic_write(path, write) -> None:
    """Call write(tmp_path), then rename onto path: readers never see a half-written file, and when the write
    fails, whatever its error (torch's writer raises RuntimeError on a full disk), path keeps its earlier
    contents and the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}); choose a writable output path") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: the permissions a plain open would give
        fd = os.open(tmp, os.O_RDONLY)
        os.fsync(fd)  # on disk before the rename, so a crash cannot leave an empty file under the real name
        os.close(fd)
        os.replace(tmp, path)
    except UserError:
        raise
    except Exception as e:
        raise UserError(write_failure(path, e)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_failure(path: Path, error: Exception) -> str:
    """Why writing path failed, in one line: a full disk by name (found in the error's chain, or in the free
    space left), else the error itself."""
    chain, cause = [], error
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    full = any(getattr(c, "errno", None) == errno.ENOSPC or "No space left" in str(c) for c in chain)
    kept = f"{path} keeps its earlier contents" if path.exists() else f"{path} was not written"
    if full or shutil.disk_usage(path.parent).free < 1 << 20:
        return f"no space left on the disk of {path.parent}: {kept}; free some space or choose another path"
    reason = (
        error.strerror if isinstance(error, OSError) else f"{type(error).__name__}: {error}".split("\n")[0]
    )
    return f"writing {path} failed ({reason}): {kept}; choose another path"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pyplot(path):
    """matplotlib.pyplot for a headless plot, or None with a note that `path` is skipped (matplotlib is
    optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: no {path})")
        return None
    return plt


def plot_curves(curves: dict, path: Path, reference: float | None = None) -> None:
    """Val (and train) loss against step; skipped with a note if matplotlib is missing."""
    if (plt := pyplot(path)) is None:
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


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "Qwen/Qwen3-0.6B"


def resolve_hub_name(ref: str) -> str:
    """A Hugging Face hub name -> its snapshot folder in the local HF cache, downloaded first when not cached
    and online (config, safetensors weights and tokenizer files only). A local path, or anything else, comes
    back as is; so does "dir/name" when dir exists here (a local path with a typo, not a hub name)."""
    if Path(ref).exists() or not HUB_NAME.fullmatch(str(ref)) or Path(ref).parent.exists():
        return ref
    offline_fix = (
        f"download it where the hub is reachable (`hf download {ref}`) or pass a local HF model folder"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(
            f"{ref}: no such file or folder; to fetch it by name `pip install huggingface_hub`, "
            f"or pass a local HF model folder"
        ) from None
    patterns = ["*.json", "*.safetensors", "tokenizer*"]
    try:
        return snapshot_download(ref, allow_patterns=patterns, local_files_only=True)  # the cache, no network
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
            raise UserError(
                f"{ref}: no such file or folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is "
                f"set); {offline_fix}"
            ) from None
    try:
        return snapshot_download(ref, allow_patterns=patterns)
    except Exception as e:  # offline, a gated model without a login, a name that does not exist
        raise UserError(
            f"{ref}: no such file or folder, and fetching it from the Hugging Face hub failed "
            f"({type(e).__name__}); {offline_fix}"
        ) from None
