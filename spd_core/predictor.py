"""DepthPredictor: the one inference path of the node, evaluation and the demo.

uint8 image (original size) -> resize + ImageNet normalisation -> encode once -> any number
of queries in original-image pixels -> exact sparse metric depth, focal-scaled to the camera.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spd_core.checkpoint import Checkpoint, load_model
from spd_core.model import FrameFeatures, SPDModel
from spd_core.precision import check_precision

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu', 'cuda', 'cuda:N' as given (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available; use device=cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not auto, cpu, cuda or cuda:N")
    return dev


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


@dataclass
class Frame:
    """One encoded image: features plus what is needed to answer queries in its pixels."""

    features: FrameFeatures
    image_size: tuple[int, int]  # (H, W) of the original image
    depth_scale: float  # metric scale factor (fx·s / f_train), 1.0 when focal scaling is off


class DepthPredictor:
    """Encode images once, answer depth queries in original-image pixel coordinates."""

    def __init__(self, model: SPDModel, input_size: tuple[int, int], train_focal: float,
                 device: str | torch.device = "cpu", precision: str = "fp32",
                 focal_scaling: bool = True) -> None:  # fmt: skip
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
    def from_checkpoint(cls, path: str, device: str = "auto", precision: str = "fp32",
                        input_size: tuple[int, int] | None = None,
                        focal_scaling: bool = True) -> DepthPredictor:  # fmt: skip
        """Load ``path`` (raises CheckpointError with a clear line) onto ``device``."""
        dev = resolve_device(device)
        model, ckpt = load_model(path, dev)
        return cls.from_model(model, ckpt, dev, precision, input_size, focal_scaling)

    @classmethod
    def from_model(cls, model: SPDModel, ckpt: Checkpoint, device: str | torch.device = "cpu",
                   precision: str = "fp32", input_size: tuple[int, int] | None = None,
                   focal_scaling: bool = True) -> DepthPredictor:  # fmt: skip
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
        if size[0] < 2 or size[1] < 2:
            raise ValueError(f"image {size[0]}x{size[1]} is too small (at least 2x2)")
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


def back_project(uv: np.ndarray, depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Pixels [K,2] + depth along Z [K] -> points [K,3] in the optical frame (REP 103: x right,
    y down, z forward). NaN depth gives NaN points."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    z = np.asarray(depth, dtype=np.float64).reshape(-1)
    x = (uv[:, 0] - cx) * z / fx
    y = (uv[:, 1] - cy) * z / fy
    return np.stack([x, y, z], axis=1).astype(np.float32)
