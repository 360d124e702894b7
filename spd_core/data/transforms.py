"""Sample dict -> training tensors (BTS recipe).

:func:`to_tensors` and :class:`TrainTransform` return {"image": float32 [3,h,w] ImageNet-normalised,
"depth": float32 [1,h,w] metres (0 = invalid), "focal": float32 [], "name": str}.
Crops, flips and rotations keep the focal length.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from spd_core.data.common import DataError, Sample
from spd_core.preprocess import IMAGENET_MEAN, IMAGENET_STD

_MEAN = np.array(IMAGENET_MEAN, np.float32)
_STD = np.array(IMAGENET_STD, np.float32)


def to_tensors(rgb01: np.ndarray, depth: np.ndarray, focal: float, name: str) -> dict:
    """RGB [H,W,3] in [0,1] + depth [H,W] -> the collate-friendly tensor dict (module doc)."""
    img = (rgb01 - _MEAN) / _STD
    return {
        "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), np.float32)),
        "depth": torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None],
        "focal": torch.tensor(float(focal), dtype=torch.float32),
        "name": name,
    }


def rotate(image: np.ndarray, depth: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate [H,W,3] uint8 and [H,W] depth about the centre (counter-clockwise, same size, 0 fill):
    bilinear for the image, NEAREST for depth (no invented depths)."""
    from PIL import Image

    img = np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BILINEAR))
    dep = Image.fromarray(np.ascontiguousarray(depth, np.float32))  # mode "F"
    dep = np.asarray(dep.rotate(degrees, resample=Image.Resampling.NEAREST))
    return img, dep


class TrainTransform:
    """BTS augmentation: rotation ±``rotate_deg`` (then) random ``crop`` = (h, w), horizontal flip,
    gamma / brightness / per-channel colour jitter on [0,1] RGB, ImageNet normalisation.

    All randomness comes from ``self.rng`` (a numpy Generator; global RNG state is never used).
    ``seed`` makes a standalone transform reproducible. For reproducibility per (seed, epoch, index)
    assign ``rng`` before each sample (``spd_core.train.state.EpochSeededDataset`` does). A copy
    of the transform in a DataLoader worker whose ``rng`` was not assigned there re-seeds itself
    from (``seed``, the worker's torch seed), so workers never repeat each other's stream.
    """

    def __init__(
        self,
        crop: tuple[int, int] = (416, 544),
        rotate_deg: float = 2.5,
        flip: bool = True,
        gamma: tuple[float, float] = (0.9, 1.1),
        brightness: tuple[float, float] = (0.75, 1.25),
        color: tuple[float, float] = (0.9, 1.1),
        seed: int | None = None,
        color_jitter: bool = True,
    ) -> None:
        if len(crop) != 2 or min(crop) < 1:
            raise DataError(f"crop must be (height, width) >= 1, got {crop}")
        self.crop, self.rotate_deg, self.flip = (int(crop[0]), int(crop[1])), float(rotate_deg), bool(flip)
        self.color_jitter, self.gamma, self.brightness, self.color = color_jitter, gamma, brightness, color
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @property
    def rng(self) -> np.random.Generator:
        return self._rng

    @rng.setter
    def rng(self, generator: np.random.Generator) -> None:
        self._rng, self._rng_pid = generator, os.getpid()

    def _generator(self) -> np.random.Generator:
        if self._rng_pid != os.getpid():  # a worker's copy of the parent's stream: make it this worker's own
            info = torch.utils.data.get_worker_info()
            entropy = [info.seed if info is not None else os.getpid()]
            self.rng = np.random.default_rng(entropy if self.seed is None else [int(self.seed), *entropy])
        return self._rng

    def __call__(self, s: Sample) -> dict:
        image, depth, rng = s["image"], s["depth"], self._generator()
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
            rgb = rgb ** np.float32(rng.uniform(*self.gamma))
            rgb = rgb * np.float32(rng.uniform(*self.brightness))
            rgb = rgb * rng.uniform(*self.color, size=3).astype(np.float32)
            rgb = np.clip(rgb, 0.0, 1.0)
        return to_tensors(rgb, depth, s["focal"], s.get("name", ""))
