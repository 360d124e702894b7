"""Wall time and peak memory of SPD v15 phases (encode, query K, dense + lookup, full DPT).

Times come from :mod:`spd_core.clock`. Every figure is the median of ``repeats`` runs after
``warmup`` runs; per K, windows, planned and dense + lookup are timed in interleaved rounds and
their ratios are medians of per-round ratios, so a slow spell of the machine cannot favour one.
Peak memory: CUDA ``max_memory_allocated`` above what was allocated before the phase; CPU the
peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) above the RSS before
the phase.
"""

from __future__ import annotations

import ctypes
import logging
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spd_core.clock import paired_ratio, run_ms, stats, time_interleaved
from spd_core.device import autocast
from spd_core.model.dpt_reference import dpt_for
from spd_core.model.spd_model import QUERY_CHUNK, FrameFeatures, ModelConfig, SPDModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimingConfig:
    """What one timing run measures."""

    encoder: str
    size: tuple[int, int]
    ks: tuple[int, ...]
    device: torch.device
    precision: str = "fp32"
    repeats: int = 5
    warmup: int = 1
    channels_last: bool = False
    chunk: int = 0  # queries per batched window pass of SPDModel.query; 0 = QUERY_CHUNK[device]
    seed: int = 0
    layout: str = "random"  # where the queries are (QUERY_LAYOUTS)


