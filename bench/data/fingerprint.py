"""Fingerprints of the data a run reads: content hashes that enter the run id.

Two runs share a run id only if they read the same bytes (STYLE: identity follows content), so a
replaced npz or another image folder under the same config words is a new run, never "already
done". A file's SHA-256 is cached in ``cache_dir`` or ``$XDG_CACHE_HOME/medbench/digests``, never
beside the user's data (their data folder is not ours to write into), keyed by what a user cannot
keep equal by accident when the content changes: size, modification and change time (ctime: set
by the system on every write or replace) and inode. A changed file is hashed again; ``forget``
(``+force=true``) drops what this process remembers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

# a fingerprint is a short prefix: enough to tell data sets apart, readable in a record
FINGERPRINT_CHARS = 16
_MEMO: dict[tuple, str] = {}
STAMP_KEYS = ("size", "mtime_ns", "ctime_ns", "inode")


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _stamp(key: tuple) -> dict:
    return dict(zip(STAMP_KEYS, key[1:5], strict=True))


def forget() -> None:
    """Drop the digests this process remembers: the next ask reads the files again."""
    _MEMO.clear()


def user_cache_dir() -> Path:
    """Where digests of files in read-only folders are cached (``$XDG_CACHE_HOME/medbench``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "medbench" / "digests"


def _sidecars(path: Path, cache_dir: Path | None, algo: str) -> list[Path]:
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    out = []
    for folder in (cache_dir, user_cache_dir()):
        if folder is not None:
            out.append(Path(folder) / f"{path.name}-{tag}.{algo}")
    return out


def _hash(path: Path, algo: str, chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_digest(path: str | Path, cache_dir=None, algo: str = "sha256") -> str | None:
    """The digest cached for this file as it is now (size, times, inode), or None."""
    path = Path(path)
    key = (*_stat_key(path), algo)
    if key in _MEMO:
        return _MEMO[key]
    stamp = _stamp(key)
    for sidecar in _sidecars(path, Path(cache_dir) if cache_dir else None, algo):
        try:
            cached = json.loads(sidecar.read_text())
            if {k: cached.get(k) for k in stamp} == stamp and cached.get(algo):
                _MEMO[key] = cached[algo]
                return cached[algo]
        except (OSError, ValueError, AttributeError):
            continue
    return None


def file_digest(path: str | Path, cache_dir: str | Path | None = None, algo: str = "sha256") -> str:
    """A file's content digest, cached in ``cache_dir`` or the user cache by its size, times and
    inode: a changed or replaced file is hashed again."""
    path = Path(path)
    found = cached_digest(path, cache_dir, algo)
    if found is not None:
        return found
    key = (*_stat_key(path), algo)
    stamp = _stamp(key)
    sidecars = _sidecars(path, Path(cache_dir) if cache_dir else None, algo)
    digest = _hash(path, algo)
    _MEMO[key] = digest
    payload = json.dumps({**stamp, algo: digest})
    for sidecar in sidecars:  # the first writable place wins
        try:
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
            tmp.write_text(payload)
            tmp.replace(sidecar)
            break
        except OSError:
            continue
    return digest


def npz_fingerprint(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """``sha256:<prefix>`` of one data file."""
    return "sha256:" + file_digest(path, cache_dir)[:FINGERPRINT_CHARS]


def files_fingerprint(
    root: str | Path, files: Iterable[Path], cache_dir: str | Path | None = None
) -> str:
    """``sha256:<prefix>`` over the relative paths and content hashes of ``files`` under
    ``root``: renaming a class folder, adding, removing or editing an image changes it; moving
    the whole folder does not."""
    root = Path(root)
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(file_digest(f, cache_dir).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()[:FINGERPRINT_CHARS]
