"""MAC counting with ``torch.utils.flop_counter`` (1 MAC = 2 FLOPs; convs and matmuls only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn()`` and return (total MACs, MACs per module path as the counter names them)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    per_module = {name: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops() // 2, per_module
