"""Where DepthPredictor's network runs: eager PyTorch (``torch``, default) or onnxruntime on the
files written by ``spd-export`` (``onnxruntime``).

A backend does two things, on tensors in network-input pixels: image tensor -> FrameFeatures,
and features + pixels -> depth (sparse, or the dense map). Geometry and metric scaling stay in
DepthPredictor, one code path for every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from spd_core.device import check_precision
from spd_core.export.graphs import feature_tensors, frame_features
from spd_core.export.meta import ModelIdentity
from spd_core.model.checkpoint import Checkpoint
from spd_core.model.spd_model import FrameFeatures, SPDModel

BACKENDS = ("torch", "onnxruntime")


class Backend(Protocol):
    name: str

    def encode(self, x: torch.Tensor) -> FrameFeatures: ...

    def query(self, feats: FrameFeatures, uv: torch.Tensor) -> torch.Tensor: ...

    def dense(self, feats: FrameFeatures) -> torch.Tensor: ...


class TorchBackend:
    """The SPDModel itself, eager, under autocast to ``precision``."""

    name = "torch"

    def __init__(self, model: SPDModel, precision: str = "fp32") -> None:
        check_precision(precision, model.device)
        self.model, self.precision = model, precision

    def encode(self, x: torch.Tensor) -> FrameFeatures:
        return self.model.encode(x, self.precision)

    def query(self, feats: FrameFeatures, uv: torch.Tensor) -> torch.Tensor:
        return self.model.query(feats, uv, self.precision)

    def dense(self, feats: FrameFeatures) -> torch.Tensor:
        return self.model.decode_dense(feats, self.precision)


class OnnxRuntimeBackend:
    """The exported graphs in onnxruntime (:class:`spd_core.export.ort.OnnxRuntimeModel`)."""

    name = "onnxruntime"

    def __init__(
        self,
        onnx_dir: str | Path,
        ckpt: Checkpoint,
        device: torch.device,
        precision: str = "fp32",
        providers: Sequence[str] | None = None,
    ) -> None:
        from spd_core.export.ort import OnnxRuntimeModel  # onnxruntime only when this backend is chosen

        self.runtime = OnnxRuntimeModel(onnx_dir, ModelIdentity.of(ckpt), precision, device, providers)

    def encode(self, x: torch.Tensor) -> FrameFeatures:
        return frame_features(*self.runtime.encode(x))

    def query(self, feats: FrameFeatures, uv: torch.Tensor) -> torch.Tensor:
        return self.runtime.query(feature_tensors(feats), uv)

    def dense(self, feats: FrameFeatures) -> torch.Tensor:
        return self.runtime.dense(feature_tensors(feats))


def make_backend(
    name: str,
    model: SPDModel,
    ckpt: Checkpoint | None,
    device: torch.device,
    precision: str = "fp32",
    onnx_dir: str | Path | None = None,
    providers: Sequence[str] | None = None,
) -> Backend:
    """The backend ``name`` running on ``device`` (the torch backend moves ``model`` there);
    ValueError with one line when it cannot be made."""
    if name == "torch":
        return TorchBackend(model.to(device).eval(), precision)
    if name != "onnxruntime":
        raise ValueError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    if ckpt is None or not onnx_dir:
        raise ValueError("backend onnxruntime needs the checkpoint and onnx_dir (the directory spd-export wrote)")
    return OnnxRuntimeBackend(onnx_dir, ckpt, device, precision, providers)
