"""MACs per module of SPD v15 and of the full DPT-D64 decoder, beside the plan's §11 figures.

Counted with :func:`spd_core.bench.flops.count_macs` on ``meta`` tensors: the shapes flow through the
real modules but nothing is computed, so the table for convnextv2_tiny at 480×640 costs well
under a second. 1 MAC = one multiply-add of a conv or matmul (biases, norms, activations and
interpolations are not counted, as in the plan).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from spd_core.bench.flops import count_macs
from spd_core.model.dpt_reference import dpt_for
from spd_core.model.spd_model import ModelConfig, SPDModel

log = logging.getLogger(__name__)

PLAN_SIZE = (416, 544)  # the plan's §11 figures are for this input
PLAN_ENCODER = "convnextv2_tiny"
# Plan §11 figures at 416×544 (MACs). "per_query" is per query, independent of the image size.
PLAN_MACS: dict[str, float] = {
    "encoder": 10.0e9,  # §11 setup: "~10G (scales roughly linearly with area from 4.5G at 224×224)"
    "fpn": 241e6,  # §11.1 global DPT path
    "local_dense": 10.0e9,  # §11.1 "training total ~10.0G" (it includes the 241M global path)
    "per_query": 7.4e6,  # §11.1 per-query valid-conv cascade (inexact, DESIGN §1)
    "dpt_decoder": 3219e6,  # §11.3 full DPT D=64, 4 refinenets to stride 2
}
PLAN_NOTES: dict[str, str] = {
    "encoder": "the plan's ~10G is 2× low: its own rule (224² MACs × area ratio) gives the next column",
    "fpn": "proj_l2..l4 + refinenet4 + refinenet3",
    "local_dense": "local path + dense_head on full maps (the stride-8 convs included); plan's 10.0G "
    "includes the 241M FPN, its local rows sum to 9.80G",
    "local_s8": "conv_s8_1 + conv_s8_2 on the whole stride_8_map: once per frame, shared by every query",
    "per_query": "exact window execution after the shared stride-8 convs (11.1M when each query ran them); "
    "plan's 7.4M cascade is not exact",
    "dpt_decoder": "projections of 4 levels + refinenet4..1 to stride 2 (head excluded)",
    "dpt_head": "minimal depth head of the reference: Conv1×1(64→1) at stride 2 (not in the plan)",
}


def _meta_model(encoder: str) -> tuple[SPDModel, torch.nn.Module]:
    with torch.device("meta"):
        model = SPDModel(ModelConfig(encoder=encoder)).eval()
        dpt = dpt_for(model.encoder).eval()
    return model, dpt


def module_macs(encoder: str, size: tuple[int, int], k: int = 64) -> dict[str, Any]:
    """MACs of each component at ``size`` (H, W) for ``encoder``; per-query from ``k`` queries.

    Returns {"totals": {component: MACs}, "per_module": {component: {module path: MACs}}}.
    """
    model, dpt = _meta_model(encoder)
    h, w = size
    x = torch.zeros(1, 3, h, w, device="meta")
    levels = model.encoder(x)
    feats = model.encode(x)
    s8 = model.fpn(*levels[1:])
    g = torch.Generator().manual_seed(0)
    uv = (torch.rand(1, k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])).to("meta")
    parts = {
        "encoder": lambda: model.encoder(x),
        "fpn": lambda: model.fpn(*levels[1:]),
        "local_s8": lambda: model.local.stride8(s8),
        "local_rest": lambda: model.decode_dense(feats),
        "query_k": lambda: model.query(feats, uv),
        "dpt_decoder": lambda: dpt.features(*levels),
        "dpt_full": lambda: dpt(*levels),
    }
    totals, per_module = {}, {}
    for name, fn in parts.items():
        totals[name], per = count_macs(fn)
        per_module[name] = {m: v for m, v in per.items() if m != "Global"}
    x224 = torch.zeros(1, 3, 224, 224, device="meta")
    totals["encoder_224"] = count_macs(lambda: model.encoder(x224))[0]
    totals["per_query"] = totals.pop("query_k") / k
    totals["local_dense"] = totals["local_s8"] + totals.pop("local_rest")
    per_module["local_dense"] = {**per_module.pop("local_s8"), **per_module.pop("local_rest")}
    totals["dpt_head"] = totals.pop("dpt_full") - totals["dpt_decoder"]
    per_module.pop("dpt_full")
    return {"encoder": encoder, "size": [h, w], "totals": totals, "per_module": per_module}


def plan_figure(component: str, size: tuple[int, int]) -> float | None:
    """The plan's MACs for ``component``, scaled by image area when ``size`` is not 416×544."""
    if component not in PLAN_MACS:
        return None
    if component == "per_query":
        return PLAN_MACS[component]
    area = size[0] * size[1] / (PLAN_SIZE[0] * PLAN_SIZE[1])
    return PLAN_MACS[component] * area


def mac_rows(macs: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (component, measured, plan, ratio, note) for one :func:`module_macs` result."""
    size = tuple(macs["size"])
    t = macs["totals"]
    area_224 = size[0] * size[1] / 224**2
    rows = []
    for comp in ("encoder", "fpn", "local_s8", "local_dense", "per_query", "dpt_decoder", "dpt_head"):
        plan = plan_figure(comp, size) if macs["encoder"] == PLAN_ENCODER else None
        rows.append(
            {
                "component": comp,
                "measured": t[comp],
                "plan": plan,
                "ratio": t[comp] / plan if plan else None,
                "scaled_224": t["encoder_224"] * area_224 if comp == "encoder" else None,
                "note": PLAN_NOTES.get(comp, ""),
            }
        )
    return rows


def mac_crossovers(t: dict[str, float]) -> dict[str, float]:
    """K at which FPN + the shared stride-8 convs + K × per-query equals the dense alternatives (MACs only)."""
    return {
        "vs_local_dense": (t["local_dense"] - t["local_s8"]) / t["per_query"],
        "vs_dpt_decoder": (t["dpt_decoder"] - t["fpn"] - t["local_s8"]) / t["per_query"],
        "plan_vs_dpt_decoder": (PLAN_MACS["dpt_decoder"] - PLAN_MACS["fpn"]) / PLAN_MACS["per_query"],
    }
