"""Parameter counts and MACs against the plan's tables (plan §5.4, §8, §11)."""

from __future__ import annotations

import pytest
import torch

from spd_core import ModelConfig, SPDModel
from spd_core.bench.flops import count_macs


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny() -> SPDModel:
    return SPDModel(ModelConfig(encoder="convnextv2_tiny")).eval()


def test_parameter_counts_match_plan_tables(tiny: SPDModel) -> None:
    """Plan: DPT fusion ~317K, local path ~246K, dense_head 33.

    Exact: FPN 316,480 = projections 86,592 (Conv1×1 with bias + LN weight and bias: the plan's
    "C×64 + 64×3") + refinenet4 78,016 + refinenet3 151,872; local path 246,240. The plan rounds.
    """
    assert tiny.encoder.feature_info.channels() == [96, 192, 384, 768]
    assert n_params(tiny.fpn) == 316_480
    assert n_params(tiny.local) == 246_240
    assert n_params(tiny.dense_head) == 33
    assert abs(n_params(tiny.encoder) - 27.9e6) / 27.9e6 < 0.05  # plan: ~28.6M incl. the classifier head


def test_global_path_macs_match_plan(tiny: SPDModel) -> None:
    """Plan §11.1: global DPT path at 416×544 is ~241M MACs."""
    l2, l3, l4 = (torch.zeros(1, c, 416 // s, 544 // s) for c, s in ((192, 8), (384, 16), (768, 32)))
    macs, _ = count_macs(lambda: tiny.fpn(l2, l3, l4))
    assert macs == 240_787_456  # the plan's ~241M


def exact_path_macs(model: SPDModel, size: tuple[int, int]) -> int:
    """MACs of one query's window execution from its window widths: positions × Cin × Cout × k²."""
    ty, tx = model.local.axis_tables(size, 2, torch.device("cpu"))
    area = {key: ty.width[key] * tx.width[key] for key in ty.width}
    dim, head, c1 = model.config.local_dim, model.config.head_dim, model.local.proj_l1.in_channels
    convs = sum(area[key] * dim * dim * 9 for key in ("m1", "m2", "u1", "u2")) + area["f"] * dim * head * 9
    return convs + area["merge"] * c1 * dim + area["f"] * head  # + proj_l1, dense_head


def test_per_query_macs_of_exact_path(tiny: SPDModel) -> None:
    """After the stride-8 convs, shared per frame: 6.29M MACs per query for tiny, under the plan's
    inexact 7.4M (11.08M when every query ran its own stride-8 windows)."""
    k = 64
    s8, l1 = torch.zeros(1, 64, 52, 68), torch.zeros(1, 96, 104, 136)
    bidx = torch.zeros(k, dtype=torch.long)
    oy, ox = torch.randint(0, 415, (k,)), torch.randint(0, 543, (k,))
    macs, _ = count_macs(lambda: tiny.dense_head(tiny.local.at_windows(s8, l1, bidx, oy, ox, (416, 544))))
    per_query = macs / k
    assert per_query == exact_path_macs(tiny, (416, 544)) == tiny.mac_costs((416, 544)).window == 6_291_584
    assert per_query < 7.4e6


def test_planner_mac_costs_are_the_counted_macs(tiny: SPDModel) -> None:
    """The planner's MACs for a tile and for the dense path are what the modules really execute."""
    size = (64, 96)
    feats = tiny.encode(torch.zeros(1, 3, *size))
    costs = tiny.mac_costs(size)
    dense, _ = count_macs(lambda: tiny.decode_dense(feats))
    assert dense == costs.dense
    zero = torch.zeros(3, dtype=torch.long)
    for t in (8, 16, 32):
        macs, _ = count_macs(
            lambda t=t: tiny.dense_head(tiny.local.at_windows(feats.local_s8, feats.l1, zero, zero, zero, size, t))
        )
        assert macs == 3 * costs.tile[t]


def test_query_cost_is_linear_in_k(tiny: SPDModel) -> None:
    """O(K): the whole query call (gathers included) costs K × per-query MACs, nothing dense."""
    feats = tiny.encode(torch.zeros(1, 3, 64, 96))
    for k in (1, 10, 33):
        uv = torch.rand(1, k, 2) * torch.tensor([95.0, 63.0])
        macs, _ = count_macs(lambda uv=uv: tiny.query(feats, uv))
        assert macs == k * exact_path_macs(tiny, (64, 96))
