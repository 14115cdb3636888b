"""Cost facts for the record: parameter counts and GMACs at the run's input size."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.spec import DataSpec


def param_counts(model: nn.Module) -> dict[str, int]:
    return {
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def gmacs(model: nn.Module, spec: DataSpec) -> float | None:
    """Multiply-accumulates (1e9) for one sample, via torch's own FLOP counter (FLOPs / 2)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.zeros(1, spec.in_channels, *spec.input_size, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() / 2 / 1e9
    except Exception:  # an exotic op the counter cannot trace must not fail a run
        return None
    finally:
        model.train(was_training)
