"""A plain PyTorch loop at the official MedMNIST protocol, to check the harness against.

Adam 1e-3, LR x0.1 at 50 % and 75 % of the epochs, batch 128 (2D) / 32 (3D), every training
image each epoch, no augmentation, fp32; the same model builder (the paper's architecture and
PyTorch's default initialisation), the same file, the same seeds. Reports the test AUC/ACC of the
best-validation weights (a real copy) and of the last epoch's weights. If the harness differs
from this loop by more than seed noise, the harness has a bug.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.medmnist import MedMNISTDataModule
from bench.metrics import classification_metrics
from bench.models import build_model
from bench.paths import conf_dir
from bench.speed.runners import model_options
from bench.toolkit import resolve_device


def _one_epoch(net, opt, x, y, perm, batch_size: int, prep) -> None:
    """One pass over the training split in the order ``perm``, as the official script."""
    import torch.nn.functional as F

    net.train()
    for i in range(0, len(perm), batch_size):
        idx = perm[i : i + batch_size]
        if len(idx) < 2:  # BatchNorm cannot take a lone sample
            continue
        loss = F.cross_entropy(net(prep(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def plain_protocol_run(
    flag: str,
    data_dir: str,
    model: dict,
    seed: int,
    epochs: int = 100,
    device: str = "cpu",
    batch_size: int | None = None,
) -> dict:
    """Train ``model`` (build_model keyword arguments) on ``flag`` the official way."""
    import torch

    is3d = flag.endswith("3d")
    batch_size = batch_size or (32 if is3d else 128)
    mean, std = (0.0, 1.0) if is3d else (0.5, 0.5)
    torch.manual_seed(seed)
    np.random.seed(seed)
    dm = MedMNISTDataModule(flag, root=data_dir, download=False, batch_size=batch_size)
    spec = dm.spec
    splits = dm.prepared_splits()

    def tensors(k):
        x, y = splits[k]
        return (
            torch.as_tensor(np.asarray(x)).to(device),
            torch.as_tensor(np.asarray(y).reshape(-1)).long().to(device),
        )

    (xtr, ytr), (xva, yva), (xte, yte) = (tensors(k) for k in ("train", "val", "test"))
    net = build_model(spec=spec, **model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[0.5 * epochs, 0.75 * epochs], gamma=0.1
    )
    gen = torch.Generator().manual_seed(seed)

    def prep(x):
        return (x.float() / 255 - mean) / std

    def scores(x):
        net.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                out.append(torch.softmax(net(prep(x[i : i + 256])), 1))
        return torch.cat(out)

    best_auc, best_state, best_epoch = -1.0, None, -1
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen).to(device)
        _one_epoch(net, opt, xtr, ytr, perm, batch_size, prep)
        sched.step()
        auc = classification_metrics(yva, scores(xva), spec.task, ("auc",))["auc"]
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch
            best_state = copy.deepcopy(net.state_dict())
    last = classification_metrics(yte, scores(xte), spec.task, ("auc", "acc"))
    net.load_state_dict(best_state)
    best = classification_metrics(yte, scores(xte), spec.task, ("auc", "acc"))
    return {
        "flag": flag,
        "seed": seed,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "val_auc_best": best_auc,
        "test_auc": best["auc"],
        "test_acc": best["acc"],
        "last_auc": last["auc"],
        "last_acc": last["acc"],
        "seconds": round(time.perf_counter() - t0, 1),
        "device": device,
    }


def plain_protocol(args) -> int:
    """``bench-speed protocol FLAG``: the plain loop over ``--seeds``, one CSV row per seed."""
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = model_options(args.model, conf_dir())
    rows = []
    for seed in args.seeds:
        row = plain_protocol_run(
            args.plain_protocol, args.data_dir, options, seed, args.protocol_epochs, device
        )
        row["model"] = args.model
        rows.append(row)
        print(json.dumps(row), flush=True)
        with (out / "plain_protocol.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
    pd.DataFrame(rows).to_csv(
        out / f"plain_protocol_{args.plain_protocol}_{args.model}.csv", index=False
    )
    return 0
