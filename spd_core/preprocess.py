"""Image preprocessing shared by inference, evaluation and training: ImageNet normalisation and
the geometry between original-image pixels and network-input pixels.

The network input keeps the camera's aspect ratio: the image is scaled by one factor ``s`` (both
axes) so that it covers a pixel budget, then zero-padded (after normalisation) at the bottom and
right to multiples of 32. Answers come only from the scaled image (the *content*), never from
the padding.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIDE = 2  # the smallest image that has a pixel interval on both axes
STRIDE = 32  # the network input is a multiple of the encoder's output stride
MAX_PADDING = 4  # the padded input may hold this many times the budget (or one 32-row strip of 4096)


@dataclass(frozen=True)
class InputGeometry:
    """Where an original image lands in the network input.

    image_size: (H, W) of the original image; scale: ``s``, the same on both axes;
    content_size: (h, w) = floor((H, W)·s), the scaled image; input_size: content padded up to
    multiples of 32 (the tensor the encoder sees).
    """

    image_size: tuple[int, int]
    scale: float
    content_size: tuple[int, int]
    input_size: tuple[int, int]


def fit_geometry(image_size: tuple[int, int], pixel_budget: int) -> InputGeometry:
    """The geometry that scales ``image_size`` (H, W) to about ``pixel_budget`` pixels (up or down;
    the network sees objects at its training scale) and pads it to multiples of 32."""
    h, w = int(image_size[0]), int(image_size[1])
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise ValueError(f"image {h}x{w} is too small (at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})")
    if pixel_budget < 1:
        raise ValueError(f"pixel_budget {pixel_budget} must be >= 1")
    s = math.sqrt(pixel_budget / (h * w))
    # the output size torch.nn.functional.interpolate computes for scale_factor=s
    ch, cw = math.floor(h * s), math.floor(w * s)
    if (ch, cw) == (h, w):
        s = 1.0
    ih, iw = -(-ch // STRIDE) * STRIDE, -(-cw // STRIDE) * STRIDE
    if min(ch, cw) < MIN_IMAGE_SIDE or ih * iw > max(MAX_PADDING * pixel_budget, STRIDE * 4096):
        raise ValueError(
            f"image {h}x{w} (aspect {max(h, w) / min(h, w):.0f}:1) is too elongated for a pixel budget of "
            f"{pixel_budget}: scaled it would be {ch}x{cw}, padded {ih}x{iw}"
        )
    return InputGeometry((h, w), s, (ch, cw), (ih, iw))


def image_to_tensor(image: np.ndarray, geometry: InputGeometry, device: torch.device) -> torch.Tensor:
    """uint8 [H,W,3] RGB or [H,W] mono (uint8/uint16) -> normalized [1,3,*input_size], the image
    scaled to ``content_size`` at the top left, zeros (the mean colour) in the padding.

    Scaling is bilinear, ``align_corners=False``, antialiased, with the scale factor itself (not
    the rounded size ratio), so pixel centres map by ``u' = (u + 0.5)·s − 0.5``
    (:func:`to_model_pixels`).
    """
    if image.ndim == 2:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H,W,3] RGB or [H,W] mono, got {image.dtype} {image.shape}")
    if tuple(image.shape[:2]) != geometry.image_size:
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]}, its geometry {geometry.image_size}")
    with warnings.catch_warnings():  # read-only buffers (np.frombuffer of a ROS message) are only read here
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(np.ascontiguousarray(image))
    x = x.to(device).permute(2, 0, 1)[None].float() / 255.0
    if geometry.content_size != geometry.image_size:
        s = geometry.scale
        x = F.interpolate(
            x, scale_factor=(s, s), mode="bilinear", align_corners=False, antialias=True, recompute_scale_factor=False
        )
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    (ch, cw), (ih, iw) = geometry.content_size, geometry.input_size
    return F.pad(x, (0, iw - cw, 0, ih - ch)) if (ch, cw) != (ih, iw) else x


def to_model_pixels(uv: np.ndarray, geometry: InputGeometry) -> np.ndarray:
    """Original-image pixels [...,2] -> network-input pixels (float32); outside the image -> NaN.

    Positions inside the image but past the outermost content pixel centre are clamped onto it,
    so every pixel of the original image gets a depth and none comes from the padding. NumPy on
    purpose: for the few points of a query this is a handful of microseconds, where the same in
    torch costs ~10 dispatched ops.
    """
    (h, w), (ch, cw), s = geometry.image_size, geometry.content_size, geometry.scale
    uv = np.asarray(uv, dtype=np.float32)
    u, v = uv[..., 0], uv[..., 1]
    with np.errstate(invalid="ignore"):  # NaN compares False: outside
        inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    mu = np.clip((u + 0.5) * s - 0.5, 0, cw - 1)
    mv = np.clip((v + 0.5) * s - 0.5, 0, ch - 1)
    return np.where(inside[..., None], np.stack([mu, mv], -1), np.nan).astype(np.float32, copy=False)
