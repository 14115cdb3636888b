"""The run record: a typed schema, content-hashed ids, atomic writes, locking and "already done?".

Layout of the run store (``paths.runs_dir``, default ``runs/``)::

    runs/<run_id>/record.json            the record (written atomically)
    runs/<run_id>/predictions_test.csv   per-sample labels and scores (val likewise)
    runs/<run_id>/history.csv            per-epoch curves
    runs/<run_id>/checkpoints/           best.ckpt (last.ckpt, the resume point, until done)
    runs/<run_id>/.lock                  held (flock) while a process works on the run

The record is the contract between training, leaderboard, report, explain and the evaluation
tools: :class:`RunRecord` is its type, :func:`load_record` reads every schema version written so
far, and nothing downstream reads a record as a dict of string keys.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import socket
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.io import atomic_write_text

log = logging.getLogger(__name__)

RECORD_FILE = "record.json"
SCHEMA_VERSION = 2
RESUME_FILE = "last.ckpt"
BEST_FILE = "best.ckpt"


@dataclass(frozen=True)
class RunFiles:
    """The files of one run folder, named here once: what training writes and every reader
    (leaderboard, report, predict, publish) opens."""

    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / RECORD_FILE

    def predictions(self, split: str) -> Path:
        """Per-sample labels and scores (per-case overlaps for segmentation) of ``split``."""
        return self.dir / f"predictions_{split}.csv"

    @property
    def history(self) -> Path:
        return self.dir / "history.csv"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST_FILE

    @property
    def resume(self) -> Path:
        return self.checkpoints / RESUME_FILE

    @property
    def explain(self) -> Path:
        """Grad-CAM maps written by ``bench-explain``."""
        return self.dir / "explain"


# Config keys that do not change a run's numbers: where things are written, how they are
# logged, how fast data is fed. They are left out of the run id so a moved or re-logged run
# is still recognised as done.
HASH_EXCLUDE = (
    "paths",
    "logger",
    "hydra",
    "force",
    "checkpoint",
    "threads",
    "progress_refresh_steps",
    "hparams_search",
    # how seeds are scheduled (packed or one at a time) does not change a run's numbers
    "execution",
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
    # where a run trains and how fast: the same configuration on a CPU or a GPU
    "trainer.accelerator",
    "trainer.benchmark",
)
# Keys whose values differ between repeats of one configuration: rows of a leaderboard pool
# runs that differ only here (seeds, and the folds of a cross-validation).
REPEAT_KEYS = ("seed", "data.seed", "data.cv.fold")

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


# options whose value means "this feature is off": a config without them is the same run
_OFF = {
    ("probe", "kind"): (None,),
    ("eval", "tta"): (None, "none"),
    ("data", "cv", "folds"): (None, 0),
    ("task", "class_weights"): (None, "none"),
    ("data", "sampler"): ("random",),
}


_MISSING = object()


def _get(d: dict, path: tuple):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return _MISSING
        d = d[p]
    return d


def _drop_nulls(d):
    if isinstance(d, dict):
        return {k: _drop_nulls(v) for k, v in d.items() if v is not None}
    return d


def canonical(cfg: dict) -> dict:
    """The config with switched-off features removed (``probe`` without a kind, ``eval.tta:
    none``, ``data.cv`` without folds, ...) and null options dropped, so that adding an option
    with an inert default never splits a configuration into two."""
    cfg = copy.deepcopy(cfg)
    for path, off in _OFF.items():
        value = _get(cfg, path)
        if value is not _MISSING and value in off:
            # the whole feature group when its switch is off (probe, eval, data.cv)
            group = path[:-1] if path[-1] in ("kind", "tta", "folds") else path
            _drop(cfg, ".".join(group))
    for parent in ("probe", "eval"):
        if parent in cfg and not cfg[parent]:
            cfg.pop(parent)
    return _drop_nulls(cfg)


def config_for_hash(cfg: dict) -> dict:
    """The part of a resolved config that determines a run's results."""
    cfg = copy.deepcopy(cfg)
    for key in HASH_EXCLUDE:
        _drop(cfg, key)
    return canonical(cfg)


