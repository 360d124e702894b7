"""SPD v15: ConvNeXt V2 encoder + DPT-style FPN + local path, with exact O(K) depth queries.

    model = SPDModel(ModelConfig(encoder="convnextv2_tiny"))
    feats = model.encode(x)            # x [B,3,H,W] normalized, H,W multiples of 32
    depth = model.decode_dense(feats)  # [B,1,H,W] metric depth
    d_q = model.query(feats, uv)       # uv [B,K,2] pixels (x right, y down) -> [B,K]

``query`` equals the bilinear sample of ``decode_dense`` at ``uv`` to float round-off
(DESIGN §1); see :mod:`spd_core.model.local_path` for how.

ConvNeXt V2 pretrained weights (timm ``convnextv2_*.fcmae*``) are licensed CC-BY-NC-4.0.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, fields

import timm
import torch
from torch import nn

from spd_core.device import autocast
from spd_core.model.fpn import DPTFPN
from spd_core.model.local_path import LocalPath

log = logging.getLogger(__name__)

DEPTH_PRIOR_M = 2.5  # dense_head bias = ln 2.5 (plan §6.5)
# Queries per batched window pass: bounds memory for any K. On the CPU smaller chunks stay in cache
# (spd-bench --chunk: 256 is ~25% faster than 1024 at K=1024); a GPU wants larger batches.
QUERY_CHUNK = {"cpu": 256, "cuda": 1024}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (stored in checkpoints)."""

    encoder: str = "convnextv2_tiny"  # any timm convnextv2_* (atto ... huge)
    fpn_dim: int = 64  # D of the DPT fusion (plan §5)
    local_dim: int = 64  # channels of the local path convs
    head_dim: int = 32  # conv_f output channels fed to dense_head
    align_corners: bool = False  # local-path ×2 upsampling; both settings stay exact
    drop_path_rate: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FrameFeatures:
    """What one encoder pass leaves for the decoders.

    l1: [B,C1,H/4,W/4] encoder stage 1; s8: [B,fpn_dim,H/8,W/8] ``stride_8_map``;
    size: (H, W) of the network input.
    """

    l1: torch.Tensor
    s8: torch.Tensor
    size: tuple[int, int]

    @property
    def batch_size(self) -> int:
        return self.s8.shape[0]

    def select(self, i: int) -> FrameFeatures:
        """Features of batch element ``i`` alone (batch size 1)."""
        return FrameFeatures(self.l1[i : i + 1], self.s8[i : i + 1], self.size)

    def to(self, device: torch.device | str) -> FrameFeatures:
        return FrameFeatures(self.l1.to(device), self.s8.to(device), self.size)

    def nbytes(self) -> int:
        return self.l1.numel() * self.l1.element_size() + self.s8.numel() * self.s8.element_size()


def create_encoder(name: str, weights: str | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """timm ConvNeXt V2 returning the 4 stage maps (strides 4, 8, 16, 32).

    ``weights``: None = random init (never downloads); an existing file = local weights
    (a timm/ConvNeXt V2 state dict, loaded through timm's ``pretrained_cfg_overlay``);
    anything else = a timm pretrained tag or full name (``fcmae``, ``convnextv2_tiny.fcmae``),
    which timm downloads once into its cache. ConvNeXt V2 weights are CC-BY-NC-4.0.
    """
    if not name.startswith("convnextv2_"):
        raise ValueError(f"encoder {name!r} is not a timm convnextv2_* model (e.g. convnextv2_tiny)")
    kwargs: dict = dict(features_only=True, out_indices=(0, 1, 2, 3), drop_path_rate=drop_path_rate)
    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    if os.path.isfile(weights):
        log.info("encoder %s: local weights %s (ConvNeXt V2 weights are CC-BY-NC-4.0)", name, weights)
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=weights), **kwargs)
    if "/" in weights or weights.endswith((".pt", ".pth", ".safetensors", ".bin")):
        raise FileNotFoundError(f"encoder weights file {weights!r} not found; give an existing file path")
    full = weights if weights.startswith(name) else f"{name}.{weights}"
    log.info("encoder %s: timm pretrained %s (downloads once; CC-BY-NC-4.0)", name, full)
    return timm.create_model(full, pretrained=True, **kwargs)


