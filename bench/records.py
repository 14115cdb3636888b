"""The run record: schema, content-hashed run id, atomic write, locking and "already done?".

Layout of the run store (``paths.runs_dir``, default ``runs/``)::

    runs/<run_id>/record.json            the record (written atomically)
    runs/<run_id>/predictions_test.csv   per-sample labels and scores (val likewise)
    runs/<run_id>/history.csv            per-epoch curves
    runs/<run_id>/checkpoints/           best.ckpt (and last.ckpt while unfinished)
    runs/<run_id>/.lock                  held (flock) while a process works on the run
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.io import atomic_write_text

log = logging.getLogger(__name__)

RECORD_FILE = "record.json"
SCHEMA_VERSION = 1
STATUSES = ("running", "done", "failed", "interrupted")

# Config keys that do not change a run's numbers: where things are written, how they are
# logged, how fast data is fed. They are left out of the run id so a moved or re-logged run
# is still recognised as done.
HASH_EXCLUDE = (
    "paths",
    "logger",
    "hydra",
    "force",
    "keep_checkpoints",
    "threads",
    "progress_refresh_steps",
    "data.root",
    "data.cache_dir",
    "data.num_workers",
    "data.pin_memory",
    "data.device_resident",
    "data.download",
    "data.verify_md5",
    "data.mmap",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.enable_model_summary",
)

SECRET_ENV_PATTERN = re.compile(r"(_KEY|_TOKEN|SECRET|PASSWORD|_PASS)$|^WANDB_API_KEY$", re.I)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _drop(d: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.get(p) if isinstance(d, dict) else None
        if d is None:
            return
    if isinstance(d, dict):
        d.pop(leaf, None)


def config_for_hash(cfg: dict) -> dict:
    """The part of a resolved config that determines a run's results."""
    cfg = copy.deepcopy(cfg)
    for key in HASH_EXCLUDE:
        _drop(cfg, key)
    return cfg


def dataset_label(cfg: dict) -> str:
    data = cfg.get("data", {})
    name = data.get("flag") or data.get("name") or "data"
    size = data.get("size")
    return f"{name}_{size}" if size else str(name)


def compute_run_id(cfg: dict) -> str:
    """``<dataset>-<model>-s<seed>-<hash10>``: readable, and a hash of the relevant config."""
    payload = json.dumps(config_for_hash(cfg), sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
    model = cfg.get("model", {}).get("name", "model")
    seed = cfg.get("seed")
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{dataset_label(cfg)}-{model}")
    return f"{slug}-s{seed}-{digest}"


def secret_values() -> list[str]:
    """Values of secret-looking environment variables (API keys, tokens, passwords)."""
    return [v for k, v in os.environ.items() if SECRET_ENV_PATTERN.search(k) and len(v) >= 6]


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """Replace every occurrence of a secret value in strings inside ``obj`` by ``***``."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return obj
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "***")
        return obj
    if isinstance(obj, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    return obj


def git_sha(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            cwd=cwd or Path(__file__).resolve().parent,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_facts() -> dict:
    import lightning
    import timm
    import torch

    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return {
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "device": device,
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "git_sha": git_sha(),
    }


class RunStore:
    """One folder per run id under ``root``; records are the source of truth downstream."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def run_dir(self, run_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", run_id) or run_id in (".", ".."):
            raise ValueError(f"invalid run id {run_id!r}")  # never a path outside the store
        return self.root / run_id

    def record_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / RECORD_FILE

    def read(self, run_id: str) -> dict | None:
        path = self.record_path(run_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            log.warning("unreadable record %s (%s); treating the run as not done", path, e)
            return None

    def is_done(self, run_id: str) -> bool:
        rec = self.read(run_id)
        return bool(rec) and rec.get("status") == "done"

    def write(self, record: dict) -> Path:
        path = self.record_path(record["run_id"])
        atomic_write_text(path, json.dumps(redact(record), indent=2, sort_keys=False, default=str))
        return path

    @contextlib.contextmanager
    def claim(self, run_id: str) -> Iterator[bool]:
        """Hold an exclusive lock on the run; yields False if another process holds it.

        The lock is an flock, so it dies with its process (a SIGKILLed run frees its claim).
        """
        run_dir = self.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def iter_records(self) -> tuple[list[dict], list[str]]:
        """All readable records, and a line for each unreadable one (never raises)."""
        records, problems = [], []
        if not self.root.exists():
            return records, problems
        for path in sorted(self.root.glob(f"*/{RECORD_FILE}")):
            try:
                rec = json.loads(path.read_text())
                if not isinstance(rec, dict) or "run_id" not in rec:
                    raise ValueError("not a run record")
                rec["_dir"] = str(path.parent)
                records.append(rec)
            except (OSError, ValueError) as e:
                problems.append(f"{path}: {type(e).__name__}: {e}")
        return records, problems