def time_fn(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """Median / min / max wall time of ``fn()`` in ms over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    return stats([run_ms(fn, device) for _ in range(repeats)])


def _rss_kib() -> tuple[int, int]:
    """(VmHWM, VmRSS) of this process in KiB."""
    with open("/proc/self/status") as f:
        s = f.read()
    return (int(re.search(r"VmHWM:\s+(\d+)", s).group(1)), int(re.search(r"VmRSS:\s+(\d+)", s).group(1)))


def _malloc_trim() -> bool:
    """Give freed heap memory back to the OS (glibc), so that a phase's RSS peak shows its allocations."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA max_memory_allocated above the allocation before the phase"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _rss_kib()
    except OSError:
        return "unavailable (no /proc/self/clear_refs)"
    trim = ", after glibc malloc_trim(0)" if _malloc_trim() else " (no malloc_trim: allocator reuse hides some)"
    return f"CPU peak RSS (VmHWM reset via /proc/self/clear_refs) above RSS before the phase{trim}"


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak extra memory (bytes) of one ``fn()`` run; None where it cannot be measured."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _, rss0 = _rss_kib()
        fn()
        hwm, _ = _rss_kib()
    except OSError:
        return None
    return max(0, hwm - rss0) * 1024


def sample_bilinear(depth: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Look up [B,1,H,W] at pixels uv [B,K,2] (pixel centres at integers) -> [B,K]."""
    h, w = depth.shape[-2:]
    grid = torch.stack([uv[..., 0] / (w - 1) * 2 - 1, uv[..., 1] / (h - 1) * 2 - 1], -1)[:, :, None]
    return F.grid_sample(depth, grid, mode="bilinear", align_corners=True)[:, 0, :, 0]


QUERY_LAYOUTS = ("random", "clustered")
BOX = 24  # side (px) of a detector box in the clustered layout; up to 32 queries in each


def _query_points(
    k: int, size: tuple[int, int], device: torch.device, seed: int, layout: str = "random"
) -> torch.Tensor:
    """K query pixels [1,K,2]: uniform over the image (``random``), or ``clustered`` as a detector's
    samples, 32 per 24×24 box at random places (clustered corners, keypoints of a few objects)."""
    g = torch.Generator().manual_seed(seed + k)
    (h, w), box = size, min(BOX, *size)
    if layout == "random":
        return (torch.rand(1, k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])).to(device)
    n_box = -(-k // 32)
    corners = torch.rand(n_box, 2, generator=g) * torch.tensor([w - box, h - box])
    inside = torch.rand(k, 2, generator=g) * (box - 1)
    return (corners.repeat_interleave(32, 0)[:k] + inside)[None].to(device)


@torch.inference_mode()
def run_timing(cfg: TimingConfig) -> dict[str, Any]:
    """Build a random-weight model and time every phase in this one process and run."""
    torch.manual_seed(cfg.seed)
    dev, prec = cfg.device, cfg.precision
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = SPDModel(ModelConfig(encoder=cfg.encoder)).eval().to(dev, memory_format=fmt)
    dpt = dpt_for(model.encoder).eval().to(dev, memory_format=fmt)
    x = torch.randn(1, 3, *cfg.size, generator=torch.Generator().manual_seed(cfg.seed))
    x = x.to(dev).contiguous(memory_format=fmt)

    def t(fn: Callable[[], Any]) -> dict[str, Any]:
        out = time_fn(fn, dev, cfg.repeats, cfg.warmup)
        out["peak_mem_bytes"] = peak_memory(fn, dev)
        return out

    def encoder_levels() -> list[torch.Tensor]:
        with autocast(dev, prec):
            return model.encoder(x)

    def fpn() -> torch.Tensor:
        with autocast(dev, prec):
            return model.fpn(*levels[1:])

    def dpt_decoder() -> torch.Tensor:
        with autocast(dev, prec):
            return dpt(*levels)

    log.info("timing %s %dx%d on %s (%s)", cfg.encoder, *cfg.size, dev, prec)
    phases: dict[str, Any] = {"encode": t(lambda: model.encode(x, prec))}
    feats = model.encode(x, prec)
    levels = encoder_levels()
    phases["fpn"] = t(fpn)
    phases["decode_dense"] = t(lambda: model.decode_dense(feats, prec))
    phases["dpt_decoder"] = t(dpt_decoder)
    costs = model.measure_costs(feats, prec)  # the planner's calibration, as the node does at start-up

    def planned(uv: torch.Tensor) -> Any:  # a fresh frame each run: no dense map kept from the last
        return model.execute(FrameFeatures(feats.l1, feats.local_s8, feats.size), uv, prec, cfg.chunk or None, costs)

    per_k = []
    for k in cfg.ks:
        uv = _query_points(k, cfg.size, dev, cfg.seed, cfg.layout)
        fns = {
            "query": lambda uv=uv: model.query(feats, uv, prec, chunk=cfg.chunk or None),
            "planned": lambda uv=uv: planned(uv),
            "dense_lookup": lambda uv=uv: sample_bilinear(model.decode_dense(feats, prec), uv),
        }
        timed = time_interleaved(fns, dev, cfg.repeats, cfg.warmup)
        for name, fn in fns.items():
            timed[name]["peak_mem_bytes"] = peak_memory(fn, dev)
        q, p, d = timed["query"], timed["planned"], timed["dense_lookup"]
        plan = planned(uv)[1]
        per_k.append(
            {
                "k": k,
                "query": q,
                "planned": p,
                "plan": {"mode": plan.mode, "tile": plan.tile, **plan.counts},
                "dense_lookup": d,
                "ratio": paired_ratio(q, d),
                "planned_ratio": paired_ratio(p, d),
            }
        )
        log.info(
            "K=%d query %.2f ms, planned %.2f ms (%s), dense+lookup %.2f ms",
            k,
            q["median_ms"],
            p["median_ms"],
            plan.mode,
            d["median_ms"],
        )
    return {
        "encoder": cfg.encoder,
        "size": list(cfg.size),
        "device": str(dev),
        "precision": prec,
        "channels_last": cfg.channels_last,
        "layout": cfg.layout,
        "query_chunk": cfg.chunk or QUERY_CHUNK.get(cfg.device.type, 1024),
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "threads": torch.get_num_threads(),
        "memory_method": memory_method(dev),
        "phases": phases,
        "planner_costs_ms": {"window": costs.window, "tile": costs.tile, "dense": costs.dense, "lookup": costs.lookup},
        "per_k": per_k,
        "crossover": crossover(per_k),
    }


def crossover(per_k: list[dict[str, Any]]) -> dict[str, Any]:
    """Where sparse stops being faster than dense + lookup (ratio = query / dense ≥ 1).

    ``measured_k``: the smallest measured K with ratio ≥ 1 (None when sparse wins at every K);
    ``interp_k``: the ratio interpolated linearly in K between it and the K measured before;
    ``fit_k``: query_ms = a + b·K fitted over all K (least squares), solved for the median
    dense + lookup time (it ignores the growth of the per-query time at large K).
    """
    i = next((i for i, r in enumerate(per_k) if r["ratio"] >= 1.0), None)
    measured = per_k[i]["k"] if i is not None else None
    interp = None
    if i:
        (k0, r0), (k1, r1) = ((per_k[j]["k"], per_k[j]["ratio"]) for j in (i - 1, i))
        interp = k0 + (1.0 - r0) * (k1 - k0) / (r1 - r0)
    ks = [float(r["k"]) for r in per_k]
    qs = [r["query"]["median_ms"] for r in per_k]
    fit_k = None
    if len(ks) >= 2 and len(set(ks)) >= 2:
        b, a = _linfit(ks, qs)
        dense = statistics.median(r["dense_lookup"]["median_ms"] for r in per_k)
        fit_k = (dense - a) / b if b > 0 else None
    return {"measured_k": measured, "interp_k": interp, "fit_k": fit_k}


def _linfit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx
