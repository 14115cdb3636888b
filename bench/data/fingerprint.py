"""Fingerprints of the data a run reads: content hashes that enter the run id.

Two runs share a run id only if they read the same bytes (STYLE: identity follows content), so a
replaced npz or another image folder under the same config words is a new run, never "already
done". A file's SHA-256 is cached beside it (``.<name>.sha256``, keyed by size and mtime) or,
where that folder is read-only, in ``cache_dir``; a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

# a fingerprint is a short prefix: enough to tell data sets apart, readable in a record
FINGERPRINT_CHARS = 16
_MEMO: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _sidecars(path: Path, cache_dir: Path | None) -> list[Path]:
    beside = path.with_name(f".{path.name}.sha256")
    out = [beside]
    if cache_dir is not None:
        tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        out.append(Path(cache_dir) / f"{path.name}-{tag}.sha256")
    return out


def file_digest(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """SHA-256 of a file's content, cached beside it (or in ``cache_dir``) by size and mtime."""
    path = Path(path)
    key = _stat_key(path)
    if key in _MEMO:
        return _MEMO[key]
    stamp = {"size": key[1], "mtime_ns": key[2]}
    sidecars = _sidecars(path, Path(cache_dir) if cache_dir else None)
    for sidecar in sidecars:
        try:
            cached = json.loads(sidecar.read_text())
            if {k: cached.get(k) for k in stamp} == stamp and cached.get("sha256"):
                _MEMO[key] = cached["sha256"]
                return cached["sha256"]
        except (OSError, ValueError, AttributeError):
            continue
    digest = _sha256(path)
    _MEMO[key] = digest
    payload = json.dumps({**stamp, "sha256": digest})
    for sidecar in sidecars:  # first writable place wins; a read-only data folder is fine
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
