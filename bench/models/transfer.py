"""Transfer learning: load local weights safely, adapt the first conv and head, freeze."""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn

from bench.errors import WeightsError

log = logging.getLogger(__name__)

_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_state_dict")
_LIGHTNING_PREFIXES = ("model.", "module.", "net.")


def classifier_module_name(model: nn.Module) -> str:
    """Dotted name of the model's classifier (timm's ``get_classifier()`` protocol)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, module in model.named_modules():
        if module is head:
            return name
    raise WeightsError(f"{type(model).__name__} has no get_classifier(); cannot locate its head")


def read_state_dict(path: str | Path, like: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict (plain, timm or Lightning checkpoint) with ``weights_only=True``.

    One wrapper prefix (``model.``, ``module.``, ``net.``) is stripped when every key has it,
    unless the keys already fit ``like`` as they are (a network whose own top module is
    ``net`` or ``model``, such as a padded MONAI UNet)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; check model.weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise WeightsError(
            f"{path} is not a loadable weights file ({type(e).__name__}); give a state dict "
            "saved with torch.save(model.state_dict(), path) or a Lightning checkpoint"
        ) from None
    lightning = isinstance(obj, dict) and "pytorch-lightning_version" in obj
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if lightning and isinstance(obj, dict) and any(k.startswith("model.") for k in obj):
        # a bench task checkpoint: the network is the task's ``model`` submodule
        obj = {k: v for k, v in obj.items() if k.startswith("model.")}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors; save "
            "model.state_dict() instead of the model object"
        )
    if like is not None and set(obj) == set(like.state_dict()):
        return obj
    for prefix in _LIGHTNING_PREFIXES:  # one wrapper prefix: a network may own a "model"
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
            break
    return obj


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model``: the first conv is adapted to the input channels the way
    timm does, the head is kept fresh when its shape differs (new classes); any other mismatch
    is an error naming the layers."""
    state = read_state_dict(path, like=model)
    own = model.state_dict()
    head = classifier_module_name(model)
    first_conv = next((k for k, v in own.items() if k.endswith("weight") and v.ndim >= 4), None)
    adapted, skipped_head, bad = {}, [], []
    for key, value in state.items():
        if key not in own:
            continue
        want = own[key].shape
        if value.shape == want:
            adapted[key] = value
        elif key == first_conv and value.shape[0] == want[0] and value.shape[2:] == want[2:]:
            adapted[key] = adapt_input_conv(want[1], value)
        elif key.startswith(head + "."):
            skipped_head.append(key)
        else:
            bad.append(f"{key} {tuple(value.shape)} vs {tuple(want)}")
    if bad:
        raise WeightsError(
            f"{path} does not fit this model: {'; '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}; check model.name/variant match the weights"
        )
    missing = [k for k in own if k not in adapted and not k.startswith(head + ".")]
    if len(missing) == len(own) or (missing and len(adapted) == 0):
        raise WeightsError(f"{path} shares no layer names with {type(model).__name__}")
    if missing:
        raise WeightsError(
            f"{path} lacks {len(missing)} layers of this model (e.g. {missing[0]}); "
            "check model.name/variant match the weights"
        )
    model.load_state_dict(adapted, strict=False)
    log.info(
        "loaded %d tensors from %s%s",
        len(adapted),
        path,
        f" (new head: {len(skipped_head)} tensors re-initialised)" if skipped_head else "",
    )


def freeze_backbone(model: nn.Module) -> None:
    """Freeze everything but the classifier (linear probe)."""
    head = classifier_module_name(model)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(head + ".")
