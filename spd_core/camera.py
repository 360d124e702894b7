"""Pinhole camera geometry: back-projection of pixels with depth into the optical frame."""

from __future__ import annotations

import numpy as np


def back_project(uv: np.ndarray, depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Pixels [K,2] + depth along Z [K] -> points [K,3] in the optical frame (REP 103: x right,
    y down, z forward). NaN depth gives NaN points."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    z = np.asarray(depth, dtype=np.float64).reshape(-1)
    x = (uv[:, 0] - cx) * z / fx
    y = (uv[:, 1] - cy) * z / fy
    return np.stack([x, y, z], axis=1).astype(np.float32)
