"""Pinhole camera geometry: plausibility of intrinsics, their rescaling to another image size, and
back-projection of pixels with depth into the optical frame."""

from __future__ import annotations

import math

import numpy as np

Intrinsics = tuple[float, float, float, float]  # (fx, fy, cx, cy) in pixels
FOCAL_RANGE = (0.05, 50.0)  # a plausible focal length, as a multiple of the image width
ASPECT_TOLERANCE = 0.02  # relative difference of width/height allowed between camera_info and image


def check_intrinsics(k: Intrinsics, width: int, height: int) -> None:
    """ValueError (one line naming the field) unless ``k`` is finite with focal lengths within
    ``FOCAL_RANGE`` × ``width`` for an image of ``width``×``height`` > 0 pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"camera_info size {width}x{height} is empty; width and height must be > 0")
    for name, value in zip(("fx", "fy", "cx", "cy"), k, strict=True):
        if not math.isfinite(value):
            raise ValueError(f"camera_info {name}={value} is not finite")
    lo, hi = (r * width for r in FOCAL_RANGE)
    for name, f in (("fx", k[0]), ("fy", k[1])):
        if not lo <= f <= hi:
            raise ValueError(
                f"camera_info focal length {name}={f:g} px is implausible for a {width} px wide "
                f"image (expected {lo:g} to {hi:g})"
            )


def rescale_intrinsics(
    k: Intrinsics, from_size: tuple[int, int], to_size: tuple[int, int], aspect_tolerance: float = ASPECT_TOLERANCE
) -> Intrinsics:
    """Intrinsics of a camera_info for ``from_size`` (H, W) moved to an image of ``to_size`` (H, W)
    (pixel centres at integers). ValueError when the two aspect ratios differ by more than
    ``aspect_tolerance``: that camera_info does not describe this image."""
    (h0, w0), (h1, w1) = from_size, to_size
    a0, a1 = w0 / h0, w1 / h1
    if abs(a1 / a0 - 1) > aspect_tolerance:
        raise ValueError(
            f"camera_info is for {w0}x{h0} (aspect {a0:.3f}) but the image is {w1}x{h1} "
            f"(aspect {a1:.3f}); publish the camera_info of this stream"
        )
    sx, sy = w1 / w0, h1 / h0
    fx, fy, cx, cy = k
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


def back_project(uv: np.ndarray, depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Pixels [K,2] + depth along Z [K] -> points [K,3] in the optical frame (REP 103: x right,
    y down, z forward). NaN depth gives NaN points."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    z = np.asarray(depth, dtype=np.float64).reshape(-1)
    x = (uv[:, 0] - cx) * z / fx
    y = (uv[:, 1] - cy) * z / fy
    return np.stack([x, y, z], axis=1).astype(np.float32)
