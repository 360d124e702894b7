"""SPD v15: ConvNeXt V2 encoder + DPT-style FPN + local path, with exact O(K) depth queries.

    model = SPDModel(ModelConfig(encoder="convnextv2_tiny"))
    feats = model.encode(x)            # x [B,3,H,W] normalized, H,W multiples of 32
    depth = model.decode_dense(feats)  # [B,1,H,W] metric depth
    d_q = model.query(feats, uv)       # uv [B,K,2] pixels (x right, y down) -> [B,K]

``query`` equals the bilinear sample of ``decode_dense`` at ``uv`` to float round-off
(DESIGN §1); see :mod:`spd_core.model.local_path` for how, and :mod:`spd_core.model.query_plan`
for the cheapest of its exact executions (windows, shared tiles, dense) that a call picks.

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

from spd_core.clock import time_interleaved
from spd_core.device import autocast
from spd_core.model.fpn import DPTFPN
from spd_core.model.local_path import QUERY_OUT, LocalPath
from spd_core.model.query_plan import TILE_SIZES, CostModel, QueryPlan, mac_costs, plan_queries, tiles_per_pass

log = logging.getLogger(__name__)

DEPTH_PRIOR_M = 2.5  # dense_head bias = ln 2.5 (plan §6.5)
# Queries per batched window pass: bounds memory for any K. On the CPU smaller chunks stay in cache
# (spd-bench --chunk: 256 is ~25% faster than 1024 at K=1024); a GPU wants larger batches.
QUERY_CHUNK = {"cpu": 256, "cuda": 1024}


def _is_number(value: object) -> bool:
    """A finite int or float (bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_encoder(name: object) -> bool:
    """A ConvNeXt V2 architecture timm knows (a registry lookup: nothing is downloaded)."""
    return isinstance(name, str) and name.startswith("convnextv2_") and timm.is_model(name)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (stored in checkpoints)."""

    encoder: str = "convnextv2_tiny"  # any timm convnextv2_* (atto ... huge)
    fpn_dim: int = 64  # D of the DPT fusion (plan §5)
    local_dim: int = 64  # channels of the local path convs
    head_dim: int = 32  # conv_f output channels fed to dense_head
    align_corners: bool = False  # local-path ×2 upsampling; both settings stay exact
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        """ValueError naming the first field that is not what the architecture needs (one line)."""
        for name, ok, expected in (
            ("encoder", _is_encoder(self.encoder), "a timm convnextv2_* model name (e.g. convnextv2_tiny)"),
            ("fpn_dim", _is_positive_int(self.fpn_dim), "an int > 0"),
            ("local_dim", _is_positive_int(self.local_dim), "an int > 0"),
            ("head_dim", _is_positive_int(self.head_dim), "an int > 0"),
            ("align_corners", isinstance(self.align_corners, bool), "true or false"),
            ("drop_path_rate", _is_number(self.drop_path_rate) and 0 <= self.drop_path_rate < 1, "a number in [0, 1)"),
        ):
            if not ok:
                raise ValueError(f"{name} = {getattr(self, name)!r:.60} is not valid; expected {expected}")

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise ValueError(f"model config is a {type(d).__name__}; expected a mapping of {sorted(known)}")
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FrameFeatures:
    """What one frame pass (encoder + FPN + the local path's stride-8 convs) leaves for the decoders.

    l1: [B,C1,H/4,W/4] encoder stage 1; local_s8: [B,local_dim,H/8,W/8] the ``stride_8_map``
    through conv_s8_1, conv_s8_2; size: (H, W) of the network input; dense_depth: the dense
    metric depth [B,1,H,W], kept once a query call computed it (see :mod:`query_plan`).
    """

    l1: torch.Tensor
    local_s8: torch.Tensor
    size: tuple[int, int]
    dense_depth: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.local_s8.shape[0]

    def select(self, i: int) -> FrameFeatures:
        """Features of batch element ``i`` alone (batch size 1)."""
        return FrameFeatures(self.l1[i : i + 1], self.local_s8[i : i + 1], self.size)

    def to(self, device: torch.device | str) -> FrameFeatures:
        return FrameFeatures(self.l1.to(device), self.local_s8.to(device), self.size)

    def nbytes(self) -> int:
        kept = (self.l1, self.local_s8, *(() if self.dense_depth is None else (self.dense_depth,)))
        return sum(t.numel() * t.element_size() for t in kept)


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


def query_origins(
    uv: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query pixels uv [N,2] on a network input of ``size`` -> (valid, u, v, oy, ox): finite and on
    the image; u, v with invalid ones at 0; the 2×2 origin (floor, clamped so the block fits)."""
    h, w = size
    u, v = uv.unbind(-1)
    valid = torch.isfinite(uv).all(-1) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    u, v = torch.where(valid, u, 0.0), torch.where(valid, v, 0.0)
    return valid, u, v, v.floor().long().clamp(0, h - 2), u.floor().long().clamp(0, w - 2)


def gather_2x2(maps: torch.Tensor, m: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The 2×2 blocks [N,2,2] of ``maps`` [M,H,W] at rows y, y+1 and columns x, x+1 of map m [N]:
    one gather from the flat maps (a 3-index gather is several times slower on the CPU)."""
    h, w = maps.shape[-2:]
    start = (m * h + y) * w + x
    corners = torch.tensor([0, 1, w, w + 1], device=maps.device)
    return maps.reshape(-1)[start[:, None] + corners].view(-1, 2, 2)


def bilinear_blend(
    d: torch.Tensor, u: torch.Tensor, v: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor
) -> torch.Tensor:
    """Depth at (u, v) [N] from the 2×2 depths d [N,2,2] at rows oy, oy+1 and columns ox, ox+1."""
    wx, wy = (u - ox).view(-1, 1), (v - oy).view(-1)
    rows = d[:, :, 0] * (1 - wx) + d[:, :, 1] * wx  # [N,2]: depth at rows oy, oy+1
    return rows[:, 0] * (1 - wy) + rows[:, 1] * wy


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
            local_s8 = self.local.stride8(self.fpn(l2, l3, l4))
        # channels_last: a query's window is then whole C-vectors of these maps (LocalPath.at_windows)
        cl = torch.channels_last
        return FrameFeatures(
            l1=l1.contiguous(memory_format=cl), local_s8=local_s8.contiguous(memory_format=cl), size=(h, w)
        )

    def decode_dense(self, feats: FrameFeatures, precision: str = "fp32") -> torch.Tensor:
        """Padded local path on full maps -> metric depth [B,1,H,W]."""
        with autocast(feats.local_s8.device, precision):
            log_depth = self.dense_head(self.local.dense(feats.local_s8, feats.l1))
        return log_depth.float().exp()

    def query(
        self,
        feats: FrameFeatures,
        uv: torch.Tensor,
        precision: str = "fp32",
        chunk: int | None = None,
        costs: CostModel | None = None,
    ) -> torch.Tensor:
        """Metric depth at pixels ``uv`` [B,K,2] (x right, y down, pixel centres at integers).

        Returns [B,K]: the bilinear sample of ``decode_dense(feats)`` at each query; NaN where
        ``uv`` is not finite or outside [0, W-1] × [0, H-1]. ``costs`` None: every query on its
        own windows, O(K) work in chunks of ``chunk`` (a lookup if the frame keeps its dense map);
        else the cheapest exact execution under ``costs`` (:meth:`execute`).
        """
        return self.execute(feats, uv, precision, chunk, costs)[0]

    def execute(
        self,
        feats: FrameFeatures,
        uv: torch.Tensor,
        precision: str = "fp32",
        chunk: int | None = None,
        costs: CostModel | None = None,
    ) -> tuple[torch.Tensor, QueryPlan]:
        """:meth:`query`, and the plan it ran (windows, shared tiles or dense; :func:`plan_queries`)."""
        b, h, w = feats.batch_size, *feats.size
        if uv.ndim != 3 or uv.shape[0] != b or uv.shape[2] != 2:
            raise ValueError(f"uv must be [B={b},K,2], got {tuple(uv.shape)}")
        k = uv.shape[1]
        dev = feats.local_s8.device
        valid, u, v, oy, ox = query_origins(uv.to(device=dev, dtype=torch.float32).reshape(b * k, 2), (h, w))
        bidx = torch.arange(b, device=dev).repeat_interleave(k)
        # queries sharing a 2×2 origin share its depths: plan and run the distinct origins only
        (ub, uy, ux), inverse = (bidx, oy, ox), None
        if costs is not None and b * k > 1 and feats.dense_depth is None:
            key, inverse = torch.unique((bidx * h + oy) * w + ox, return_inverse=True)
            ub, uy, ux = key // (h * w), key % (h * w) // w, key % w
        chunk = max(1, chunk or QUERY_CHUNK.get(dev.type, 1024))
        plan = plan_queries(ub, uy, ux, (h, w), costs, feats.dense_depth is not None, chunk)
        if plan.mode in ("dense", "lookup"):
            if feats.dense_depth is None:
                feats.dense_depth = self.decode_dense(feats, precision)
            d = gather_2x2(feats.dense_depth[:, 0], bidx, oy, ox)
        else:
            d = torch.empty(len(uy), 2, 2, device=dev)
            for s in range(0, len(plan.windows), chunk):
                i = plan.windows[s : s + chunk]
                d[i] = self._unit_depth(feats, ub[i], uy[i], ux[i], QUERY_OUT, precision)
            if plan.tile:
                d[plan.tiled] = self._tiled_depth(feats, plan, uy, ux, chunk, precision)
            if inverse is not None:
                d = d[inverse]
        return torch.where(valid, bilinear_blend(d, u, v, oy, ox), torch.nan).view(b, k), plan

    def _unit_depth(
        self, feats: FrameFeatures, bidx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, out: int, precision: str
    ) -> torch.Tensor:
        """Metric depth [N,out,out] of N execution units (query windows or tiles) from (oy, ox)."""
        with autocast(oy.device, precision):
            feat = self.local.at_windows(feats.local_s8, feats.l1, bidx, oy, ox, feats.size, out)
            log_d = self.dense_head(feat)
        return log_d.float().exp()[:, 0]

    def _tiled_depth(
        self, feats: FrameFeatures, plan: QueryPlan, oy: torch.Tensor, ox: torch.Tensor, chunk: int, precision: str
    ) -> torch.Tensor:
        """The 2×2 depths [M,2,2] of the plan's tiled queries, read from their shared tiles."""
        t = plan.tile
        per_pass = tiles_per_pass(t, chunk)
        tiles = torch.cat(
            [
                self._unit_depth(
                    feats,
                    plan.tile_bidx[s : s + per_pass],
                    plan.tile_oy[s : s + per_pass],
                    plan.tile_ox[s : s + per_pass],
                    t,
                    precision,
                )
                for s in range(0, len(plan.tile_bidx), per_pass)
            ]
        )  # [n_tiles, T, T]
        q, tid = plan.tiled, plan.tile_of
        return gather_2x2(tiles, tid, oy[q] - plan.tile_oy[tid], ox[q] - plan.tile_ox[tid])

    def mac_costs(self, size: tuple[int, int], device: torch.device | str = "cpu") -> CostModel:
        """The planner's costs in MACs for network input ``size`` (H, W)."""
        c = self.config
        tables = {t: self.local.axis_tables(size, t, torch.device(device)) for t in (QUERY_OUT, *TILE_SIZES)}
        return mac_costs(tables, self.local.proj_l1.in_channels, c.local_dim, c.head_dim)

    @torch.inference_mode()
    def measure_costs(self, feats: FrameFeatures, precision: str = "fp32", repeats: int = 7) -> CostModel:
        """The planner's costs in ms, timed on ``feats``' device and size: every unit in each of
        ``repeats`` interleaved rounds, each unit's best round (other processes only ever add time,
        and a slow spell of the machine would otherwise fall on some units and not others)."""
        dev, (h, w) = feats.local_s8.device, feats.size
        one = feats.select(0)
        g = torch.Generator().manual_seed(0)
        kept = FrameFeatures(one.l1, one.local_s8, one.size, self.decode_dense(one, precision))

        def units(out: int, n: int):
            oy = torch.randint(0, h - out + 1, (n,), generator=g).to(dev)
            ox = torch.randint(0, w - out + 1, (n,), generator=g).to(dev)
            bidx = torch.zeros(n, dtype=torch.long, device=dev)
            return lambda: self._unit_depth(one, bidx, oy, ox, out, precision)

        def lookups(k: int):
            uv = (torch.rand(1, k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])).to(dev)
            return lambda: self.execute(kept, uv, precision)

        n = 32
        fns = {
            "window": units(QUERY_OUT, 1),
            "windows": units(QUERY_OUT, n),
            "few": lookups(n),
            "many": lookups(32 * n),
        }
        fns |= {f"tile{t}": units(t, 8) for t in TILE_SIZES if t <= min(h, w)}
        fns["dense"] = lambda: self.decode_dense(one, precision)
        best = {k: v["min_ms"] for k, v in time_interleaved(fns, dev, repeats, warmup=1).items()}
        window = max((best["windows"] - best["window"]) / (n - 1), 1e-6)  # per query, beyond a pass's fixed cost
        call = max(best["window"] - window, 0.0)
        tiles = {t: max((best[f"tile{t}"] - call) / 8, window) for t in TILE_SIZES if f"tile{t}" in best}
        lookup = max((best["many"] - best["few"]) / (31 * n), 1e-6)  # per query; the call's fixed part goes to dense
        dense = best["dense"] + max(best["few"] - n * lookup, 0.0)
        return CostModel(window, tiles, dense, lookup, unit="ms", call=call)

    def forward(self, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """Training forward: x [B,3,H,W] -> dense metric depth [B,1,H,W]."""
        return self.decode_dense(self.encode(x, precision), precision)
