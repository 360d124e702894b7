"""Figures for evaluation and TensorBoard: RGB | GT | prediction | error, with query points.

Uses matplotlib's Agg canvas directly (no display, no global backend switch).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _range(*maps: np.ndarray) -> tuple[float, float]:
    vals = np.concatenate([m[np.isfinite(m) & (m > 0)].ravel() for m in maps])
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [1, 99])
    return float(lo), float(max(hi, lo + 1e-6))


def colorize(depth: np.ndarray, vmin: float, vmax: float, cmap: str = "turbo") -> np.ndarray:
    """Depth [H,W] -> uint8 RGB [H,W,3]; invalid (0, NaN) pixels black."""
    d = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    t = np.clip((np.nan_to_num(d) - vmin) / max(vmax - vmin, 1e-6), 0.0, 1.0)
    rgb = (colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def depth_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """uint8 [H,3W,3]: RGB | GT | prediction on a shared colour scale (TensorBoard images)."""
    lo, hi = _range(gt, pred)
    return np.concatenate([np.asarray(image, np.uint8), colorize(gt, lo, hi), colorize(pred, lo, hi)], axis=1)


def save_eval_figure(
    path: str | os.PathLike,
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    uv: np.ndarray | None = None,
    title: str = "",
    valid: np.ndarray | None = None,
) -> None:
    """PNG with RGB | GT | prediction | |pred − gt| (on ``valid`` GT pixels); ``uv`` [K,2] marked."""
    gt = np.asarray(gt, np.float32)
    pred = np.asarray(pred, np.float32)
    valid = (np.isfinite(gt) & (gt > 0)) if valid is None else valid
    err = np.where(valid, np.abs(pred - gt), np.nan)
    lo, hi = _range(gt, pred)
    h, w = gt.shape
    fig = Figure(figsize=(4 * 3.2, 3.2 * h / w + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    panels = [
        ("RGB", np.asarray(image), {}),
        ("ground truth [m]", np.where(gt > 0, gt, np.nan), {"cmap": "turbo", "vmin": lo, "vmax": hi}),
        ("prediction [m]", pred, {"cmap": "turbo", "vmin": lo, "vmax": hi}),
        (
            "|error| [m]",
            err,
            {"cmap": "magma", "vmin": 0.0, "vmax": float(np.nanpercentile(err, 99)) if np.isfinite(err).any() else 1.0},
        ),
    ]
    for ax, (name, img, kw) in zip(axes, panels, strict=True):
        im = ax.imshow(img, interpolation="nearest", **kw)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
        if kw:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if uv is not None and len(uv):
            ax.scatter(uv[:, 0], uv[:, 1], s=6, facecolors="none", edgecolors="white", linewidths=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
