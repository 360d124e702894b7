"""Where DepthPredictor's network runs: eager PyTorch (``torch``, default), the same compiled by
``torch.compile`` (``torch.compile``), or onnxruntime on the files written by ``spd-export``
(``onnxruntime``).

A backend does two things, on tensors in network-input pixels: image tensor -> FrameFeatures,
and features + pixels -> depth (sparse, or the dense map). The torch backends answer queries by
the planner's cheapest exact execution (:mod:`spd_core.model.query_plan`) when given its costs;
the onnxruntime query graph runs per-query windows. Geometry and metric scaling stay in
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
from spd_core.model.query_plan import CostModel, QueryPlan
from spd_core.model.spd_model import FrameFeatures, SPDModel

BACKENDS = ("torch", "torch.compile", "onnxruntime")


class Backend(Protocol):
    name: str

    def encode(self, x: torch.Tensor) -> FrameFeatures: ...

    def query(
        self, feats: FrameFeatures, uv: torch.Tensor, costs: CostModel | None = None
    ) -> tuple[torch.Tensor, QueryPlan | None]: ...

    def dense(self, feats: FrameFeatures) -> torch.Tensor: ...


class TorchBackend:
    """The SPDModel itself under autocast to ``precision``: eager, or with ``compile`` the frame
    encode and the dense decode through ``torch.compile`` (measured on 2 CPU cores: encode 1.35x
    to 1.85x faster, the query within noise of eager, so it stays eager and never recompiles when
    K changes). The first frame of a new input size compiles: 5 s to a minute on a CPU (the
    inductor cache keeps it across runs); a second size compiles one dynamic-shape graph."""

    def __init__(self, model: SPDModel, precision: str = "fp32", compile: bool = False) -> None:
        check_precision(precision, model.device)
        self.model, self.precision = model, precision
        self.name = "torch.compile" if compile else "torch"
        wrap = torch.compile if compile else (lambda fn: fn)
        self._encode, self._dense = wrap(model.encode), wrap(model.decode_dense)

    def encode(self, x: torch.Tensor) -> FrameFeatures:
        return self._encode(x, self.precision)

    def query(
        self, feats: FrameFeatures, uv: torch.Tensor, costs: CostModel | None = None
    ) -> tuple[torch.Tensor, QueryPlan | None]:
        return self.model.execute(feats, uv, self.precision, costs=costs)

    def dense(self, feats: FrameFeatures) -> torch.Tensor:
        return self._dense(feats, self.precision)


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

    def query(
        self, feats: FrameFeatures, uv: torch.Tensor, costs: CostModel | None = None
    ) -> tuple[torch.Tensor, QueryPlan | None]:
        return self.runtime.query(feature_tensors(feats), uv), None

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
    if name in ("torch", "torch.compile"):
        return TorchBackend(model.to(device).eval(), precision, compile=name == "torch.compile")
    if name != "onnxruntime":
        raise ValueError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    if ckpt is None or not onnx_dir:
        raise ValueError("backend onnxruntime needs the checkpoint and onnx_dir (the directory spd-export wrote)")
    return OnnxRuntimeBackend(onnx_dir, ckpt, device, precision, providers)
