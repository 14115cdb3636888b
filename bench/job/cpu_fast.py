"""``trainer=cpu_fast``: the precision and memory layout the CPU roofline measured fastest for
the architecture, resolved before the run id is computed.

The preset leaves ``trainer.precision`` and ``task.channels_last`` at ``auto``; here they become
the values ``execution.cpu_fast`` lists for this CPU's capability (torch's kernel dispatch:
``AVX512``, ``AVX2``; each measured by its own roofline) and the model (``<name>`` or
``<name>_smallstem``, else ``default``). bf16 only on a CPU that computes it natively; elsewhere
fp32 in the layout fastest in fp32 (``fp32_channels_last``). A capability no roofline measured
trains fp32 NCHW, the baseline. The resolved values are what the record's config holds and
what the run id and config id hash, so fp32 and bf16 runs are never pooled into one leaderboard
row. One log line per run says what was chosen and why.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, open_dict

from bench.errors import ConfigError
from bench.hardware import cpu_bf16_native, cpu_capability

log = logging.getLogger("bench.train")
AUTO = "auto"


def model_key(model: DictConfig) -> str:
    """The roofline's name of the configured architecture (the paper's small-stem ResNets are
    another network than timm's at 28²)."""
    name = str(model.get("name"))
    return f"{name}_smallstem" if model.get("small_input_stem") else name


def resolve_auto_settings(cfg: DictConfig) -> None:
    """Replace ``auto`` precision / memory layout by the preset's choice for the model."""
    trainer, task = cfg.get("trainer") or {}, cfg.get("task") or {}
    auto_precision = trainer.get("precision") == AUTO
    auto_layout = task.get("channels_last") == AUTO
    if not (auto_precision or auto_layout):
        return
    table = (cfg.get("execution") or {}).get("cpu_fast") or {}
    precision, layout, why = preset_choice(table, model_key(cfg.model))
    with open_dict(cfg):
        if auto_precision:
            cfg.trainer.precision = precision
        if auto_layout:
            cfg.task.channels_last = layout
    log.info(
        "trainer=cpu_fast: %s with %s (%s)",
        cfg.trainer.precision,
        "channels-last" if cfg.task.channels_last else "NCHW",
        why,
    )


def preset_choice(table, key: str) -> tuple[str, bool, str]:
    """(precision, channels-last, why) that the ``execution.cpu_fast`` table gives the model
    ``key`` (else its ``default``) on this CPU: the table of its capability, bf16 only where
    the CPU computes it natively."""
    if not table:
        raise ConfigError(
            "trainer.precision=auto / task.channels_last=auto need execution.cpu_fast "
            "(use trainer=cpu_fast, or set both explicitly)"
        )
    capability = cpu_capability()
    measured = table.get(capability)
    if measured is None:
        why = (
            f"no roofline was measured on a CPU like this one ({capability}): fp32 NCHW, the "
            "baseline; `bench-speed roofline` measures it"
        )
        return "32-true", False, why
    choice = measured.get(key) or measured["default"]
    precision, layout = str(choice["precision"]), bool(choice["channels_last"])
    which = key if key in measured else "models it did not measure"
    why = f"the {capability} roofline's choice for {which}"
    if precision.startswith("bf16") and not cpu_bf16_native():
        precision, layout = "32-true", bool(choice.get("fp32_channels_last", layout))
        why = f"{why}, but this CPU has no native bf16: fp32 in its fastest fp32 layout"
    return precision, layout, why
