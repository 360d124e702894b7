"""Devices and mixed precision: "auto|cpu|cuda[:N]" to a checked torch.device, and
"fp32|fp16|bf16" to an autocast context."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise ValueError for an unknown precision or one the device cannot autocast to."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "fp16" and torch.device(device).type == "cpu":
        raise ValueError("precision fp16 needs CUDA; on the CPU use bf16 or fp32")


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Autocast to fp16/bf16 on ``device``; a no-op context for fp32."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu', 'cuda', 'cuda:N' as given (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available; use device=cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not auto, cpu, cuda or cuda:N")
    return dev
