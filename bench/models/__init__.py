"""Model zoo: ``build_model(name, spec, **options)`` for every registered architecture.

A new architecture is one module here (a builder decorated with ``@register_model`` whose
keyword-only parameters are its options) plus one YAML in ``conf/model/``; import it below so it
registers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.errors import ConfigError
from bench.models import (  # noqa: F401 - register
    baselines,
    bccnn,
    cnn3d,
    medmnist_resnet,
    segmentation_nets,
    timm_models,
    unet,
)
from bench.models.registry import (
    ModelEntry,
    available_models,
    check_compatible,
    check_options,
    get_entry,
    register_model,
)
from bench.models.transfer import freeze_backbone, load_weights
from bench.spec import DataSpec

__all__ = [
    "BuildInfo",
    "ModelEntry",
    "available_models",
    "build_info",
    "build_model",
    "get_entry",
    "register_model",
]

FREEZE_OPTIONS = (None, "none", "backbone")


@dataclass(frozen=True)
class BuildInfo:
    """What was built: where the weights came from, what is frozen, which stem."""

    init: str = "scratch"  # scratch | imagenet | weights
    frozen: bool = False
    small_stem: bool = False

    @property
    def scheme(self) -> str:
        """The leaderboard's training-scheme label, e.g. ``imagenet-frozen``."""
        return (
            self.init
            + ("-frozen" if self.frozen else "")
            + ("-smallstem" if self.small_stem else "")
        )


def build_info(model: nn.Module) -> BuildInfo:
    """The :class:`BuildInfo` that :func:`build_model` attached (scratch for foreign models)."""
    return model.__dict__.get("medbench_build", BuildInfo())


def build_model(
    name: str,
    spec: DataSpec,
    weights: str | None = None,
    freeze: str | None = None,
    num_classes: int | None = None,
    **options,
) -> nn.Module:
    """Build model ``name`` for data ``spec`` with the builder's own ``options``.

    ``weights`` loads a local file (after any ``pretrained`` weights), ``freeze="backbone"``
    trains only the classifier. Options the builder does not take are a one-line error.
    """
    entry = get_entry(name)
    check_options(entry, options)
    check_compatible(entry, spec)
    if num_classes is not None and num_classes != spec.num_outputs:
        raise ConfigError(
            f"model.num_classes={num_classes} contradicts data {spec.name!r}, which has "
            f"{spec.num_outputs} classes; remove the override (models take it from the data)"
        )
    if freeze not in FREEZE_OPTIONS:
        raise ConfigError(f"model.freeze={freeze!r} is not one of: none, backbone")
    model = entry.builder(spec, **options)
    init = "imagenet" if options.get("pretrained") else "scratch"
    if weights:
        load_weights(model, weights)
        init = "weights"
    if freeze == "backbone":
        freeze_backbone(model)
    # kept in __dict__: not a submodule, not in the state dict
    model.__dict__["medbench_build"] = BuildInfo(
        init=init, frozen=freeze == "backbone", small_stem=bool(options.get("small_input_stem"))
    )
    return model
