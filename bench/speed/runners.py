"""Three ways to train the same model on the same data, timed alike (timm ``benchmark.py`` style:
small runner classes over one interface).

- :class:`HarnessRunner`   - bench's whole Lightning path (``bench.job.entry.train``), timed from
  the run record (``cost.epoch_time_s``, ``cost.train_time_s``);
- :class:`RawRunner`       - a minimal loop over the same preloaded uint8 tensors (same model,
  precision, batch size, optimiser), one validation pass per epoch: the lower bound;
- :class:`ReferenceRunner` - the official MedMNIST script's pipeline: medmnist's Dataset +
  ToTensor + Normalize(.5, .5) through a DataLoader (per-item PIL), and scoring train, val and
  test every epoch, in fp32.

Each returns one row: ``epoch_time_s`` (median epoch after the first, which pays warm-up),
``fit_time_s``, ``train_samples_per_sec``, ``infer_samples_per_sec``, ``val_auc``.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bench.data.medmnist import MedMNISTDataModule
from bench.job.entry import train
from bench.job.instantiate import compose_train
from bench.metrics import classification_metrics
from bench.models import build_model
from bench.paths import conf_dir
from bench.records import load_record

EVAL_BATCH = 256  # harness and raw loop alike; the reference keeps its 128
# model key -> (conf/model option, extra overrides)
MODELS = {
    "bccnn": ("bccnn", []),
    "resnet18_ss": ("paper_resnet18", []),
    "resnet50_ss": ("paper_resnet50", []),
    "resnet50": ("resnet50", []),  # timm's ImageNet stem: the CPU table's ResNet-50
    "mobilenetv2": ("mobilenet", []),
}
# precision key -> (Lightning precision, channels_last, torch.compile mode or None)
PRECISIONS = {
    "32": ("32-true", False, None),
    "32_cl": ("32-true", True, None),
    "bf16_cl": ("bf16-mixed", True, None),
    "bf16_cl_compile": ("bf16-mixed", True, "default"),
}


@dataclass(frozen=True)
class Setting:
    """One cell of the table: model x precision on one dataset and device."""

    model: str
    precision: str = "32"
    flag: str = "pneumoniamnist"
    data_dir: str = "data/medmnist"
    train_limit: int | None = None
    seed: int = 0
    device: str = "cpu"
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    # more harness overrides (e.g. a profiling callback)
    extra: tuple[str, ...] = ()


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


@contextmanager
def gpu_monitor(device: str, period_s: float = 0.05):
    """Sample NVML GPU utilisation while the block runs; yields a dict filled on exit."""
    out: dict = {}
    if device != "cuda":
        yield out
        return
    import torch

    samples: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                samples.append(torch.cuda.utilization())
            except Exception:  # no NVML: leave the column empty rather than fail the benchmark
                return
            stop.wait(period_s)

    torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["gpu_util_pct"] = round(sum(samples) / len(samples), 1) if samples else None
        out["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def summarise_epochs(epochs: list[tuple[float, float, int, float]], n_eval: int) -> dict:
    """Per-epoch (train s, eval s, train samples, val AUC) -> the row's timing columns."""
    later = epochs[1:] or epochs  # the first epoch also pays warm-up (cuDNN autotune, caches)
    t_train, t_eval, n, _ = (statistics.median(col) for col in zip(*later, strict=True))
    return {
        "epoch_time_s": round(statistics.median(t + e for t, e, _, _ in later), 4),
        "fit_time_s": round(sum(t + e for t, e, _, _ in epochs), 4),
        "train_samples_per_sec": round(n / t_train, 2),
        "infer_samples_per_sec": round(n_eval / t_eval, 2),
        "val_auc": epochs[-1][3],
    }


class Runner:
    """Trains ``setting`` and returns its timing row."""

    name = "runner"

    def run(self, setting: Setting) -> dict:
        raise NotImplementedError


