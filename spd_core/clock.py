"""Wall time of calls on a device, robust to a shared machine's slow spells.

CUDA: ``torch.cuda.Event`` pairs around each call, synchronised. CPU: ``time.perf_counter``.
:func:`time_interleaved` times several calls in rounds, so that a slow spell (another process,
a frequency change) falls on all of them alike; the planner's calibration and ``spd-bench`` use it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def run_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one ``fn()`` in ms."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def stats(times: list[float]) -> dict[str, Any]:
    """Median / min / max ms of ``times``, their count, and the times themselves (``runs_ms``)."""
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "runs": len(times),
        "runs_ms": times,
    }


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """:func:`stats` of each of ``fns``, timed in rounds: each round runs every function once, the
    order rotating from round to round. ``runs_ms[i]`` are round i's times; compare two functions
    with :func:`paired_ratio`."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(run_ms(fns[name], device))
    return {name: stats(t) for name, t in times.items()}


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Median over rounds of a's time / b's time (both from one :func:`time_interleaved` call)."""
    return statistics.median(x / y for x, y in zip(a["runs_ms"], b["runs_ms"], strict=True))
