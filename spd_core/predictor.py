"""DepthPredictor: the one inference path of the node, evaluation and the demo.

uint8 image (original size, any aspect ratio) -> isotropic scale to the pixel budget + padding to
multiples of 32 (:mod:`spd_core.preprocess`) -> encode once -> any number of queries in
original-image pixels -> exact sparse metric depth, focal-scaled to the camera. The network runs
in a backend (:mod:`spd_core.backends`): eager torch by default, or onnxruntime on the files
``spd-export`` wrote.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spd_core.backends import Backend, make_backend
from spd_core.device import resolve_device
from spd_core.export.meta import default_onnx_dir
from spd_core.model.checkpoint import Checkpoint, load_model
from spd_core.model.query_plan import PLANNERS, CostModel, QueryPlan
from spd_core.model.spd_model import FrameFeatures, SPDModel
from spd_core.preprocess import InputGeometry, fit_geometry, image_to_tensor, to_model_pixels

log = logging.getLogger(__name__)


@dataclass
class EncodedFrame:
    """One encoded image: features plus what is needed to answer queries in its pixels."""

    features: FrameFeatures
    geometry: InputGeometry  # original image -> network input
    depth_scale: float  # metric scale factor (fx·s / f_train), 1.0 when focal scaling is off

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return self.geometry.image_size


class DepthPredictor:
    """Encode images once, answer depth queries in original-image pixel coordinates.

    ``pixel_budget``: pixels of the scaled image the network sees (the checkpoint's training area
    by default); every image is scaled by one factor to about this many pixels, keeping its
    aspect ratio. ``planner``: how a query call picks its exact execution (windows, shared tiles
    or dense; :mod:`spd_core.model.query_plan`): ``measured`` costs timed once on this device,
    ``macs`` costs in MACs, ``windows`` always per-query windows.
    ``backend``: where the network runs (default: eager torch, ``model`` on ``device``); the planner
    applies to the torch backends (the onnxruntime query graph runs per-query windows).
    """

    def __init__(
        self,
        model: SPDModel,
        train_focal: float,
        pixel_budget: int,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        focal_scaling: bool = True,
        planner: str = "measured",
        backend: Backend | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.backend = backend or make_backend("torch", model, None, self.device, precision)
        self.model = model
        self.train_focal = float(train_focal)
        if not math.isfinite(self.train_focal) or self.train_focal <= 0:
            raise ValueError(f"train_focal {train_focal} must be a finite focal length > 0 px")
        self.pixel_budget = int(pixel_budget)
        if self.pixel_budget < 1:
            raise ValueError(f"pixel_budget {pixel_budget} must be >= 1")
        self.precision = precision
        self.focal_scaling = focal_scaling
        if planner not in PLANNERS:
            raise ValueError(f"planner {planner!r} is not one of {', '.join(PLANNERS)}")
        self.planner = planner
        self._costs: dict[tuple[int, int], CostModel] = {}  # network input size -> the planner's costs
        self._measured: tuple[tuple[int, int], CostModel] | None = None  # the one timing, and its size
        self.last_plan: QueryPlan | None = None  # of the newest query call (diagnostics)

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        device: str = "auto",
        precision: str = "fp32",
        pixel_budget: int | None = None,
        focal_scaling: bool = True,
        planner: str = "measured",
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
        providers: Sequence[str] | None = None,
    ) -> DepthPredictor:
        """Load ``path`` (raises CheckpointError with a clear line) onto ``device``; the
        onnxruntime backend reads ``onnx_dir`` (default: ``<stem>_onnx/`` beside the checkpoint)."""
        dev = resolve_device(device)
        model, ckpt = load_model(path, "cpu" if backend == "onnxruntime" else dev)
        if backend == "onnxruntime" and not onnx_dir:
            onnx_dir = default_onnx_dir(path)
        return cls.from_model(
            model, ckpt, dev, precision, pixel_budget, focal_scaling, planner, backend, onnx_dir, providers
        )

    @classmethod
    def from_model(
        cls,
        model: SPDModel,
        ckpt: Checkpoint,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        pixel_budget: int | None = None,
        focal_scaling: bool = True,
        planner: str = "measured",
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
        providers: Sequence[str] | None = None,
    ) -> DepthPredictor:
        """``pixel_budget`` None (or 0): the checkpoint's training area, input_size H·W.
        ``backend`` torch | onnxruntime (the export of ``ckpt`` in ``onnx_dir``, run by ``providers``)."""
        budget = pixel_budget or ckpt.input_size[0] * ckpt.input_size[1]
        dev = torch.device(device)
        impl = make_backend(backend, model, ckpt, dev, precision, onnx_dir, providers)
        return cls(model, ckpt.train_focal, budget, dev, precision, focal_scaling, planner, impl)

    def geometry(self, image_size: tuple[int, int]) -> InputGeometry:
        """Network-input geometry of an image of ``image_size`` (H, W)."""
        return fit_geometry(image_size, self.pixel_budget)

    def depth_scale(self, geometry: InputGeometry, fx: float | None) -> float:
        """Metric scale ``fx·s / f_train`` for a camera of focal ``fx`` px (DESIGN §3); 1.0 when
        focal scaling is off or ``fx`` is unknown."""
        if not self.focal_scaling or fx is None or not np.isfinite(fx) or fx <= 0:
            return 1.0
        return float(fx) * geometry.scale / self.train_focal

    @torch.inference_mode()
    def encode(self, image: np.ndarray, fx: float | None = None) -> EncodedFrame:
        """Encode one image (uint8 RGB [H,W,3] or mono [H,W]); ``fx`` in original pixels."""
        geometry = self.geometry((int(image.shape[0]), int(image.shape[1])))
        x = image_to_tensor(image, geometry, self.device)
        feats = self.backend.encode(x)
        return EncodedFrame(feats, geometry, self.depth_scale(geometry, fx))

    @torch.inference_mode()
    def query(self, frame: EncodedFrame, uv: np.ndarray | torch.Tensor) -> np.ndarray:
        """Metric depth [K] (float32, NaN outside the image) at original-image pixels ``uv`` [K,2]."""
        uv = np.asarray(uv.cpu() if isinstance(uv, torch.Tensor) else uv, dtype=np.float32).reshape(-1, 2)
        if uv.shape[0] == 0:
            return np.zeros(0, np.float32)
        muv = torch.from_numpy(to_model_pixels(uv, frame.geometry)).to(self.device)
        d, self.last_plan = self.backend.query(frame.features, muv[None], self.costs(frame))
        return d[0].float().cpu().numpy() * np.float32(frame.depth_scale)

    def calibrate(self, image_size: tuple[int, int] | None = None) -> CostModel | None:
        """Time the planner's costs now (``measured`` planner; start-up of the node) on a blank image
        of ``image_size`` (default: a square of the pixel budget) instead of on the first frame."""
        if self.planner != "measured":
            return None
        side = max(2, round(math.sqrt(self.pixel_budget)))
        frame = self.encode(np.zeros((*(image_size or (side, side)), 3), np.uint8))
        self._measured = None
        return self.costs(frame)

    def costs(self, frame: EncodedFrame) -> CostModel | None:
        """The planner's costs for ``frame``'s network input size (None: windows only). Measured
        costs are timed once, on the first frame, and scaled to other sizes."""
        if self.planner == "windows" or self.backend.name == "onnxruntime":
            return None
        size = frame.features.size
        costs = self._costs.get(size)
        if costs is None:
            if self.planner == "macs":
                costs = self.model.mac_costs(size, self.device)
            else:
                if self._measured is None:
                    self._measured = (size, self.model.measure_costs(frame.features, self.precision))
                    log.info("query planner at %dx%d: %s", *size, self._measured[1].describe())
                costs = self._measured[1].at_size(size, self._measured[0])
            if len(self._costs) >= 16:
                self._costs.clear()
            self._costs[size] = costs
        return costs

    @torch.inference_mode()
    def dense(self, frame: EncodedFrame) -> np.ndarray:
        """Dense metric depth [H,W] at the original image size: the network's dense map sampled
        bilinearly at every original pixel's model position, exactly as :meth:`query` does."""
        feats = frame.features
        if feats.dense_depth is None:  # kept: later queries on this frame only look up (query_plan)
            feats.dense_depth = self.backend.dense(feats)
        d = feats.dense_depth
        g = frame.geometry
        if not (g.scale == 1.0 and g.image_size == g.input_size):  # else the map is the answer
            h, w = g.image_size
            u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            muv = torch.from_numpy(to_model_pixels(np.stack([u, v], -1), g)).to(d.device)
            ih, iw = g.input_size
            grid = muv / muv.new_tensor([max(iw - 1, 1), max(ih - 1, 1)]) * 2 - 1
            d = F.grid_sample(d, grid[None], mode="bilinear", align_corners=True)
        return (d[0, 0] * frame.depth_scale).cpu().numpy().astype(np.float32)
