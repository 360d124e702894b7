"""What every dataset shares: the sample convention and the one error type."""

from __future__ import annotations

from typing import Any

import numpy as np

# A sample is a dict: "image" uint8 [H,W,3] RGB, "depth" float32 [H,W] metres (0 = invalid, never NaN),
# "focal" float (fx in px at this image size), "name" str; optionally "K" float64 [3,3], "stamp_ns" int.
Sample = dict[str, Any]


class DataError(ValueError):
    """A dataset that cannot be read; the message names the path / topic / encoding and what to do."""


class FrameError(DataError):
    """One frame whose payload cannot be decoded (a corrupt or oversized image); the others may be fine."""


def check_sample(s: Sample) -> Sample:
    """Validate the sample convention (shapes and dtypes agree)."""
    img, depth = s["image"], s["depth"]
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"{s.get('name')}: image must be uint8 [H,W,3], got {img.dtype} {img.shape}")
    if depth.shape != img.shape[:2]:
        raise DataError(
            f"{s.get('name')}: depth {depth.shape} and image {img.shape[:2]} differ in size; "
            "use depth aligned to the colour camera"
        )
    return s
