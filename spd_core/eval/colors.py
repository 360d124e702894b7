"""Depth -> colour for a person watching (RViz markers): a fixed ramp, near red to far blue.

Plain numpy (no matplotlib), so the node can colour its answers without loading a plotting stack.
"""

from __future__ import annotations

import numpy as np

# the ramp's anchors, evenly spaced from vmin (first) to vmax (last): red, yellow, green, cyan, blue
RAMP = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]], np.float32)
INVALID = (0.5, 0.5, 0.5)  # NaN / Inf depth: grey


def depth_colors(depth: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Depth [K] (m) -> RGB float32 [K,3] in [0,1], piecewise linear along :data:`RAMP`; depths
    outside [vmin, vmax] take the end colours, non-finite ones :data:`INVALID`."""
    if not vmax > vmin:
        raise ValueError(f"colour scale [{vmin}, {vmax}] m is empty; vmax must be > vmin")
    d = np.asarray(depth, np.float64).reshape(-1)
    finite = np.isfinite(d)
    t = np.clip((np.where(finite, d, vmin) - vmin) / (vmax - vmin), 0.0, 1.0) * (len(RAMP) - 1)
    lo = np.minimum(t.astype(np.int64), len(RAMP) - 2)
    w = (t - lo)[:, None]
    rgb = (RAMP[lo] * (1 - w) + RAMP[lo + 1] * w).astype(np.float32)
    rgb[~finite] = INVALID
    return rgb
