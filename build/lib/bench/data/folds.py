"""k-fold cross-validation splits over train+val: stratified, grouped by patient, seeded.

The assignment depends only on the labels, the groups, ``k`` and the fold seed, never on the
model or the training seed, so every model of a study sees the same folds.
"""

from __future__ import annotations

import hashlib

import numpy as np

from bench.errors import ConfigError


def fold_assignment(
    labels: np.ndarray, k: int, seed: int = 0, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold id (0..k-1) of every sample.

    Single-label data is stratified by class (scikit-learn's ``StratifiedKFold``, or
    ``StratifiedGroupKFold`` when ``groups`` hold patient ids, so that no patient is in two
    folds); multi-label data uses ``(Group)KFold``.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    n = len(labels)
    if k < 2:
        raise ConfigError(f"data.cv.folds must be >= 2, got {k}")
    if k > n:
        raise ConfigError(f"data.cv.folds={k} exceeds the {n} samples of train+val")
    single = labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)
    y = labels.reshape(-1) if single else None
    if y is not None:
        counts = np.bincount(y)
        rarest = int(counts[counts > 0].min())
        if rarest < k:
            raise ConfigError(
                f"data.cv.folds={k} exceeds the {rarest} samples of the rarest class; "
                "use fewer folds"
            )
    if groups is not None:
        if len(np.unique(groups)) < k:
            raise ConfigError(
                f"data.cv.folds={k} exceeds the {len(np.unique(groups))} patient groups; "
                "use fewer folds"
            )
        splitter = (
            StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            if y is not None
            else GroupKFold(k)
        )
        splits = splitter.split(np.zeros(n), y, groups)
    elif y is not None:
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y)
    else:
        splits = KFold(k, shuffle=True, random_state=seed).split(np.zeros(n))
    fold = np.full(n, -1, dtype=np.int64)
    for i, (_, val_idx) in enumerate(splits):
        fold[val_idx] = i
    return fold


def indices_digest(indices: np.ndarray) -> str:
    """A short hash of a set of sample indices (to show two runs used the same fold)."""
    return hashlib.sha256(np.sort(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()[:12]
