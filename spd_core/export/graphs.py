"""The three ONNX graphs of an SPDModel, as traceable modules with tensor-only signatures.

=======  ==================================================  =========================================
part     inputs                                              outputs
=======  ==================================================  =========================================
encode   image [1,3,H,W] float32 (normalized)                l1 [1,H/4,W/4,C1], local_s8 [1,H/8,W/8,D]
query    l1, local_s8, uv [1,K,2] float32 (network pixels)   depth [1,K] float32, NaN outside
dense    l1, local_s8                                        depth [1,1,H,W] float32
=======  ==================================================  =========================================

H and W are any multiples of 32 and K any count (0 included): the window tables of the exact
query are computed in the graph from the feature shapes. The features travel channels-last
(NHWC; torch's ``channels_last`` NCHW tensors share that memory): the query's window gathers
index rows and columns of the maps, and an NCHW map would be transposed whole on every query
call. With fp16 weights the features are fp16; the image, uv and depth stay float32 (pixel
positions need float32).
"""

from __future__ import annotations

import torch
from torch import nn

from spd_core.model.local_path import QUERY_OUT
from spd_core.model.spd_model import FrameFeatures, SPDModel, bilinear_blend, query_origins

FEATURES = ("l1", "local_s8")  # the FrameFeatures fields the frame graph returns and the others take
STRIDES = {"l1": 4, "local_s8": 8}  # network input size / feature map size
PARTS = ("encode", "query", "dense")


def feature_tensors(feats: FrameFeatures) -> tuple[torch.Tensor, ...]:
    """The feature maps [1,C,h,w], in ``FEATURES`` order."""
    return tuple(getattr(feats, name) for name in FEATURES)


def frame_features(*tensors: torch.Tensor) -> FrameFeatures:
    """FrameFeatures from the maps [1,C,h,w] in ``FEATURES`` order; the input size follows from l1."""
    named = dict(zip(FEATURES, tensors, strict=True))
    l1 = named["l1"]
    s = STRIDES["l1"]
    return FrameFeatures(**named, size=(l1.shape[-2] * s, l1.shape[-1] * s))


class EncodeGraph(nn.Module):
    """image [1,3,H,W] float32 -> the frame features (in the weights' dtype)."""

    def __init__(self, model: SPDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model.encode(image.to(self.model.dense_head.weight.dtype))
        return tuple(t.permute(0, 2, 3, 1) for t in feature_tensors(feats))  # NHWC


class QueryGraph(nn.Module):
    """Frame features + uv [1,K,2] -> exact sparse depth [1,K] (SPDModel.query in one pass)."""

    def __init__(self, model: SPDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, l1: torch.Tensor, local_s8: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        feats = frame_features(l1.permute(0, 3, 1, 2), local_s8.permute(0, 3, 1, 2))  # NHWC in
        k = uv.shape[1]
        # the contract of SPDModel.query, per-query windows: NaN off the image, 2x2 origins clamped
        valid, u, v, oy, ox = query_origins(uv.reshape(k, 2).float(), feats.size)
        d = self.model._unit_depth(feats, torch.zeros_like(ox), oy, ox, QUERY_OUT, "fp32")
        return torch.where(valid, bilinear_blend(d, u, v, oy, ox), torch.nan).view(1, k)


class DenseGraph(nn.Module):
    """Frame features -> dense metric depth [1,1,H,W] float32."""

    def __init__(self, model: SPDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, l1: torch.Tensor, local_s8: torch.Tensor) -> torch.Tensor:
        return self.model.decode_dense(frame_features(l1.permute(0, 3, 1, 2), local_s8.permute(0, 3, 1, 2)))


GRAPHS = {"encode": EncodeGraph, "query": QueryGraph, "dense": DenseGraph}
