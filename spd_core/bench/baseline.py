"""The anchor a user would run instead of SPD: a Depth-Anything-V2-Small-shaped dense model.

ViT-S/14 (timm ``vit_small_patch14_dinov2``, random weights, never downloaded) and the DPT head of
Depth Anything V2 Small, by shape: tokens of layers 2, 5, 8, 11 projected to 48, 96, 192, 384
channels and reassembled at ×4, ×2, ×1, ÷2 of the patch grid, a 3×3 conv to 64 features each,
four fusion blocks (RCUs, :class:`~spd_core.model.fpn.FeatureFusionBlock`), then the head:
conv3×3 64→32, bilinear to the input size, conv3×3 32→32, ReLU, conv1×1 → depth. Its cost, not its
accuracy, is the point: :func:`run_baseline` times it (forward + a K-point lookup) against SPD
(frame pass + K planned queries) in the same process.
"""

from __future__ import annotations

import logging
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from spd_core.bench.timing import _query_points, sample_bilinear, time_fn
from spd_core.model.fpn import FeatureFusionBlock
from spd_core.model.spd_model import FrameFeatures, ModelConfig, SPDModel

log = logging.getLogger(__name__)

VIT = "vit_small_patch14_dinov2"
LAYERS = (2, 5, 8, 11)  # Depth Anything V2 Small's intermediate layers
OUT_CHANNELS = (48, 96, 192, 384)
FEATURES = 64
PATCH = 14
SHORT_SIDE = 518  # Depth Anything V2's default input: short side 518, aspect kept, multiples of 14
BASELINE_KS = (1, 16, 64, 128, 256)


def dav2_input_size(size: tuple[int, int], match: str = "short_side") -> tuple[int, int]:
    """Depth Anything V2's input for a camera of ``size`` (H, W): the short side 518 (``short_side``)
    or about the same pixel count (``pixels``), aspect kept, each side a multiple of 14."""
    h, w = size
    s = SHORT_SIDE / min(h, w) if match == "short_side" else 1.0
    return max(PATCH, round(h * s / PATCH) * PATCH), max(PATCH, round(w * s / PATCH) * PATCH)


class DAv2SmallShaped(nn.Module):
    """x [B,3,H,W] (H, W multiples of 14) -> depth [B,1,H,W]; random weights."""

    def __init__(self, img_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = timm.create_model(VIT, pretrained=False, img_size=img_size)
        dim = self.backbone.embed_dim
        self.projects = nn.ModuleList(nn.Conv2d(dim, c, kernel_size=1) for c in OUT_CHANNELS)
        c1, c2, _, c4 = OUT_CHANNELS
        self.resize = nn.ModuleList(
            [
                nn.ConvTranspose2d(c1, c1, kernel_size=4, stride=4),
                nn.ConvTranspose2d(c2, c2, kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(c4, c4, kernel_size=3, stride=2, padding=1),
            ]
        )
        self.layer_rn = nn.ModuleList(nn.Conv2d(c, FEATURES, 3, padding=1, bias=False) for c in OUT_CHANNELS)
        self.refinenet4 = FeatureFusionBlock(FEATURES, has_skip=False)
        self.refinenet3 = FeatureFusionBlock(FEATURES, has_skip=True)
        self.refinenet2 = FeatureFusionBlock(FEATURES, has_skip=True)
        self.refinenet1 = FeatureFusionBlock(FEATURES, has_skip=True)
        self.output_conv1 = nn.Conv2d(FEATURES, FEATURES // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(FEATURES // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_intermediates(x, indices=LAYERS, output_fmt="NCHW", intermediates_only=True)
        f1, f2, f3, f4 = (
            rn(rs(pj(t))) for t, pj, rs, rn in zip(tokens, self.projects, self.resize, self.layer_rn, strict=True)
        )
        r4 = self.refinenet4(f4, size=f3.shape[-2:])
        r3 = self.refinenet3(r4, size=f2.shape[-2:], skip=f3)
        r2 = self.refinenet2(r3, size=f1.shape[-2:], skip=f2)
        r1 = self.refinenet1(r2, size=(2 * f1.shape[-2], 2 * f1.shape[-1]), skip=f1)
        out = F.interpolate(self.output_conv1(r1), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.output_conv2(out)


def _spd_times(
    encoder: str, size: tuple[int, int], device: torch.device, ks: tuple[int, ...], repeats: int, warmup: int, seed: int
) -> tuple[float, dict[int, float]]:
    """SPD's frame pass ms and, per K, its planned query ms (a fresh frame each run)."""
    torch.manual_seed(seed)
    spd = SPDModel(ModelConfig(encoder=encoder)).eval().to(device)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(device)
    feats = spd.encode(x)
    costs = spd.measure_costs(feats)
    encode = time_fn(lambda: spd.encode(x), device, repeats, warmup)["median_ms"]

    def query(uv: torch.Tensor) -> Any:
        return spd.execute(FrameFeatures(feats.l1, feats.local_s8, feats.size), uv, costs=costs)

    queries = {}
    for k in ks:
        uv = _query_points(k, size, device, seed)
        queries[k] = time_fn(lambda uv=uv: query(uv), device, repeats, warmup)["median_ms"]
    return encode, queries


def _baseline_times(
    size: tuple[int, int], device: torch.device, ks: tuple[int, ...], repeats: int, warmup: int, seed: int
) -> tuple[float, dict[int, float]]:
    """The DAv2-S-shaped model's forward ms at input ``size`` and, per K, the lookup ms."""
    model = DAv2SmallShaped(size).eval().to(device)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(device)
    forward = time_fn(lambda: model(x), device, repeats, warmup)["median_ms"]
    depth = model(x)
    lookups = {}
    for k in ks:
        uv = _query_points(k, size, device, seed)
        lookups[k] = time_fn(lambda uv=uv: sample_bilinear(depth, uv), device, repeats, warmup)["median_ms"]
    return forward, lookups


@torch.inference_mode()
def run_baseline(
    encoder: str,
    size: tuple[int, int],
    device: torch.device,
    ks: tuple[int, ...] = BASELINE_KS,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    matches: tuple[str, ...] = ("short_side", "pixels"),
) -> dict[str, Any]:
    """SPD (``encoder`` at network input ``size``: frame pass + K planned queries) against the
    DAv2-S-shaped model (forward + lookup) at its input for the same camera, matched by
    ``matches`` (:func:`dav2_input_size`)."""
    encode, queries = _spd_times(encoder, size, device, ks, repeats, warmup, seed)
    baselines = []
    for match in matches:
        bsize = dav2_input_size(size, match)
        forward, lookups = _baseline_times(bsize, device, ks, repeats, warmup, seed)
        log.info("DAv2-S-shaped at %dx%d: forward %.1f ms", *bsize, forward)
        rows = [
            {
                "k": k,
                "spd_ms": encode + queries[k],
                "baseline_ms": forward + lookups[k],
                "ratio": (forward + lookups[k]) / (encode + queries[k]),
            }
            for k in ks
        ]
        baselines.append({"match": match, "size": list(bsize), "forward_ms": forward, "rows": rows})
    return {
        "encoder": encoder,
        "size": list(size),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "spd_encode_ms": encode,
        "spd_query_ms": {str(k): v for k, v in queries.items()},
        "baselines": baselines,
    }
