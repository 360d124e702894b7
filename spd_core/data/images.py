"""ROS image payloads <-> numpy, without cv_bridge (broken with numpy 2). Pure numpy + Pillow.

Shared by the rosbag datasets here and the node's message conversion (``spd_ros.conversions``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from spd_core.preprocess import MIN_IMAGE_SIDE

MAX_PIXELS = 4096 * 4096  # default bound on height x width of any image decoded or viewed here
COMPRESSED_FORMATS = ("JPEG", "PNG")
_SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}

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


def check_image_size(height: int, width: int, max_pixels: int = MAX_PIXELS) -> None:
    """ImageFormatError unless the image is at least MIN_IMAGE_SIDE on each side and at most
    ``max_pixels`` in area (Python ints: no overflow for any uint32 header values)."""
    height, width = int(height), int(width)
    if height < MIN_IMAGE_SIDE or width < MIN_IMAGE_SIDE:
        raise ImageFormatError(
            f"image {height}x{width} is too small: at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels are needed"
        )
    if height * width > max_pixels:
        raise ImageFormatError(
            f"image {height}x{width} has {height * width} pixels, more than the limit of {max_pixels} "
            "(max_image_pixels)"
        )


def image_array(
    data: bytes | memoryview | np.ndarray,
    height: int,
    width: int,
    step: int,
    encoding: str,
    is_bigendian: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Raw image payload -> array [H,W] or [H,W,C] of the encoding's dtype (zero copy when possible).

    Row padding (``step`` > width · pixel size) is skipped. The size is checked
    (:func:`check_image_size`) before the data is looked at.
    """
    if encoding not in ENCODINGS:
        raise ImageFormatError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"empty image {height}x{width}")
    check_image_size(height, width, max_pixels)
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


def compressed_format(data: bytes) -> str:
    """The image format ``data`` starts with: "JPEG", "PNG", another format Pillow knows (e.g.
    "BMP", "GIF", "TIFF", "WEBP", "PPM"), or "" when none. Only the leading bytes are read."""
    for name, signature in _SIGNATURES.items():
        if data.startswith(signature):
            return name
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for name in Image.ID:  # Pillow's own signature checks; no plugin is run on the data
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a signature check that cannot read this prefix: not that format
            continue
    return ""


def _openers() -> dict[str, Callable[[io.BytesIO], Any]]:
    from PIL import JpegImagePlugin, PngImagePlugin

    return {"JPEG": JpegImagePlugin.JpegImageFile, "PNG": PngImagePlugin.PngImageFile}


def _pixels(img: Any) -> np.ndarray:
    """A loaded Pillow image -> uint8 RGB [H,W,3] or grey [H,W]."""
    if img.mode in ("L", "I;16", "I"):
        arr = np.asarray(img)
        return arr if arr.dtype == np.uint8 else (arr.astype(np.uint32) >> 8).astype(np.uint8)
    return np.asarray(img.convert("RGB"))


def decode_compressed(data: bytes | memoryview | np.ndarray, fmt: str = "", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """CompressedImage payload (JPEG/PNG) -> uint8 RGB [H,W,3] (or [H,W] for grey images).

    Bounded: the format is read from the leading bytes and the size from the header
    (:func:`check_image_size`) before any pixel is decoded, so a small file declaring a huge image
    costs nothing. The JPEG / PNG readers are opened directly: Pillow's own decompression-bomb
    check (warning, then error, in ``Image.open``) is not involved; ``max_pixels`` is the limit.
    Anything the decoder raises on damaged data (OSError, SyntaxError, ValueError, struct.error,
    EOFError, IndexError, ...) becomes one ImageFormatError line.
    """
    raw = bytes(memoryview(data))
    kind = compressed_format(raw)
    if kind not in COMPRESSED_FORMATS:
        what = f"a {kind} image" if kind else f"not an image format known here (starts with {raw[:8]!r})"
        raise ImageFormatError(f"compressed image (format field {fmt!r}) is {what}; only JPEG and PNG are decoded")
    try:
        img = _openers()[kind](io.BytesIO(raw))  # reads the header only
        size = img.size
        check_image_size(size[1], size[0], max_pixels)
        img.load()
        arr = _pixels(img)
    except ImageFormatError:
        raise
    except Exception as e:  # hostile bytes can make a reader raise almost anything
        raise ImageFormatError(
            f"cannot decode compressed {kind} image (format field {fmt!r}): {_one_line(e)}"
        ) from None
    if arr.shape[:2] != (size[1], size[0]):
        raise ImageFormatError(
            f"compressed {kind} image decoded to {arr.shape[:2]}, its header says {size[1]}x{size[0]}"
        )
    return arr


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """uint8 RGB [H,W,3] -> JPEG (4:4:4, ``quality``) or PNG (lossless) bytes."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt.lower() in ("jpeg", "jpg"):
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    else:
        Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