def compose_in_temp_store(overrides: list[str], prefix: str):
    """``conf/train.yaml`` composed with ``overrides`` as ``bench-train`` does, writing its runs
    and outputs under a fresh temporary folder (a measurement, not a result to keep)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    return compose_train(overrides, paths={"runs_dir": tmp / "runs", "output_dir": tmp / "out"})


class HarnessRunner(Runner):
    """``bench.job.entry.train`` on a composed config, as ``bench-train`` runs it."""

    name = "harness"

    def overrides(self, s: Setting) -> list[str]:
        model, extra = MODELS[s.model]
        precision, cl, compile_mode = PRECISIONS[s.precision]
        out = [
            f"data={s.flag}",
            f"data.root={s.data_dir}",
            "data.download=false",
            f"model={model}",
            "logger=none",
            f"trainer.max_epochs={s.epochs}",
            f"trainer.precision={precision}",
            f"task.channels_last={str(cl).lower()}",
            f"task.compile={compile_mode or 'false'}",
            f"task.optimizer.lr={s.lr}",
            "trainer.enable_progress_bar=false",
            f"data.batch_size={s.batch_size}",
            f"data.eval_batch_size={EVAL_BATCH}",
            f"seed={s.seed}",
            "checkpoint.keep=none",
            "+force=true",
            f"trainer.accelerator={'gpu' if s.device == 'cuda' else 'cpu'}",
            f"trainer.benchmark={str(s.device == 'cuda').lower()}",
            *extra,
            *s.extra,
        ]
        if s.train_limit:
            out.append(f"data.limit={s.train_limit}")
        return out

    def run(self, s: Setting) -> dict:
        cfg = compose_in_temp_store(self.overrides(s), prefix="speed-")
        t0 = time.perf_counter()
        outcome = train(cfg)
        wall = time.perf_counter() - t0
        if outcome.status != "done":
            raise RuntimeError(outcome.error)
        rec = load_record(outcome.record_path)
        c = rec.cost
        return {
            "epoch_time_s": c.epoch_time_s,
            "fit_time_s": c.train_time_s,
            "train_samples_per_sec": c.train_samples_per_sec,
            "infer_samples_per_sec": c.infer_samples_per_sec,
            "val_auc": rec.val.get("auc"),
            "wall_incl_test_s": round(wall, 2),
            "ran_on": rec.env.device,
        }


def _datamodule(s: Setting):

    dm = MedMNISTDataModule(
        s.flag,
        root=s.data_dir,
        download=False,
        limit=s.train_limit,
        seed=s.seed,
        batch_size=s.batch_size,
    )
    dm.setup()
    return dm


class RawRunner(Runner):
    """A plain loop over device-resident tensors; the fastest honest version of the same work."""

    name = "raw"

    def run(self, s: Setting) -> dict:
        import numpy as np
        import torch
        import torch.nn.functional as F

        torch.manual_seed(s.seed)
        dm = _datamodule(s)
        spec = dm.spec
        model_cfg = model_options(MODELS[s.model][0], conf_dir())
        precision, cl, compile_mode = PRECISIONS[s.precision]
        torch.backends.cudnn.benchmark = s.device == "cuda"
        net = build_model(spec=spec, **model_cfg).to(s.device)
        if cl:
            net = net.to(memory_format=torch.channels_last)
        fwd = torch.compile(net, mode=compile_mode) if compile_mode else net
        opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        tr, va = (
            {
                "x": torch.as_tensor(np.asarray(dm.splits[k].images)).to(s.device),
                "y": torch.as_tensor(np.asarray(dm.splits[k].targets)).to(s.device),
            }
            for k in ("train", "val")
        )
        mean, std = dm.mean, dm.std

        def prep(x):
            x = (x.float() / 255 - mean) / std
            return x.contiguous(memory_format=torch.channels_last) if cl else x

        def ctx():
            if precision.startswith("bf16"):
                return torch.autocast(s.device, dtype=torch.bfloat16)
            return torch.autocast(s.device, enabled=False)

        bs = s.batch_size

        def epoch() -> tuple[float, float, int, float]:
            sync(s.device)
            t0 = time.perf_counter()
            net.train()
            n = 0
            perm = torch.randperm(len(tr["x"]), device=s.device)
            for i in range(0, len(perm), bs):
                idx = perm[i : i + bs]
                if len(idx) < 2:  # a lone sample: BatchNorm cannot take it (the harness agrees)
                    continue
                x, y = tr["x"][idx], tr["y"][idx]
                with ctx():
                    loss = F.cross_entropy(fwd(prep(x)).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n += len(y)
            sync(s.device)
            t_train = time.perf_counter() - t0
            net.eval()
            scores = []
            t1 = time.perf_counter()
            with torch.no_grad(), ctx():
                for i in range(0, len(va["x"]), EVAL_BATCH):
                    scores.append(torch.softmax(net(prep(va["x"][i : i + EVAL_BATCH])).float(), 1))
            auc = classification_metrics(va["y"], torch.cat(scores), spec.task, ("auc",))["auc"]
            return t_train, time.perf_counter() - t1, n, auc

        return summarise_epochs([epoch() for _ in range(s.epochs)], len(va["x"]))


def model_options(option: str, conf: Path) -> dict:
    """A conf/model YAML as build_model keyword arguments (minus Hydra's ``_target_``)."""
    import yaml

    cfg = yaml.safe_load((conf / "model" / f"{option}.yaml").read_text())
    cfg.pop("_target_", None)
    return cfg


class ReferenceRunner(Runner):
    """The official script's pipeline: per-item PIL through a DataLoader, three evals an epoch."""

    name = "reference"

    def run(self, s: Setting) -> dict:
        import medmnist
        import numpy as np
        import torch
        import torch.nn.functional as F
        import torchvision.transforms as T
        from torch.utils.data import DataLoader, Subset

        torch.manual_seed(s.seed)
        torch.backends.cudnn.benchmark = False  # the official script's default
        info = medmnist.INFO[s.flag]
        data_class = getattr(medmnist, info["python_class"])
        tf = T.Compose([T.ToTensor(), T.Normalize(mean=[0.5], std=[0.5])])
        sets = {
            k: data_class(split=k, transform=tf, download=False, root=s.data_dir)
            for k in ("train", "val", "test")
        }
        train_set = sets["train"]
        if s.train_limit:
            pick = np.random.default_rng(s.seed).choice(len(train_set), s.train_limit, False)
            train_set = Subset(train_set, pick)
        spec = MedMNISTDataModule(s.flag, root=s.data_dir, download=False).spec
        net = build_model(spec=spec, **model_options(MODELS[s.model][0], conf_dir())).to(s.device)
        opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        loader = DataLoader(train_set, batch_size=128, shuffle=True)

        def epoch() -> tuple[float, float, int, float]:
            t0 = time.perf_counter()
            net.train()
            n = 0
            for x, y in loader:
                x, y = x.to(s.device), y.to(s.device)
                loss = F.cross_entropy(net(x), y.squeeze(1).long())
                opt.zero_grad()
                loss.backward()
                opt.step()
                n += len(y)
            sync(s.device)
            t_train = time.perf_counter() - t0
            aucs, t1 = {}, time.perf_counter()
            for split in ("train", "val", "test"):  # as the official script: all three each epoch
                net.eval()
                scores, ys = [], []
                with torch.no_grad():
                    for x, y in DataLoader(sets[split], batch_size=128, shuffle=False):
                        scores.append(torch.softmax(net(x.to(s.device)), 1).cpu())
                        ys.append(y.squeeze(1))
                aucs[split] = classification_metrics(
                    torch.cat(ys), torch.cat(scores), spec.task, ("auc",)
                )["auc"]
            return t_train, time.perf_counter() - t1, n, aucs["val"]

        n_eval = sum(len(sets[k]) for k in ("train", "val", "test"))
        return summarise_epochs([epoch() for _ in range(s.epochs)], n_eval)


RUNNERS: dict[str, type[Runner]] = {r.name: r for r in (HarnessRunner, RawRunner, ReferenceRunner)}


def measure(runner: Runner, setting: Setting) -> dict:
    """One timed row (with GPU utilisation and memory on CUDA); errors become an ``error`` cell."""
    import traceback

    row = {"model": setting.model, "method": runner.name, "precision": setting.precision}
    try:
        with gpu_monitor(setting.device) as gpu:
            row.update(runner.run(setting))
        row.update(gpu)
    except Exception as e:  # one failed cell must not cost the table
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc(limit=8)
    return row


__all__ = ["MODELS", "PRECISIONS", "RUNNERS", "Setting", "measure", "replace"]
