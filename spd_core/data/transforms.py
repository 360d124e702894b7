"""Sample dict -> training / evaluation tensors (BTS recipe for training).

Both return {"image": float32 [3,h,w] ImageNet-normalised, "depth": float32 [1,h,w] metres,
"focal": float32 [], "name": str}. Crops and rotations keep the focal length.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spd_core.data.common import DataError, Sample
from spd_core.predictor import IMAGENET_MEAN, IMAGENET_STD

_MEAN = np.array(IMAGENET_MEAN, np.float32)
_STD = np.array(IMAGENET_STD, np.float32)


def _to_tensors(rgb01: np.ndarray, depth: np.ndarray, focal: float, name: str) -> dict:
    img = (rgb01 - _MEAN) / _STD
    return {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), np.float32)),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None],
            "focal": torch.tensor(float(focal), dtype=torch.float32), "name": name}  # fmt: skip


def rotate(image: np.ndarray, depth: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre: bilinear for the image, NEAREST for depth (no invented depths)."""
    from PIL import Image

    img = np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BILINEAR))
    dep = Image.fromarray(depth.astype(np.float32), mode="F")
    dep = np.asarray(dep.rotate(degrees, resample=Image.Resampling.NEAREST))
    return img, dep


class TrainTransform:
    """BTS augmentation: rotation ±``rotate_deg``, random crop, flip, gamma/brightness/colour.

    ``rng`` (a numpy Generator) is the only randomness; set it for reproducible samples
    (the trainer seeds it per epoch and index).
    """

    def __init__(self, crop: tuple[int, int] = (416, 544), rotate_deg: float = 2.5, flip: bool = True,
                 color_jitter: bool = True, gamma: tuple[float, float] = (0.9, 1.1),
                 brightness: tuple[float, float] = (0.75, 1.25), color: tuple[float, float] = (0.9, 1.1),
                 seed: int | None = None) -> None:  # fmt: skip
        self.crop, self.rotate_deg, self.flip = (int(crop[0]), int(crop[1])), float(rotate_deg), flip
        self.color_jitter, self.gamma, self.brightness, self.color = color_jitter, gamma, brightness, color
        self.rng = np.random.default_rng(seed)

    def __call__(self, s: Sample) -> dict:
        image, depth, rng = s["image"], s["depth"], self.rng
        ch, cw = self.crop
        h, w = depth.shape
        if h < ch or w < cw:
            raise DataError(f"{s.get('name')}: image {h}x{w} is smaller than the crop {ch}x{cw}; lower data.crop")
        if self.rotate_deg > 0:
            image, depth = rotate(image, depth, float(rng.uniform(-self.rotate_deg, self.rotate_deg)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        image, depth = image[y : y + ch, x : x + cw], depth[y : y + ch, x : x + cw]
        if self.flip and rng.random() < 0.5:
            image, depth = image[:, ::-1], depth[:, ::-1]
        rgb = image.astype(np.float32) / 255.0
        if self.color_jitter:
            rgb = rgb ** float(rng.uniform(*self.gamma))
            rgb = rgb * float(rng.uniform(*self.brightness))
            rgb = rgb * rng.uniform(*self.color, size=3).astype(np.float32)
            rgb = np.clip(rgb, 0.0, 1.0)
        return _to_tensors(rgb, depth, s["focal"], s.get("name", ""))


class EvalTransform:
    """No augmentation; the image is resized to ``size`` (multiples of 32) when given, depth kept native."""

    def __init__(self, size: tuple[int, int] | None = None) -> None:
        self.size = (int(size[0]), int(size[1])) if size else None

    def __call__(self, s: Sample) -> dict:
        out = _to_tensors(s["image"].astype(np.float32) / 255.0, s["depth"], s["focal"], s.get("name", ""))
        if self.size and tuple(out["image"].shape[-2:]) != self.size:
            out["image"] = F.interpolate(out["image"][None], size=self.size, mode="bilinear", align_corners=False,
                                         antialias=True)[0]  # fmt: skip
        return out
