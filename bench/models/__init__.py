"""Model zoo: ``build_model(name, spec, **cfg)`` for every registered architecture.

A new architecture is one module here (decorated with ``@register_model``) plus one YAML in
``conf/model/``; import it below so it registers.
"""

from __future__ import annotations

from torch import nn

from bench.errors import ConfigError
from bench.models import bccnn, cnn3d, timm_models, unet  # noqa: F401 - register models
from bench.models.registry import (
    ModelEntry,
    available_models,
    check_compatible,
    get_entry,
    register_model,
)
from bench.models.transfer import freeze_backbone, load_weights
from bench.spec import DataSpec

__all__ = ["ModelEntry", "available_models", "build_model", "get_entry", "register_model"]

FREEZE_OPTIONS = (None, "none", "backbone")


def build_model(
    name: str,
    spec: DataSpec,
    source: str | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    freeze: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build model ``name`` for data ``spec``.

    ``source="timm"`` treats ``name`` as any timm model name. ``weights`` loads a local file
    (after ``pretrained``), ``freeze="backbone"`` trains only the classifier.
    """
    if source == "timm":
        entry, kwargs = get_entry("timm"), {**kwargs, "variant": name}
    else:
        entry = get_entry(name)
    check_compatible(entry, spec, num_classes)
    if freeze not in FREEZE_OPTIONS:
        raise ConfigError(f"model.freeze={freeze!r} is not one of: none, backbone")
    model = entry.builder(spec, pretrained=pretrained, **kwargs)
    if weights:
        load_weights(model, weights)
    if freeze == "backbone":
        freeze_backbone(model)
    return model
