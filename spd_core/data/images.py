"""ROS image payloads <-> numpy, without cv_bridge (broken with numpy 2). Pure numpy + Pillow.

Shared by the rosbag datasets here and the node's message conversion (``spd_ros.conversions``).
"""

from __future__ import annotations

import io

import numpy as np

# encoding -> (channels, dtype)
ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "8UC1": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
    "32FC1": (1, np.dtype(np.float32)),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class ImageFormatError(ValueError):
    """An image payload that cannot be decoded; the message says why."""


def image_array(
    data: bytes | memoryview | np.ndarray, height: int, width: int, step: int, encoding: str, is_bigendian: bool = False
) -> np.ndarray:
    """Raw image payload -> array [H,W] or [H,W,C] of the encoding's dtype (zero copy when possible).

    Row padding (``step`` > width · pixel size) is skipped.
    """
    if encoding not in ENCODINGS:
        raise ImageFormatError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"empty image {height}x{width}")
    channels, dtype = ENCODINGS[encoding]
    row = width * channels * dtype.itemsize
    if step < row:
        raise ImageFormatError(f"step {step} is smaller than a row of {width} {encoding} pixels ({row} bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * (height - 1) + row:
        raise ImageFormatError(f"data has {buf.size} bytes, {height} rows of step {step} need {step * height}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row), strides=(step, 1))
    arr = rows.view(dtype.newbyteorder(">" if is_bigendian else "<") if dtype.itemsize > 1 else dtype)
    arr = arr.reshape(height, width, channels) if channels > 1 else arr.reshape(height, width)
    return arr.astype(dtype, copy=False)


def to_rgb8(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Decoded colour image -> uint8 RGB [H,W,3] (mono8 / mono16 are kept single-channel [H,W])."""
    if encoding in ("rgb8",):
        return arr
    if encoding in ("bgr8",):
        return arr[:, :, ::-1]
    if encoding == "rgba8":
        return arr[:, :, :3]
    if encoding == "bgra8":
        return arr[:, :, 2::-1]
    if encoding in ("mono8", "8UC1"):
        return arr
    if encoding == "mono16":
        return (arr >> 8).astype(np.uint8)
    raise ImageFormatError(f"encoding {encoding!r} is not a colour image; use one of {', '.join(COLOR_ENCODINGS)}")


def to_metres(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Depth image -> float32 metres, invalid (0, NaN, inf) -> 0. 16UC1/mono16 are millimetres."""
    if encoding in ("16UC1", "mono16"):
        return arr.astype(np.float32) / 1000.0
    if encoding == "32FC1":
        d = arr.astype(np.float32, copy=True)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    raise ImageFormatError(f"depth encoding {encoding!r} is not supported; use one of {', '.join(DEPTH_ENCODINGS)}")


def decode_compressed(data: bytes | memoryview | np.ndarray, fmt: str = "") -> np.ndarray:
    """CompressedImage payload (JPEG/PNG) -> uint8 RGB [H,W,3] (or [H,W] for grey images)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(bytes(memoryview(data))))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ImageFormatError(f"cannot decode compressed image (format {fmt!r}): {e}") from None
    if img.mode in ("L", "I;16", "I"):
        arr = np.asarray(img)
        return arr if arr.dtype == np.uint8 else (arr.astype(np.uint32) >> 8).astype(np.uint8)
    return np.asarray(img.convert("RGB"))


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """uint8 RGB [H,W,3] -> JPEG (4:4:4, ``quality``) or PNG (lossless) bytes."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt.lower() in ("jpeg", "jpg"):
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    else:
        Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
