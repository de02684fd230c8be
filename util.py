"""What every script shares and that needs no torch: user errors, the CLI wrapper, atomic writes."""
import os
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """A bad input the user can fix: scripts print it as one line and exit non-zero."""


def cli(main) -> None:
    """Run a script's main(); a UserError becomes one line on stderr and exit code 1."""
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")


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
