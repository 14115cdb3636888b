"""Model registry: name -> builder(spec, **options) -> nn.Module, with what each model accepts.

A builder's signature is its documentation: the options it names are the only ones a config may
set for it (``check_options`` turns any other into a one-line error that lists them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from bench.errors import ModelDataMismatchError, UnknownOptionError
from bench.spec import DataSpec


@dataclass(frozen=True)
class ModelEntry:
    """A registered model and the data it can consume (MONAI-bundle style metadata)."""

    name: str
    builder: Callable[..., nn.Module]
    kinds: tuple[str, ...] = ("classification",)
    dims: tuple[int, ...] = (2,)
    min_input_size: int = 1
    notes: str = ""

    @property
    def options(self) -> list[str]:
        """The options this model's builder takes (besides the data spec)."""
        params = inspect.signature(self.builder).parameters
        return [n for n, p in params.items() if n != "spec" and p.kind is p.KEYWORD_ONLY]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    kinds: tuple[str, ...] = ("classification",),
    dims: tuple[int, ...] = (2,),
    min_input_size: int = 1,
    notes: str = "",
) -> Callable:
    """Decorator: register ``builder(spec, *, option=default, ...) -> nn.Module`` as ``name``.

    Options must be keyword-only, so that the signature lists exactly what a config may set.
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, builder, kinds, dims, min_input_size, notes)
        return builder

    return wrap


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UnknownOptionError(
            f"unknown model {name!r}; registered models: {', '.join(available_models())} "
            "(or model=timm model.variant=<any timm model>)"
        )
    return _REGISTRY[name]


def check_options(entry: ModelEntry, options: dict) -> None:
    """Every option must be one the builder takes; typos and misplaced options fail here."""
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        took = ", ".join(entry.options) or "none"
        raise UnknownOptionError(
            f"model {entry.name!r} does not take {', '.join(f'model.{k}' for k in unknown)}; "
            f"its options are: {took} (plus weights, freeze)"
        )


def check_compatible(entry: ModelEntry, spec: DataSpec) -> None:
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
