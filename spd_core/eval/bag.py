"""Rosbag replay evaluation, ROS-free part: which pixels to ask, how to score the answers.

A bag with colour + ground-truth depth (+ camera_info, + optional recorded queries) is turned
into a list of :class:`BagQueries` (image, GT, focal, query pixels). The offline mode answers them
with :class:`~spd_core.predictor.DepthPredictor`; the live mode (``spd_ros.bag_eval``) replays the
bag into a running ``spd_node`` and collects its ``depth_points``. Both are scored by the same
:func:`score_frame`, so their numbers are directly comparable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spd_core.data import DataError, FrameError, RosbagRGBD
from spd_core.data.rosbag import bag_messages, open_reader, stamp_ns
from spd_core.eval.metrics import MAX_DEPTH, compute_errors, grid_pixels, query_rng, sample_query_pixels, valid_mask

log = logging.getLogger(__name__)

QUERY_MODES = ("random", "grid", "topic")


@dataclass
class BagQueries:
    """One frame to evaluate: query pixels uv [K,2] (x, y), the GT there, and the image.

    ``image`` is None in light plans (live replay reads the images from the bag itself).
    """

    index: int
    stamp_ns: int
    uv: np.ndarray  # float32 [K,2]
    gt: np.ndarray  # float32 [K] metres at the query pixels, 0 = invalid
    focal: float | None
    image: np.ndarray | None = None  # uint8 [H,W,3]


@dataclass
class FrameScore:
    """The answers to one frame's queries, scored against its ground truth (and their latency)."""

    index: int
    stamp_ns: int
    uv: np.ndarray
    pred: np.ndarray  # [K] metric depth, NaN where unanswered
    gt: np.ndarray  # [K] GT at the query pixels (0 where invalid)
    metrics: dict[str, float]
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def n_valid(self) -> int:
        return int(valid_points(self.gt).sum())


def valid_points(gt: np.ndarray, max_depth: float = MAX_DEPTH) -> np.ndarray:
    return valid_mask(gt, use_eigen_crop=False, max_depth=max_depth)


def gt_at(gt: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """GT depth at the nearest pixel of each query (0 outside the image or at non-finite uv)."""
    h, w = gt.shape
    out = np.zeros(len(uv), np.float32)
    ok = np.isfinite(uv).all(1)
    cols = np.round(uv[ok, 0]).astype(np.int64)
    rows = np.round(uv[ok, 1]).astype(np.int64)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    vals = np.zeros(ok.sum(), np.float32)
    vals[inside] = gt[rows[inside], cols[inside]]
    out[ok] = vals
    return out


def score_frame(
    plan: BagQueries, pred: np.ndarray, timings_ms: dict[str, float] | None = None, max_depth: float = MAX_DEPTH
) -> FrameScore:
    """Metrics of predictions ``pred`` [K] at the plan's queries, over queries with valid GT.

    A query without an answer (NaN) at a valid GT pixel counts as the worst prediction
    (clamped to the minimum depth), so dropping queries cannot improve a score.
    """
    gt = plan.gt
    ok = valid_points(gt, max_depth)
    metrics = compute_errors(np.asarray(pred, np.float64)[ok], gt[ok], max_depth=max_depth)
    metrics["answered"] = float(np.isfinite(pred[ok]).mean()) if ok.any() else float("nan")
    return FrameScore(
        plan.index, plan.stamp_ns, plan.uv, np.asarray(pred, np.float32), gt, metrics, dict(timings_ms or {})
    )


def recorded_queries(bag: Path, topic: str) -> dict[int, np.ndarray]:
    """PolygonStamped queries recorded in the bag: header stamp (ns) -> uv [K,2]."""
    out: dict[int, np.ndarray] = {}
    reader = open_reader(Path(bag))
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            topics = sorted({c.topic for c in reader.connections})
            raise DataError(f"queries topic {topic} not in bag {bag}; topics there: {', '.join(topics)}")
        for _, _, _, msg in bag_messages(reader, Path(bag), conns):
            out[stamp_ns(msg.header)] = np.array([[p.x, p.y] for p in msg.polygon.points], np.float32).reshape(-1, 2)
    finally:
        reader.close()
    return out


def plan_frames(
    dataset: RosbagRGBD,
    mode: str = "random",
    k: int = 128,
    grid: tuple[int, int] = (8, 6),
    seed: int = 0,
    queries: dict[int, np.ndarray] | None = None,
    max_frames: int | None = None,
    keep_images: bool = True,
    skipped: list[int] | None = None,
) -> Iterator[BagQueries]:
    """The frames of ``dataset`` with their query pixels, chosen by ``mode``:

    random: ``k`` random valid GT pixels per frame (seeded per frame index);
    grid: a regular ``grid`` = (nx, ny) of pixels; topic: the recorded queries of the same stamp.
    Plans are yielded one at a time, so a long bag is never held in memory. A frame whose colour
    or depth message cannot be decoded (FrameError: corrupt, oversized) is skipped with a warning
    and its index appended to ``skipped``; a damaged bag (DataError) ends the evaluation.
    """
    if mode not in QUERY_MODES:
        raise ValueError(f"query mode {mode!r} is not one of {QUERY_MODES}")
    if mode == "topic" and queries is None:
        raise ValueError("query mode 'topic' needs the recorded queries (--queries-topic)")
    n = len(dataset) if max_frames is None else min(len(dataset), max_frames)
    for i in range(n):
        try:
            s = dataset[i]
        except FrameError as e:
            log.warning("skipped: %s", e)
            if skipped is not None:
                skipped.append(i)
            continue
        gt = s["depth"]
        if mode == "random":
            uv = sample_query_pixels(valid_points(gt), k, query_rng(seed, i)).astype(np.float32)
        elif mode == "grid":
            uv = grid_pixels(*gt.shape, *grid)
        else:
            uv = queries.get(int(s["stamp_ns"]))
            if uv is None:
                log.warning("frame %d (stamp %d): no recorded queries with this stamp", i, s["stamp_ns"])
                continue
        image = s["image"] if keep_images else None
        yield BagQueries(i, int(s["stamp_ns"]), uv, gt_at(gt, uv), s.get("focal"), image)


def evaluate_offline(
    predictor, plans: Iterable[BagQueries], progress: bool = True, total: int | None = None
) -> list[FrameScore]:
    """Answer every plan with ``predictor`` (a DepthPredictor) and score it; per-stage latency.

    Images are dropped once encoded: results hold only the query pixels and answers.
    """
    from tqdm import tqdm

    results = []
    for plan in tqdm(plans, total=total, desc="frames", unit="frame", disable=not progress):
        t0 = time.perf_counter()
        frame = predictor.encode(plan.image, fx=plan.focal)
        t1 = time.perf_counter()
        pred = predictor.query(frame, plan.uv)
        t2 = time.perf_counter()
        timings = {"encode_ms": (t1 - t0) * 1e3, "query_ms": (t2 - t1) * 1e3}
        results.append(score_frame(plan, pred, timings))
        plan.image = None
    return results