def config_for_row(cfg: dict) -> dict:
    """The part of a resolved config that defines a leaderboard row: all but seeds and folds."""
    cfg = config_for_hash(cfg)
    for key in REPEAT_KEYS:
        _drop(cfg, key)
    return cfg


def _digest(payload: dict, n: int = 10) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def dataset_label(cfg: dict) -> str:
    """``<flag or name>[_<size>]``; a user's folder or file without a name is labelled by the
    folder's or file's own name, never by the bare word ``data``."""
    data = cfg.get("data", {})
    source = data.get("path") or data.get("root")
    name = data.get("flag") or data.get("name") or (Path(str(source)).stem if source else "data")
    size = data.get("size")
    return f"{name}_{size}" if size else str(name)


def compute_run_id(cfg: dict) -> str:
    """``<dataset>-<model>-s<seed>-<hash10>``: readable, and a hash of the relevant config."""
    model = cfg.get("model", {}).get("name", "model")
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{dataset_label(cfg)}-{model}")
    return f"{slug}-s{cfg.get('seed')}-{_digest(config_for_hash(cfg))}"


def compute_config_id(cfg: dict) -> str:
    """Hash of the config without seeds and folds: runs sharing it share a leaderboard row."""
    return _digest(config_for_row(cfg), 8)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"data.batch_size": 128, ...}`` for nested dicts (lists kept as values)."""
    if not isinstance(cfg, dict):
        return {prefix: cfg}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


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


def _known(cls, d: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (d or {}).items() if k in names}


@dataclass
class Env:
    """Where a run ran: library versions, device, host and commit."""

    torch: str | None = None
    lightning: str | None = None
    timm: str | None = None
    python: str | None = None
    device: str | None = None
    cpu: str | None = None
    cpu_threads: int | None = None
    hostname: str | None = None
    git_sha: str | None = None
    # trained as one member of a pack of seeds: {"k", "seeds", "implementation"}; None if alone
    packed: dict | None = None

    @classmethod
    def current(cls) -> Env:
        import lightning
        import timm
        import torch

        return cls(
            torch=torch.__version__,
            lightning=lightning.__version__,
            timm=timm.__version__,
            python=platform.python_version(),
            device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            cpu=cpu_name(),
            cpu_threads=torch.get_num_threads(),
            hostname=socket.gethostname(),
            git_sha=git_sha(),
        )


@dataclass
class Cost:
    """What a run cost: size, compute per sample, time, throughput and memory."""

    params_total: int | None = None
    params_trainable: int | None = None
    gmacs: float | None = None
    input_size: list[int] | None = None
    train_time_s: float | None = None
    train_samples_per_sec: float | None = None
    epoch_time_s: float | None = None
    infer_samples_per_sec: float | None = None
    peak_mem_mb: float | None = None
    wall_time_s: float | None = None


@dataclass
class RunRecord:
    """One run: what was asked (config), what was built, what it scored and what it cost.

    ``val``/``test`` hold the metrics of the best-validation weights, ``test_last`` those of the
    weights after the last epoch (what the official MedMNIST scripts test). ``per_class`` holds
    per-class rows by split; ``evaluations`` holds what later tools added (robustness,
    calibration, test-time augmentation), keyed by tool.
    """

    run_id: str
    status: str = "running"
    config: dict = field(default_factory=dict)
    config_id: str = ""
    dataset: str = ""
    model: str = ""
    scheme: str = "scratch"
    seed: int | None = None
    epochs: int | None = None
    precision: str | None = None
    task: str | None = None
    kind: str | None = None
    spec: dict | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    test_last: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, list[dict]] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs_run: int | None = None
    cv: dict | None = None
    cost: Cost = field(default_factory=Cost)
    env: Env = field(default_factory=Env)
    evaluations: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    # what a reader must know about the numbers (an undefined metric stored as NaN, a split
    # without some class): one sentence each, shown by the leaderboard and the report
    notes: list[str] = field(default_factory=list)
    created_at: str | None = None
    finished_at: str | None = None
    sweep_group: str | None = None
    overrides: list[str] = field(default_factory=list)
    resumed_from: str | None = None
    attempt: int = 1
    schema_version: int = SCHEMA_VERSION
    # where the record was read from (not written)
    path: Path | None = field(default=None, compare=False, repr=False)

    @property
    def dir(self) -> Path | None:
        return self.path.parent if self.path else None

    @property
    def done(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> RunRecord:
        """Read any schema version (v1 records are upgraded in memory)."""
        if not isinstance(d, dict) or "run_id" not in d:
            raise ValueError("not a run record")
        d = dict(d)
        version = int(d.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"record schema v{version} is newer than this medbench (v{SCHEMA_VERSION}); "
                "upgrade medbench"
            )
        if version < 2:
            d = _upgrade_v1(d)
        if d.get("config"):  # rows follow the current rules of what makes a configuration
            d["config_id"] = compute_config_id(d["config"])
        d["cost"] = Cost(**_known(Cost, d.get("cost") or {}))
        d["env"] = Env(**_known(Env, d.get("env") or {}))
        rec = cls(**{k: v for k, v in _known(cls, d).items() if k != "path"})
        rec.path = path
        return rec


def _upgrade_v1(d: dict) -> dict:
    """v1 had no config_id, kind, test_last, per_class or evaluations."""
    d["schema_version"] = SCHEMA_VERSION
    cfg = d.get("config") or {}
    d.setdefault("config_id", compute_config_id(cfg) if cfg else d["run_id"])
    spec = d.get("spec") or {}
    task = d.get("task") or spec.get("task")
    d["task"] = task
    d["kind"] = "segmentation" if task == "segmentation" else ("classification" if task else None)
    for key in ("val", "test"):
        d[key] = d.get(key) or {}
    return d


def load_record(path: str | Path) -> RunRecord:
    """The record at ``path`` (a ``record.json`` or its run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    return RunRecord.from_dict(json.loads(path.read_text()), path)


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

    def read(self, run_id: str) -> RunRecord | None:
        path = self.record_path(run_id)
        try:
            return load_record(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            log.warning("unreadable record %s (%s); treating the run as not done", path, e)
            return None

    def write(self, record: RunRecord) -> Path:
        path = self.record_path(record.run_id)
        text = json.dumps(redact(record.to_dict()), indent=2, default=str)
        atomic_write_text(path, text)
        record.path = path
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

    def find_same(self, config: dict) -> tuple[RunRecord | None, RunRecord | None]:
        """(finished, resumable) runs of the same configuration, seed and fold stored under
        another run id (trained elsewhere, or before the run-id rules changed): a finished one
        is not trained again, an interrupted one with a resume checkpoint is resumed."""
        config_id, seed = compute_config_id(config), config.get("seed")
        fold = ((config.get("data") or {}).get("cv") or {}).get("fold")
        done = resumable = None
        for rec in self.iter_records()[0]:
            rec_fold = ((rec.config.get("data") or {}).get("cv") or {}).get("fold")
            if rec.config_id != config_id or rec.seed != seed or rec_fold != fold:
                continue
            if rec.done:
                done = done or rec
            elif rec.dir and (rec.dir / "checkpoints" / "last.ckpt").exists():
                resumable = resumable or rec
        return done, resumable

    def iter_records(self) -> tuple[list[RunRecord], list[str]]:
        """All readable records, and a line for each unreadable one (never raises)."""
        records, problems = [], []
        if not self.root.exists():
            return records, problems
        for path in sorted(self.root.glob(f"*/{RECORD_FILE}")):
            try:
                records.append(load_record(path))
            except (OSError, ValueError, TypeError) as e:
                problems.append(f"{path}: {type(e).__name__}: {e}")
        return records, problems


def load_runs(
    run_dirs: Iterable[str | Path] = (), runs_dir: str | Path | None = None
) -> list[RunRecord]:
    """The records of the run folders ``run_dirs`` and of every run in the store ``runs_dir``
    (what an evaluation tool's ``--run-dir`` and ``--runs-dir`` name)."""
    records = [load_record(d) for d in run_dirs]
    if runs_dir:
        records += RunStore(runs_dir).iter_records()[0]
    return records