class SPDModel(nn.Module):
    """Encoder + DPT FPN + local path + dense_head; depth = exp(dense_head(·))."""

    def __init__(self, config: ModelConfig | None = None, encoder_weights: str | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.encoder = create_encoder(config.encoder, encoder_weights, config.drop_path_rate)
        c1, c2, c3, c4 = self.encoder.feature_info.channels()
        self.fpn = DPTFPN((c2, c3, c4), dim=config.fpn_dim)
        self.local = LocalPath(c1, config.fpn_dim, config.local_dim, config.head_dim, config.align_corners)
        self.dense_head = nn.Conv2d(config.head_dim, 1, kernel_size=1)
        nn.init.constant_(self.dense_head.bias, math.log(DEPTH_PRIOR_M))

    @property
    def device(self) -> torch.device:
        return self.dense_head.weight.device

    def encode(self, x: torch.Tensor, precision: str = "fp32") -> FrameFeatures:
        """x [B,3,H,W] (ImageNet-normalized, H and W multiples of 32) -> FrameFeatures."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"encode expects [B,3,H,W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"input size {h}x{w} must be multiples of 32 (resize or pad the image)")
        with autocast(x.device, precision):
            l1, l2, l3, l4 = self.encoder(x)
            s8 = self.fpn(l2, l3, l4)
        return FrameFeatures(l1=l1, s8=s8, size=(h, w))

    def decode_dense(self, feats: FrameFeatures, precision: str = "fp32") -> torch.Tensor:
        """Padded local path on full maps -> metric depth [B,1,H,W]."""
        with autocast(feats.s8.device, precision):
            log_depth = self.dense_head(self.local.dense(feats.s8, feats.l1))
        return log_depth.float().exp()

    def query(
        self, feats: FrameFeatures, uv: torch.Tensor, precision: str = "fp32", chunk: int | None = None
    ) -> torch.Tensor:
        """Metric depth at pixels ``uv`` [B,K,2] (x right, y down, pixel centres at integers).

        Returns [B,K]: the bilinear sample of ``decode_dense(feats)`` at each query; NaN where
        ``uv`` is not finite or outside [0, W-1] × [0, H-1]. Work is O(K), in chunks of ``chunk``.
        """
        b, h, w = feats.batch_size, *feats.size
        if uv.ndim != 3 or uv.shape[0] != b or uv.shape[2] != 2:
            raise ValueError(f"uv must be [B={b},K,2], got {tuple(uv.shape)}")
        k = uv.shape[1]
        uv = uv.to(device=feats.s8.device, dtype=torch.float32).reshape(b * k, 2)
        u, v = uv.unbind(-1)
        valid = torch.isfinite(uv).all(-1) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        u, v = torch.where(valid, u, 0.0), torch.where(valid, v, 0.0)
        ox = u.floor().long().clamp(0, w - 2)
        oy = v.floor().long().clamp(0, h - 2)
        bidx = torch.arange(b, device=uv.device).repeat_interleave(k)
        out = torch.empty(b * k, device=uv.device)
        chunk = max(1, chunk or QUERY_CHUNK.get(uv.device.type, 1024))
        for s in range(0, b * k, chunk):
            e = min(s + chunk, b * k)
            d = self._unit_depth(feats, bidx[s:e], oy[s:e], ox[s:e], precision)
            wx = (u[s:e] - ox[s:e]).view(-1, 1)
            wy = (v[s:e] - oy[s:e]).view(-1)
            rows = d[:, :, 0] * (1 - wx) + d[:, :, 1] * wx  # [n,2]
            out[s:e] = rows[:, 0] * (1 - wy) + rows[:, 1] * wy
        return torch.where(valid, out, torch.nan).view(b, k)

    def _unit_depth(
        self, feats: FrameFeatures, bidx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, precision: str
    ) -> torch.Tensor:
        """Metric depth [N,2,2] at rows oy..oy+1, cols ox..ox+1 of N queries (also the ONNX query graph's)."""
        with autocast(oy.device, precision):
            feat = self.local.at_windows(feats.s8, feats.l1, bidx, oy, ox, feats.size)
            log_d = self.dense_head(feat)
        return log_d.float().exp()[:, 0]

    def forward(self, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """Training forward: x [B,3,H,W] -> dense metric depth [B,1,H,W]."""
        return self.decode_dense(self.encode(x, precision), precision)
