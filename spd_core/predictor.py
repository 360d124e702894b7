"""DepthPredictor: the one inference path of the node, evaluation and the demo.

uint8 image (original size) -> resize + ImageNet normalisation -> encode once -> any number
of queries in original-image pixels -> exact sparse metric depth, focal-scaled to the camera.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spd_core.device import check_precision, resolve_device
from spd_core.model.checkpoint import Checkpoint, load_model
from spd_core.model.spd_model import FrameFeatures, SPDModel
from spd_core.preprocess import MIN_IMAGE_SIDE, image_to_tensor, to_model_pixels

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """One encoded image: features plus what is needed to answer queries in its pixels."""

    features: FrameFeatures
    image_size: tuple[int, int]  # (H, W) of the original image
    depth_scale: float  # metric scale factor (fx·s / f_train), 1.0 when focal scaling is off


class DepthPredictor:
    """Encode images once, answer depth queries in original-image pixel coordinates."""

    def __init__(
        self,
        model: SPDModel,
        input_size: tuple[int, int],
        train_focal: float,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        focal_scaling: bool = True,
    ) -> None:
        self.device = torch.device(device)
        check_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if self.input_size[0] % 32 or self.input_size[1] % 32:
            raise ValueError(f"input_size {self.input_size} must be multiples of 32")
        self.train_focal = float(train_focal)
        self.precision = precision
        self.focal_scaling = focal_scaling

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        device: str = "auto",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        focal_scaling: bool = True,
    ) -> DepthPredictor:
        """Load ``path`` (raises CheckpointError with a clear line) onto ``device``."""
        dev = resolve_device(device)
        model, ckpt = load_model(path, dev)
        return cls.from_model(model, ckpt, dev, precision, input_size, focal_scaling)

    @classmethod
    def from_model(
        cls,
        model: SPDModel,
        ckpt: Checkpoint,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        focal_scaling: bool = True,
    ) -> DepthPredictor:
        size = tuple(input_size) if input_size else tuple(ckpt.input_size)
        return cls(model, size, ckpt.train_focal, device, precision, focal_scaling)

    def depth_scale(self, image_size: tuple[int, int], fx: float | None) -> float:
        """Metric scale for a camera of focal ``fx`` px at ``image_size`` (DESIGN §3)."""
        if not self.focal_scaling or fx is None or not np.isfinite(fx) or fx <= 0:
            return 1.0
        s = self.input_size[1] / image_size[1]
        return float(fx) * s / self.train_focal

    @torch.inference_mode()
    def encode(self, image: np.ndarray, fx: float | None = None) -> Frame:
        """Encode one image (uint8 RGB [H,W,3] or mono [H,W]); ``fx`` in original pixels."""
        size = (int(image.shape[0]), int(image.shape[1]))
        if min(size) < MIN_IMAGE_SIDE:
            raise ValueError(f"image {size[0]}x{size[1]} is too small (at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})")
        x = image_to_tensor(image, self.input_size, self.device)
        feats = self.model.encode(x, self.precision)
        return Frame(feats, size, self.depth_scale(size, fx))

    @torch.inference_mode()
    def query(self, frame: Frame, uv: np.ndarray | torch.Tensor) -> np.ndarray:
        """Metric depth [K] (float32, NaN outside the image) at original-image pixels ``uv`` [K,2]."""
        uv = np.asarray(uv.cpu() if isinstance(uv, torch.Tensor) else uv, dtype=np.float32).reshape(-1, 2)
        if uv.shape[0] == 0:
            return np.zeros(0, np.float32)
        muv = torch.from_numpy(to_model_pixels(uv, frame.image_size, self.input_size)).to(self.device)
        d = self.model.query(frame.features, muv[None], self.precision)[0]
        return d.float().cpu().numpy() * np.float32(frame.depth_scale)

    @torch.inference_mode()
    def dense(self, frame: Frame) -> np.ndarray:
        """Dense metric depth [H,W] at the original image size (debug output, evaluation)."""
        d = self.model.decode_dense(frame.features, self.precision)
        if tuple(d.shape[-2:]) != frame.image_size:
            d = F.interpolate(d, size=frame.image_size, mode="bilinear", align_corners=False)
        return (d[0, 0] * frame.depth_scale).cpu().numpy().astype(np.float32)
