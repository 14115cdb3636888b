"""What the processor can do, asked once where a choice depends on it."""

from __future__ import annotations

import contextlib

import torch


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles); elsewhere bf16 is
    emulated and slower than fp32, so no preset picks it there."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None) or getattr(torch._C, f"_cpu{probe}", None)
        with contextlib.suppress(Exception):
            if fn is not None and fn():
                return True
    return False


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels dispatch to here (``AVX512``, ``AVX2``,
    ``DEFAULT``, ...): which kernels run, hence which precision and layout are fastest."""
    return str(torch.backends.cpu.get_cpu_capability())
