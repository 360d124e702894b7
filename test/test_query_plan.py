"""Issue 12: every exact execution the query planner can pick (per-query windows, shared tiles,
dense + lookup) equals the bilinear sample of the dense map, and the planner picks by its costs."""

from __future__ import annotations

import pytest
import torch
from helpers import random_model
from test_model_exact import REL_TOL, bilinear

from spd_core import SPDModel
from spd_core.model.query_plan import TILE_SIZES, CostModel, plan_queries
from spd_core.model.spd_model import FrameFeatures

HUGE = 1e12
# costs that force one execution (the planner's choice is then known in advance)
FORCE = {
    "windows": CostModel(window=1.0, tile=dict.fromkeys(TILE_SIZES, HUGE), dense=HUGE, lookup=0.0),
    "tiles": CostModel(window=1.0, tile={16: 0.5}, dense=HUGE, lookup=0.0),  # even one query per tile
    "mixed": CostModel(window=1.0, tile={8: 1.5}, dense=HUGE, lookup=0.0),  # a tile for two queries or more
    "dense": CostModel(window=1.0, tile=dict.fromkeys(TILE_SIZES, HUGE), dense=0.0, lookup=0.0),
}
SIZES = [(32, 32), (64, 96), (96, 64)]  # smallest input (every window over every border), landscape, portrait


def layouts(h: int, w: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Query layouts [1,K,2]: a detector box's samples, duplicates, spread out, borders and corners."""
    box = (
        torch.rand(1, 40, 2, generator=g) * torch.tensor([min(w - 1, 9.0), min(h - 1, 7.0)])
        + torch.tensor([w / 3, h / 4]).floor()
    )
    dup = torch.tensor([[[3.25, 4.5]] * 5 + [[w - 1.0, h - 1.0]] * 3 + [[0.0, 0.0]] * 2])
    spread = torch.rand(1, 30, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    edge = torch.tensor(
        [[[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w - 1.5, h - 1.25], [0.25, h - 1], [w - 1, 0.75]]],
        dtype=torch.float32,
    )
    return {
        "clustered": box,
        "duplicated": dup,
        "spread": spread,
        "borders": edge,
        "all": torch.cat([box, dup, spread, edge], 1),
    }


def fresh(feats: FrameFeatures) -> FrameFeatures:
    """The frame without a kept dense map."""
    return FrameFeatures(feats.l1, feats.local_s8, feats.size)


@pytest.fixture(scope="module", params=[False, True], ids=["half_pixel", "align_corners"])
def model(request) -> SPDModel:
    return random_model("convnextv2_atto", size=(64, 96), seed=12, align_corners=request.param)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", list(FORCE))
def test_every_execution_is_exact(model: SPDModel, size: tuple[int, int], mode: str) -> None:
    h, w = size
    g = torch.Generator().manual_seed(h * w)
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 3, h, w, generator=g))
        dense = model.decode_dense(feats)
        for name, uv in layouts(h, w, g).items():
            q, plan = model.execute(fresh(feats), uv, costs=FORCE[mode])
            want = {"windows": "windows", "tiles": "tiles", "mixed": "tiles", "dense": "dense"}[mode]
            if mode == "mixed" and plan.mode == "windows":  # no two distinct origins share an 8x8 tile
                assert name in ("spread", "borders"), (name, plan.counts)
            else:
                assert plan.mode == want, (name, plan.mode)
            err = ((q - bilinear(dense, uv)).abs().max() / dense.abs().mean()).item()
            assert err <= REL_TOL, f"{mode} {name} {h}x{w}: max relative error {err:.2e}"


def test_a_kept_dense_map_is_looked_up(model: SPDModel) -> None:
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 3, 64, 96))
        uv = torch.rand(1, 50, 2) * torch.tensor([95.0, 63.0])
        first, plan = model.execute(feats, uv, costs=FORCE["dense"])
        assert plan.mode == "dense" and feats.dense_depth is not None
        again, plan = model.execute(feats, uv, costs=FORCE["windows"])  # the map is there: no windows
        assert plan.mode == "lookup"
        torch.testing.assert_close(again, first)


def test_planner_chooses_by_cost() -> None:
    """Spread -> windows; clustered -> shared tiles; many -> dense; each tile only where it pays."""
    size, costs = (64, 96), CostModel(window=1.0, tile={8: 3.5}, dense=40.0, lookup=0.01, call=0.5)

    def plan(origins: list[tuple[int, int]]):
        o = torch.tensor(origins)
        return plan_queries(torch.zeros(len(o), dtype=torch.long), o[:, 0], o[:, 1], size, costs)

    assert plan([(0, 0), (30, 40), (60, 90)]).mode == "windows"
    cluster = [(8 + i // 3, 14 + i % 3) for i in range(6)]  # 6 distinct origins in one 8x8 tile (origins every 7)
    p = plan([*cluster, (50, 80)])
    assert p.mode == "tiles" and p.tile == 8 and p.counts == {"queries_windows": 1, "queries_tiled": 6, "tiles": 1}
    assert p.cost == pytest.approx(2 * 0.5 + 3.5 + 1.0) and p.dense_cost == pytest.approx(40.0 + 7 * 0.01)
    # every tiled query's 2x2 pixels lie inside its tile
    o = torch.tensor(cluster)
    ty, tx = p.tile_oy[p.tile_of], p.tile_ox[p.tile_of]
    assert ((o[p.tiled, 0] >= ty) & (o[p.tiled, 0] + 1 <= ty + 7)).all()
    assert ((o[p.tiled, 1] >= tx) & (o[p.tiled, 1] + 1 <= tx + 7)).all()
    many = [(i % 62, (7 * i) % 94) for i in range(45)]
    assert plan(many).mode == "dense"  # 45 windows cost more than 40 + lookups
    assert (
        plan_queries(torch.zeros(3, dtype=torch.long), torch.ones(3).long(), torch.ones(3).long(), size, None).mode
        == "windows"
    )


def test_duplicates_are_computed_once(model: SPDModel) -> None:
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 3, 64, 96))
        uv = torch.tensor([[[5.5, 7.25]] * 20 + [[40.0, 30.0]] * 20])
        q, plan = model.execute(fresh(feats), uv, costs=FORCE["windows"])
    assert plan.counts["queries_windows"] == 2  # two distinct 2x2 origins
    assert torch.equal(q[0, :20], q[0, :1].expand(20)) and torch.equal(q[0, 20:], q[0, 20:21].expand(20))


def test_measured_costs_are_positive_and_scale_the_dense_path(model: SPDModel) -> None:
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 3, 64, 96))
    c = model.measure_costs(feats, repeats=2)
    assert c.unit == "ms" and c.window > 0 and c.dense > 0 and c.lookup > 0 and c.call >= 0
    assert set(c.tile) == set(TILE_SIZES) and all(v >= c.window for v in c.tile.values())
    big = c.at_size((128, 192), (64, 96))
    assert big.dense == pytest.approx(4 * c.dense) and big.window == c.window and big.tile == c.tile
    m = model.mac_costs((64, 96))
    assert m.unit == "MACs" and m.tile[8] > m.window and m.dense > 40 * m.window
