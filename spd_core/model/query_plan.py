"""The cheapest exact execution of one query call (sparse is never slower than dense).

Three exact ways to answer K queries on a frame, all equal to the bilinear sample of the dense
map (DESIGN §1):

* **windows** — each query runs the local path on its own windows (cost ∝ K);
* **tiles** — queries whose 2×2 pixels fall in one T×T output tile share a single window
  execution of that tile (clustered queries: a detector's box samples, a keypoint grid);
* **dense** — the whole local path once, then a lookup per query; the map is kept in the frame,
  so later calls on the same frame only look up.

:func:`plan_queries` picks, per tile, windows or the tile, and for the whole call the cheaper of
that and dense, from a :class:`CostModel` in MACs (:func:`mac_costs`, deterministic) or in
milliseconds measured on the device (:func:`spd_core.model.spd_model.SPDModel.calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from spd_core.model.local_path import QUERY_OUT, STRIDE, AxisTable

TILE_SIZES = (8, 16, 32)  # output tiles (T×T pixels) the planner considers
# sparse only when clearly cheaper: measured costs are noisy, and a wrong dense choice costs at most
# what dense + lookup costs, while a wrong sparse one has no such bound
DENSE_MARGIN = 0.85
PLANNERS = ("measured", "macs", "windows")  # cost model of the planner; "windows": never tiles or dense
_CONVS = ("m1", "m2", "u1", "u2")  # the dim -> dim 3×3 convs after the stride-8 stage


@dataclass(frozen=True)
class CostModel:
    """Cost of each execution unit at one network input size, in ``unit`` (MACs or ms)."""

    window: float  # one query's windows
    tile: dict[int, float]  # one T×T tile, per T
    dense: float  # the local path on the whole map (+ head), and a lookup call's fixed part
    lookup: float  # one query looked up in a kept dense map
    unit: str = "MACs"
    call: float = 0.0  # fixed cost of one batched window (or tile) pass: dispatch, tables (0 in MACs)

    def describe(self) -> str:
        """One line: the unit costs, and how many queries a tile must hold to be worth it."""
        tiles = ", ".join(f"T={t} {c:.3g} (≥{c / self.window:.1f} queries)" for t, c in self.tile.items())
        return (
            f"{self.unit}: window {self.window:.3g} (+{self.call:.3g} per pass), tiles {tiles}, "
            f"dense {self.dense:.3g}, lookup {self.lookup:.3g}"
        )

    def at_size(self, size: tuple[int, int], measured_at: tuple[int, int]) -> CostModel:
        """These costs, measured at network input ``measured_at``, for ``size``: a unit's windows do
        not depend on the image size; the dense path scales with its area."""
        area = size[0] * size[1] / (measured_at[0] * measured_at[1])
        return CostModel(self.window, dict(self.tile), self.dense * area, self.lookup, self.unit, self.call)


@dataclass
class QueryPlan:
    """What :func:`plan_queries` chose for one call, and the index sets to execute it."""

    mode: str  # "windows" | "tiles" (tiles and windows mixed) | "dense" | "lookup" (dense map kept)
    cost: float  # the chosen execution's predicted cost
    dense_cost: float  # what dense + lookup would cost (0 when the map is kept)
    tile: int = 0  # T of the tiles (0: none)
    windows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # query indices
    tiled: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # query indices
    tile_of: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # per tiled query
    tile_bidx: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # per tile
    tile_oy: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    tile_ox: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def counts(self) -> dict[str, int]:
        """Queries per execution, for diagnostics."""
        n_tiled = len(self.tiled)
        return {
            "queries_windows": len(self.windows),
            "queries_tiled": n_tiled,
            "tiles": len(self.tile_bidx),
        }


def local_macs(wy: dict[str, int], wx: dict[str, int], c1: int, dim: int, head: int) -> int:
    """MACs of the local path after the stride-8 stage on windows of widths ``wy`` × ``wx`` (a whole
    map when the widths are the map sizes): 3×3 convs, proj_l1 (1×1) and dense_head (1×1)."""
    area = {k: wy[k] * wx[k] for k in wy}
    return (
        sum(area[k] * dim * dim * 9 for k in _CONVS)
        + area["f"] * dim * head * 9
        + area["merge"] * c1 * dim
        + area["f"] * head
    )


def mac_costs(tables: dict[int, tuple[AxisTable, AxisTable]], c1: int, dim: int, head: int) -> CostModel:
    """Costs in MACs from the window tables of each unit size (``QUERY_OUT`` and the tile sizes)."""
    (ty, tx) = tables[QUERY_OUT]
    full = {k: ty.n // s for k, s in STRIDE.items()}, {k: tx.n // s for k, s in STRIDE.items()}
    return CostModel(
        window=local_macs(ty.width, tx.width, c1, dim, head),
        tile={t: local_macs(a.width, b.width, c1, dim, head) for t, (a, b) in tables.items() if t != QUERY_OUT},
        dense=local_macs(*full, c1, dim, head),
        lookup=0.0,
    )


def tiles_per_pass(t: int, chunk: int) -> int:
    """T×T tiles per batched pass: about the memory of ``chunk`` query windows (the widest window of
    a query, u_in, is 8×8; a tile's is about (T+4)²)."""
    return max(1, chunk * 64 // (t + 4) ** 2)


def _passes(n: int, per_pass: int) -> int:
    return -(-n // per_pass)


def _tiles(bidx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, size: tuple[int, int], t: int):
    """The T×T tile of each query (its 2×2 pixels inside) on the grid of every tile of the batch:
    (tile id per query, queries per tile, a function from tile ids to their (batch, y0, x0)).

    Tiles start every T-1 pixels (the last one flush with the border), so any 2×2 block lies in one.
    Counting is a bincount over the grid (O(K + tiles), no sort).
    """
    (h, w), step = size, t - 1
    ny, nx = (h - 2) // step + 1, (w - 2) // step + 1
    key = (bidx * ny + oy // step) * nx + ox // step
    counts = torch.bincount(key, minlength=(int(bidx[-1]) + 1) * ny * nx)

    def origins(tile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rest = tile % (ny * nx)
        return tile // (ny * nx), (rest // nx * step).clamp(max=h - t), (rest % nx * step).clamp(max=w - t)

    return key, counts, origins


def plan_queries(
    bidx: torch.Tensor,
    oy: torch.Tensor,
    ox: torch.Tensor,
    size: tuple[int, int],
    costs: CostModel | None,
    dense_kept: bool = False,
    chunk: int = 256,
) -> QueryPlan:
    """The cheapest exact execution for queries with distinct 2×2 origins (oy, ox) [K] in batch ``bidx``.

    ``costs`` None: windows for every query (the pure O(K) path). ``dense_kept``: the frame already
    holds its dense map, so a lookup is all it takes. ``chunk``: queries per window pass (each
    pass, and each pass of :func:`tiles_per_pass` tiles, costs ``costs.call`` once).
    """
    k = len(oy)
    everyone = torch.arange(k, device=oy.device)
    if dense_kept:
        return QueryPlan("lookup", 0.0, 0.0)
    if costs is None or k == 0:
        return QueryPlan("windows", 0.0, 0.0, windows=everyone)
    dense_cost = costs.dense + k * costs.lookup
    best_cost, best_tiles = _passes(k, chunk) * costs.call + k * costs.window, None
    for t, tile_cost in costs.tile.items():
        # even if every tile held the most distinct origins it can, (T-1)², it could not win
        at_best = costs.call + -(-k // (t - 1) ** 2) * tile_cost
        if t > min(size) or k < 2 or at_best >= min(best_cost, dense_cost):
            continue
        tile_of, counts, origins = _tiles(bidx, oy, ox, size, t)
        shared = tile_cost < counts * costs.window  # per tile: one tile run beats its queries' windows
        n_tiles = int(shared.sum())
        if n_tiles == 0:
            continue
        n_single = k - int((counts * shared).sum())
        passes = _passes(n_tiles, tiles_per_pass(t, chunk)) + _passes(n_single, chunk)
        cost = passes * costs.call + n_tiles * tile_cost + n_single * costs.window
        if cost < best_cost:  # only the winner's index sets are built
            best_cost, best_tiles = cost, (t, tile_of, shared, origins)
    if best_cost > DENSE_MARGIN * dense_cost:
        return QueryPlan("dense", dense_cost, dense_cost)
    if best_tiles is None:
        return QueryPlan("windows", best_cost, dense_cost, windows=everyone)
    t, tile_of, shared, origins = best_tiles
    tiled_mask = shared[tile_of]
    renumber = torch.cumsum(shared.long(), 0) - 1  # tile index among the shared ones
    tb, y0, x0 = origins(torch.nonzero(shared)[:, 0])
    return QueryPlan(
        "tiles",
        best_cost,
        dense_cost,
        tile=t,
        windows=everyone[~tiled_mask],
        tiled=everyone[tiled_mask],
        tile_of=renumber[tile_of[tiled_mask]],
        tile_bidx=tb,
        tile_oy=y0,
        tile_ox=x0,
    )
