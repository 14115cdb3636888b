"""Model registry: name -> builder(spec, **cfg) -> nn.Module, with what each model accepts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from bench.errors import ConfigError, ModelDataMismatchError, UnknownOptionError
from bench.spec import DataSpec


@dataclass(frozen=True)
class ModelEntry:
    """A registered model and the data it can consume (MONAI-bundle style metadata)."""

    name: str
    builder: Callable[..., nn.Module]
    kinds: tuple[str, ...] = ("classification",)
    dims: tuple[int, ...] = (2,)
    min_input_size: int = 1
    source: str = "own"
    notes: str = ""
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    kinds: tuple[str, ...] = ("classification",),
    dims: tuple[int, ...] = (2,),
    min_input_size: int = 1,
    source: str = "own",
    notes: str = "",
) -> Callable:
    """Decorator: register ``builder(spec, **kwargs) -> nn.Module`` under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, builder, kinds, dims, min_input_size, source, notes)
        return builder

    return wrap


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UnknownOptionError(
            f"unknown model {name!r}; registered models: {', '.join(available_models())} "
            "(or model=timm model.name=<any timm model>)"
        )
    return _REGISTRY[name]


def check_compatible(entry: ModelEntry, spec: DataSpec, num_classes: int | None = None) -> None:
    """Fail early, in one line, when the model cannot consume the data."""
    if spec.kind not in entry.kinds:
        raise ModelDataMismatchError(
            f"model {entry.name!r} is for {'/'.join(entry.kinds)} but data {spec.name!r} is "
            f"{spec.kind} ({spec.task}); pick a {spec.kind} model "
            f"({', '.join(n for n, e in _REGISTRY.items() if spec.kind in e.kinds)})"
        )
    if spec.spatial_dims not in entry.dims:
        want = " or ".join(f"{d}D" for d in entry.dims)
        choices = ", ".join(
            n for n, e in _REGISTRY.items() if spec.spatial_dims in e.dims and spec.kind in e.kinds
        )
        raise ModelDataMismatchError(
            f"model {entry.name!r} takes {want} inputs but data {spec.name!r} is "
            f"{spec.spatial_dims}D; use one of: {choices}"
        )
    if min(spec.input_size) < entry.min_input_size:
        raise ModelDataMismatchError(
            f"model {entry.name!r} needs inputs of at least {entry.min_input_size}px but data "
            f"{spec.name!r} is {spec.input_size}; set data.resize={entry.min_input_size} or more"
        )
    if num_classes is not None and num_classes != spec.num_outputs:
        raise ConfigError(
            f"model.num_classes={num_classes} contradicts data {spec.name!r}, which has "
            f"{spec.num_outputs} classes; remove the override (models take it from the data)"
        )
