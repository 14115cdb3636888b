"""Hydra composition and ``instantiate`` of a config group, with typos turned into one-line errors.

``+trainer.max_epoch=1`` reaches ``Trainer.__init__`` as an unknown keyword; Hydra wraps the
``TypeError`` in an ``InstantiationException`` whose text is a traceback summary. Here it becomes
``ConfigError: trainer.max_epoch is not an option of lightning.pytorch.Trainer; did you mean
max_epochs? ...``. A :class:`~bench.errors.BenchError` raised by the target is passed through.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from bench.errors import BenchError, ConfigError
from bench.paths import conf_dir

_UNEXPECTED = re.compile(r"unexpected keyword argument '([^']+)'")


def _target_options(target: str) -> list[str]:
    try:
        module, _, name = target.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        params = inspect.signature(obj).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    return [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def instantiate_group(node: Any, group: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; an unknown option names ``group.<key>`` and the valid
    options, a user mistake inside the target keeps its own one-line error."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, BenchError):
            if isinstance(cause, TypeError) and _UNEXPECTED.search(str(cause)):
                break
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, BenchError):
            raise cause from None
        match = _UNEXPECTED.search(str(cause)) if cause is not None else None
        if match is not None:
            raise _unknown_option(group, match.group(1), str(node.get("_target_", "?"))) from None
        first = e.__cause__ or e.__context__
        if isinstance(first, (TypeError, ValueError)):  # a value the target refuses
            target = str(node.get("_target_", "?")).rsplit(".", 1)[-1]
            message = " ".join(str(first).split())[:300]
            raise ConfigError(
                f"{group}: {target} refused a value: {message}; fix the {group}.* override"
            ) from None
        raise


def _unknown_option(group: str, key: str, target: str) -> ConfigError:
    options = [o for o in _target_options(target) if o != "self"]
    close = difflib.get_close_matches(key, options, n=3)
    hint = f"did you mean {' or '.join(f'{group}.{c}' for c in close)}? " if close else ""
    listed = f" (options: {', '.join(options)})" if len(options) <= 15 else ""
    return ConfigError(
        f"{group}.{key} is not an option of {target}; {hint}fix the override{listed}"
    )


def check_group_options(node: Any, group: str, extra: tuple[str, ...] = ()) -> None:
    """Every key of ``node`` must be a parameter of its ``_target_`` (before anything runs)."""
    target = str(node.get("_target_") or "")
    options = _target_options(target) if target else []
    if not options:
        return
    for key in node:
        if key.startswith("_") or key in options or key in extra:
            continue
        raise _unknown_option(group, str(key), target)


def composition_error(e: BaseException) -> ConfigError | None:
    """Hydra's multi-line composition errors (``model.widht=3``: a key the config lacks) as one
    :class:`ConfigError` line that names the key and the fix; None for other errors."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    if not isinstance(e, (ConfigCompositionException, MissingConfigException)):
        return None
    text = " ".join(str(e).split())
    key = re.search(r"Could not override '([^']+)'", text)
    if key:
        k = key.group(1)
        return ConfigError(
            f"{k} is not a key of the composed config (a typo, or an option of another "
            f"model/data/trainer); check the spelling with `bench-train --cfg job`, or add a "
            f"new key with +{k}=..."
        )
    key = re.search(r"Could not (?:append|delete)[^']*'([^']+)'", text)
    if key:
        return ConfigError(f"{key.group(1)}: {text.split('.')[0]}; check `bench-train --cfg job`")
    return ConfigError(f"{text[:300]}; check the overrides (`bench-train --cfg job`)")


def compose_train(
    overrides: list[str] | None = None,
    paths: dict[str, str] | None = None,
    config_dir: str | None = None,
    keep_hydra: bool = False,
) -> DictConfig:
    """``train.yaml`` composed with ``overrides`` as ``bench-train`` composes it, outside a
    Hydra app. Hydra's multi-line composition errors become the one :class:`ConfigError` line
    ``bench-train`` prints; the Hydra config is registered (what a job reads of its sweep) and
    dropped (``keep_hydra``: kept, for checks of the ``hydra/`` groups); ``paths``
    (``{"runs_dir": ...}``) overrides keys of ``cfg.paths``.

    The one composition behind the Python API, the tools that compose runs (``bench-speed``,
    ``bench-data check data=...``) and the tests."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir or conf_dir()), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides or []), return_hydra_config=True)
    except Exception as e:
        mistake = composition_error(e)
        if mistake is None:
            raise
        raise mistake from None
    finally:
        GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        for key, value in (paths or {}).items():
            cfg.paths[key] = str(value)
        if not keep_hydra:
            del cfg.hydra
    return cfg
