"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from bench.errors import OutputPathError, RecordWriteError


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any failure (disk full included) the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(
            f"cannot create {path.parent} ({e.strerror}); choose a writable folder "
            "(paths.runs_dir / paths.output_dir)"
        ) from None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputPathError(
            f"cannot write in {path.parent} ({e.strerror}); make it writable or choose another "
            "folder (paths.runs_dir / paths.output_dir)"
        ) from None
    try:
        # mkstemp makes the file owner-only (0600); a finished output follows the umask like any
        # other file, so teammates on a shared cluster can read the store and the report
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RecordWriteError(
            f"could not write {path} ({e.strerror or e}); free disk space or fix permissions, "
            "then rerun: finished runs are kept"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_save(path: str | Path, save: Callable[[IO], None]) -> None:
    """Write binary content through ``save(fileobj)`` atomically."""
    with atomic_open(path, "wb") as f:
        save(f)
