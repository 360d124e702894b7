"""Standard monocular-depth metrics (NYU Depth V2 / BTS protocol), dense and sparse.

Per image, over the valid pixels (gt in (1e-3, 10], inside the Eigen crop), with predictions
clamped to [1e-3, 10]:

    abs_rel  = mean(|gt − p| / gt)          sq_rel = mean((gt − p)² / gt)
    rmse     = sqrt(mean((gt − p)²))        rmse_log = sqrt(mean((ln gt − ln p)²))
    log10    = mean(|log10 gt − log10 p|)   silog = 100 · sqrt(mean(e²) − mean(e)²), e = ln p − ln gt
    d1,d2,d3 = fraction with max(p/gt, gt/p) < 1.25, 1.25², 1.25³

Dataset numbers are the mean of the per-image values. The sparse protocol (plan §7.4) draws
K = 128 random valid pixels per image (seeded) and evaluates the queried depth there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

MIN_DEPTH = 1e-3
MAX_DEPTH = 10.0
EIGEN_CROP_480x640 = (45, 471, 41, 601)  # rows r0:r1, cols c0:c1
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
LOWER_IS_BETTER = {n: not n.startswith("d") for n in METRIC_NAMES}


def eigen_crop(h: int, w: int) -> tuple[int, int, int, int]:
    """Eigen crop (r0, r1, c0, c1): exactly 45:471, 41:601 at 480×640, the same fractions otherwise."""
    r0, r1, c0, c1 = EIGEN_CROP_480x640
    if (h, w) == (480, 640):
        return r0, r1, c0, c1
    return round(r0 * h / 480), round(r1 * h / 480), round(c0 * w / 640), round(c1 * w / 640)


def valid_mask(
    gt: np.ndarray, use_eigen_crop: bool = True, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH
) -> np.ndarray:
    """Bool [H,W]: finite gt in (min_depth, max_depth], inside the Eigen crop when asked."""
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(gt) & (gt > min_depth) & (gt <= max_depth)
    if use_eigen_crop:
        r0, r1, c0, c1 = eigen_crop(*gt.shape[-2:])
        crop = np.zeros(gt.shape[-2:], dtype=bool)
        crop[r0:r1, c0:c1] = True
        mask &= crop
    return mask


def compute_errors(
    pred: np.ndarray, gt: np.ndarray, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH
) -> dict[str, float]:
    """All metrics between matching 1-D arrays of predicted and valid ground-truth depth.

    ``pred`` is clamped to [min_depth, max_depth] (NaN predictions count as min_depth); an empty
    input gives NaN for every metric.
    """
    gt = np.asarray(gt, dtype=np.float64).reshape(-1)
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    if p.shape != gt.shape:
        raise ValueError(f"pred {p.shape} and gt {gt.shape} must have the same length")
    if gt.size == 0:
        return {n: math.nan for n in METRIC_NAMES}
    p = np.clip(np.nan_to_num(p, nan=min_depth), min_depth, max_depth)
    thresh = np.maximum(gt / p, p / gt)
    diff = gt - p
    err = np.log(p) - np.log(gt)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(err**2))),
        "log10": float(np.mean(np.abs(np.log10(gt) - np.log10(p)))),
        "silog": float(100.0 * np.sqrt(max(np.mean(err**2) - np.mean(err) ** 2, 0.0))),
        "d1": float(np.mean(thresh < 1.25)),
        "d2": float(np.mean(thresh < 1.25**2)),
        "d3": float(np.mean(thresh < 1.25**3)),
    }


def dense_metrics(pred: np.ndarray, gt: np.ndarray, use_eigen_crop: bool = True) -> dict[str, float]:
    """Metrics of a dense prediction [H,W] against gt [H,W] (same size) over the valid mask."""
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"prediction {np.shape(pred)} and ground truth {np.shape(gt)} differ in size")
    mask = valid_mask(gt, use_eigen_crop)
    return compute_errors(np.asarray(pred)[mask], np.asarray(gt)[mask])


def sample_query_pixels(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct random pixels of ``mask`` [H,W] as uv int [k,2] (u = column, v = row).

    Fewer when the mask has fewer than ``k`` valid pixels.
    """
    rows, cols = np.nonzero(mask)
    n = min(int(k), rows.size)
    pick = rng.choice(rows.size, size=n, replace=False) if n else np.zeros(0, dtype=np.int64)
    return np.stack([cols[pick], rows[pick]], axis=1).astype(np.int64)


def grid_pixels(h: int, w: int, nx: int, ny: int) -> np.ndarray:
    """A regular nx × ny grid of pixel centres, inset half a cell from the borders: [nx*ny,2]."""
    us = (np.arange(nx) + 0.5) * w / nx - 0.5
    vs = (np.arange(ny) + 0.5) * h / ny - 0.5
    uu, vv = np.meshgrid(np.round(us), np.round(vs))
    return np.stack([uu.ravel(), vv.ravel()], 1).astype(np.float32)


def query_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of the sparse protocol for image ``index``: same pixels on every run."""
    return np.random.default_rng([int(seed), int(index)])


def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean over images of each metric, skipping NaN (images without valid pixels)."""
    rows = list(rows)
    out = {}
    for n in METRIC_NAMES:
        vals = np.array([r[n] for r in rows if n in r], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[n] = float(vals.mean()) if vals.size else math.nan
    return out


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Rows = protocols (e.g. dense, sparse), columns = metrics, as a fixed-width text table."""
    head = f"{'protocol':<10}" + "".join(f"{n:>10}" for n in METRIC_NAMES)
    lines = [head, "-" * len(head)]
    for name, m in results.items():
        lines.append(f"{name:<10}" + "".join(f"{m.get(n, math.nan):>10.4f}" for n in METRIC_NAMES))
    return "\n".join(lines)
