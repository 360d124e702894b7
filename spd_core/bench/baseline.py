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

from spd_core.bench.flops import count_macs
from spd_core.bench.timing import _query_points, sample_bilinear
from spd_core.clock import paired_ratio, time_interleaved
from spd_core.device import autocast
from spd_core.model.fpn import FeatureFusionBlock
from spd_core.model.spd_model import ModelConfig, SPDModel

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
    precision: str = "fp32",
) -> dict[str, Any]:
    """SPD (``encoder`` at network input ``size``: frame pass + K planned queries) against the
    DAv2-S-shaped model (forward + lookup) at its input for the same camera, matched by
    ``matches`` (:func:`dav2_input_size`), both in ``precision``.

    Per K, SPD's frame and each baseline's are timed in interleaved rounds
    (:func:`~spd_core.clock.time_interleaved`); the ratio is the median of the rounds'
    ratios. MACs (convs and matmuls, :func:`~spd_core.bench.flops.count_macs`) are counted on
    the same calls: their ratio is what equal efficiency per MAC would give.
    """
    torch.manual_seed(seed)
    spd = SPDModel(ModelConfig(encoder=encoder)).eval().to(device)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(device)
    costs = spd.measure_costs(spd.encode(x, precision), precision)
    models = {m: DAv2SmallShaped(dav2_input_size(size, m)).eval().to(device) for m in matches}
    inputs = {
        m: torch.randn(1, 3, *dav2_input_size(size, m), generator=torch.Generator().manual_seed(seed)) for m in matches
    }
    inputs = {m: v.to(device) for m, v in inputs.items()}

    def spd_frame(uv: torch.Tensor) -> torch.Tensor:
        feats = spd.encode(x, precision)
        return spd.execute(feats, uv, precision, costs=costs)[0]

    def forward(m: str) -> torch.Tensor:
        with autocast(device, precision):
            return models[m](inputs[m]).float()

    def dav2_frame(m: str, uv: torch.Tensor) -> torch.Tensor:
        return sample_bilinear(forward(m), uv)

    frame = time_interleaved(
        {"spd": lambda: spd.encode(x, precision), **{m: (lambda m=m: forward(m)) for m in matches}},
        device,
        repeats,
        warmup,
    )
    feats = spd.encode(x, precision)
    spd_macs = count_macs(lambda: spd.encode(x, precision))[0]
    query_macs = {}
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in matches}
    for k in ks:
        uv = _query_points(k, size, device, seed)
        buv = {m: _query_points(k, tuple(inputs[m].shape[-2:]), device, seed) for m in matches}
        fns = {"spd": lambda uv=uv: spd_frame(uv)}
        fns |= {m: (lambda m=m, uv=buv[m]: dav2_frame(m, uv)) for m in matches}
        timed = time_interleaved(fns, device, repeats, warmup)
        query_macs[k] = count_macs(lambda uv=uv: spd.execute(feats.select(0), uv, precision, costs=costs))[0]
        for m in matches:
            rows[m].append(
                {
                    "k": k,
                    "spd_ms": timed["spd"]["median_ms"],
                    "baseline_ms": timed[m]["median_ms"],
                    "ratio": paired_ratio(timed[m], timed["spd"]),
                    "spd_macs": spd_macs + query_macs[k],
                }
            )
    baselines = []
    for m in matches:
        macs = count_macs(lambda m=m: forward(m))[0]
        for r in rows[m]:
            r["mac_ratio"] = macs / r["spd_macs"]
        log.info("DAv2-S-shaped at %dx%d: forward %.1f ms", *inputs[m].shape[-2:], frame[m]["median_ms"])
        baselines.append(
            {
                "match": m,
                "size": list(inputs[m].shape[-2:]),
                "forward_ms": frame[m]["median_ms"],
                "forward_ratio": paired_ratio(frame[m], frame["spd"]),
                "macs": macs,
                "rows": rows[m],
            }
        )
    return {
        "encoder": encoder,
        "size": list(size),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "precision": precision,
        "spd_encode_ms": frame["spd"]["median_ms"],
        "spd_encode_macs": spd_macs,
        "spd_query_macs": {str(k): v for k, v in query_macs.items()},
        "baselines": baselines,
    }
