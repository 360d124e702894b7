"""An export against the model it came from: same input, features, sparse and dense depth."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spd_core.export.graphs import feature_tensors
from spd_core.export.ort import OnnxRuntimeModel
from spd_core.model.spd_model import SPDModel

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # max relative error of the depth, sparse and dense


def probe_pixels(size: tuple[int, int], k: int, seed: int = 0) -> torch.Tensor:
    """uv [1,N,2]: ``k`` random sub-pixel positions, the four corners, the edge midpoints and
    positions half a pixel inside every border."""
    h, w = size
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand(k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    edges = [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, 0], [0, (h - 1) / 2]]
    edges += [[0.5, 0.5], [w - 1.5, h - 1.5], [w - 1.25, 0.75], [0.25, h - 1.75]]
    return torch.cat([uv, torch.tensor(edges, dtype=torch.float32)])[None]


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()).abs() / b.double().abs()).max())


@torch.inference_mode()
def compare(model: SPDModel, runtime: OnnxRuntimeModel, size: tuple[int, int], k: int = 64) -> dict[str, Any]:
    """Max relative errors of the export (its own features all the way) against eager fp32 torch
    at network input ``size``, on a random image: sparse at ``probe_pixels`` and dense."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(size[0] * 7 + size[1]))
    ref = model.encode(x)
    feats = runtime.encode(x)
    uv = probe_pixels(size, k)
    sparse = max_rel(runtime.query(feats, uv), model.query(ref, uv))
    dense = max_rel(runtime.dense(feats), model.decode_dense(ref))
    feature = max(
        float((a.float() - b).abs().max() / b.abs().max()) for a, b in zip(feats, feature_tensors(ref), strict=True)
    )
    ok = bool(np.isfinite([sparse, dense]).all() and max(sparse, dense) <= TOLERANCE[runtime.precision])
    return {
        "size": list(size),
        "queries": int(uv.shape[1]),
        "sparse": sparse,
        "dense": dense,
        "features": feature,
        "ok": ok,
    }
