"""Probes on frozen features (MedMNIST+ style): ``probe=linear`` (a linear classifier trained on
the backbone's features) and ``probe=knn`` (k nearest neighbours, cosine distance, k=11).

The backbone (any timm model, with ImageNet weights or a local file in ``model.weights``) runs
once over every split; its pooled features (timm's ``pre_logits``) are cached under
``${paths.data_dir}/features`` keyed by the model, its weights and the data, so a second probe
of the same backbone reads them back. The run writes an ordinary record (scheme
``linear_probe`` or ``knn``), predictions and per-class rows, so probes rank beside end-to-end
training in the same leaderboard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bench.costs import gmacs, param_counts
from bench.errors import ConfigError
from bench.io import atomic_save
from bench.metrics import classification_metrics
from bench.records import Cost, RunRecord

log = logging.getLogger("bench.train")

PROBES = {"linear": "linear_probe", "knn": "knn"}


def _features_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "forward_head") and hasattr(model, "forward_features"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    head = model.get_classifier()
    saved = head.forward
    head.forward = lambda t: t  # the input of the classifier is the feature vector
    try:
        return model(x)
    finally:
        head.forward = saved


def extract(
    model: torch.nn.Module, datamodule, split: str, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), labels) of a split, in the datamodule's preprocessing."""
    ds = datamodule.splits[split]
    feats, labels = [], []
    model.eval().to(device)
    with torch.no_grad():
        for start in range(0, len(ds), 256):
            idx = torch.arange(start, min(start + 256, len(ds)))
            x, y, _ = ds[idx]
            x, y = datamodule.preprocess(x.to(device), y.to(device), training=False)
            feats.append(_features_of(model, x).flatten(1).float().cpu())
            labels.append(y.cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def _cache_key(cfg: DictConfig) -> str:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    weights = model.get("weights")
    stamp = None
    if weights and Path(weights).exists():
        st = Path(weights).stat()
        stamp = (st.st_size, int(st.st_mtime))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for k in ("batch_size", "eval_batch_size", "num_workers", "seed", "augment", "sampler"):
        data.pop(k, None)
    payload = json.dumps([model, stamp, data], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def features(
    cfg: DictConfig, datamodule, model, device: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split's features, from the cache when this backbone saw this data before."""
    path = Path(cfg.paths.data_dir) / "features" / f"{cfg.model.name}-{_cache_key(cfg)}.npz"
    if path.exists():
        with np.load(path) as npz:
            log.info("features read from %s", path)
            return {s: (npz[f"{s}_x"], npz[f"{s}_y"]) for s in ("train", "val", "test")}
    datamodule.setup()
    out = {s: extract(model, datamodule, s, device) for s in ("train", "val", "test")}
    arrays = {f"{s}_{k}": v for s, (x, y) in out.items() for k, v in (("x", x), ("y", y))}
    atomic_save(path, lambda f: np.savez(f, **arrays))
    log.info("features of %s cached in %s", cfg.model.name, path)
    return out


def fit_probe(kind: str, train: tuple, task: str, k: int = 11, seed: int = 0):
    """A scikit-learn classifier on the training features (standardised for the linear one)."""
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = train
    if kind == "knn":
        clf = KNeighborsClassifier(n_neighbors=min(k, len(x)), metric="cosine")
    else:
        from sklearn.linear_model import LogisticRegression

        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    if task == "multi-label":
        clf = OneVsRestClassifier(clf)
    return clf.fit(x, y.reshape(len(y), -1) if task == "multi-label" else y.reshape(-1))


def probe_scores(clf, x: np.ndarray, num_classes: int, task: str) -> np.ndarray:
    """Probabilities (N, C) with every class present (a class absent from train scores 0)."""
    proba = clf.predict_proba(x)
    if task == "multi-label":
        return np.asarray(proba, dtype=np.float32)
    out = np.zeros((len(x), num_classes), dtype=np.float32)
    out[:, np.asarray(clf.classes_, dtype=int)] = proba
    return out


def run_probe(cfg: DictConfig, record: RunRecord) -> dict:
    """Extract (or read) features, fit the probe, score val and test; fill ``record``.

    Returns the per-sample outputs by split for the run folder's files.
    """

    kind = cfg.probe.kind
    if kind not in PROBES:
        raise ConfigError(f"probe.kind={kind!r} is not one of: {', '.join(PROBES)}")
    datamodule = instantiate(cfg.data)
    spec = datamodule.spec
    if spec.kind != "classification":
        raise ConfigError("probes are for classification data")
    model = instantiate(cfg.model, _partial_=True, _convert_="all")(spec=spec)
    device = (
        "cuda" if torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu" else "cpu"
    )
    record.spec = spec.to_dict()
    record.dataset, record.task, record.kind = spec.name, spec.task, spec.kind
    record.scheme = PROBES[kind]
    record.epochs = None
    record.cost = Cost(
        **param_counts(model), gmacs=gmacs(model, spec), input_size=list(spec.input_size)
    )
    t0 = time.perf_counter()
    feats = features(cfg, datamodule, model, device)
    record.split_sizes = {s: len(v[0]) for s, v in feats.items()}
    clf = fit_probe(
        kind, feats["train"], spec.task, int(cfg.probe.get("k", 11)), int(cfg.seed or 0)
    )
    outputs = {}
    for split in ("val", "test"):
        x, y = feats[split]
        score = probe_scores(clf, x, spec.num_classes, spec.task)
        metrics = classification_metrics(y, score, spec.task)
        setattr(record, split, metrics)
        outputs[split] = {
            "index": torch.arange(len(y)),
            "target": torch.as_tensor(
                y.reshape(len(y), -1) if spec.task == "multi-label" else y.reshape(-1)
            ),
            "score": torch.as_tensor(score),
        }
    record.test_last = dict(record.test)
    record.cost.train_time_s = round(time.perf_counter() - t0, 3)
    record.env.device = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return outputs
