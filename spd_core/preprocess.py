"""Image preprocessing shared by inference, evaluation and training: ImageNet normalisation and
the mapping between original-image pixels and network-input pixels."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIDE = 2  # smallest height and width the network input is made from (bilinear needs 2x2)


def image_to_tensor(image: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 [H,W,3] RGB or [H,W] mono (uint8/uint16) -> normalized [1,3,h,w] at ``size``.

    Resizing is bilinear with ``align_corners=False`` and antialiasing (pixel centres at
    integers map by ``u' = (u + 0.5)·w/W − 0.5``, see :func:`to_model_pixels`).
    """
    if image.ndim == 2:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H,W,3] RGB or [H,W] mono, got {image.dtype} {image.shape}")
    with warnings.catch_warnings():  # read-only buffers (np.frombuffer of a ROS message) are only read here
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(np.ascontiguousarray(image))
    x = x.to(device).permute(2, 0, 1)[None].float() / 255.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_model_pixels(uv: np.ndarray, image_size: tuple[int, int], model_size: tuple[int, int]) -> np.ndarray:
    """Original-image pixels [...,2] -> model-input pixels (float32); outside the image -> NaN.

    Positions inside the image but past the outermost model pixel centre are clamped onto it,
    so every pixel of the original image gets a depth. NumPy on purpose: for the few points of a
    query this is a handful of microseconds, where the same in torch costs ~10 dispatched ops.
    """
    (h, w), (mh, mw) = image_size, model_size
    uv = np.asarray(uv, dtype=np.float32)
    u, v = uv[..., 0], uv[..., 1]
    with np.errstate(invalid="ignore"):  # NaN compares False: outside
        inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    mu = np.clip((u + 0.5) * (mw / w) - 0.5, 0, mw - 1)
    mv = np.clip((v + 0.5) * (mh / h) - 0.5, 0, mh - 1)
    return np.where(inside[..., None], np.stack([mu, mv], -1), np.nan).astype(np.float32, copy=False)
