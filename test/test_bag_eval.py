"""spd-bag-eval offline: query selection, scoring with a known predictor, reports, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import saved_model

from spd_core.data import RosbagRGBD, write_synthetic_bag
from spd_core.eval.bag import evaluate_offline, plan_frames, recorded_queries
from spd_core.eval.metrics import grid_pixels
from spd_ros.bag_eval import main

SIZE = (64, 96)
COLOR, DEPTH, INFO = "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw", "/camera/color/camera_info"


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_bag(
        tmp_path_factory.mktemp("bags") / "eval",
        5,
        seed=3,
        size=SIZE,
        storage="mcap",
        queries_topic="/keypoints",
        n_queries=20,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    saved_model(path, SIZE, train_focal=100.0)
    return path


class ScaledOracle:
    """A predictor whose output is known: the bag's own GT depth × ``scale`` at integer pixels."""

    def __init__(self, dataset: RosbagRGBD, scale: float) -> None:
        self.gt = {dataset[i]["image"].tobytes(): dataset[i]["depth"] for i in range(len(dataset))}
        self.scale = scale

    def encode(self, image: np.ndarray, fx: float | None = None) -> np.ndarray:
        return self.gt[image.tobytes()]

    def query(self, depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
        u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        return depth[v, u] * self.scale


def test_known_predictor_gives_expected_metrics(bag: Path) -> None:
    ds = RosbagRGBD(bag, COLOR, DEPTH, INFO)
    results = evaluate_offline(ScaledOracle(ds, 1.3), plan_frames(ds, "random", k=40, seed=1), progress=False)
    assert len(results) == 5
    for r in results:
        assert r.n_valid == 40 and (r.gt > 0).all()  # random mode picks valid GT pixels only
        m = r.metrics
        assert m["abs_rel"] == pytest.approx(0.3) and m["rmse_log"] == pytest.approx(np.log(1.3))
        assert m["silog"] == pytest.approx(0.0, abs=1e-4) and m["d1"] == 0.0 and m["d2"] == 1.0  # 1.25 < 1.3 < 1.25²
        assert m["sq_rel"] == pytest.approx(0.09 * r.gt.mean(), rel=1e-5)
        assert set(r.timings_ms) == {"encode_ms", "query_ms"}
    exact = evaluate_offline(ScaledOracle(ds, 1.0), plan_frames(ds, "grid", grid=(6, 4)), progress=False)
    for r in exact:
        assert r.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-7) and r.metrics["d1"] == 1.0
        assert len(r.uv) == 24 and r.n_valid <= 24


def test_query_modes(bag: Path) -> None:
    ds = RosbagRGBD(bag, COLOR, DEPTH, INFO)
    a = [p.uv for p in plan_frames(ds, "random", k=16, seed=7)]
    b = [p.uv for p in plan_frames(ds, "random", k=16, seed=7)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # seeded
    assert not np.array_equal(a[0], a[1])  # different pixels per frame
    g = grid_pixels(64, 96, 4, 2)
    assert g.shape == (8, 2) and g[:, 0].min() >= 0 and g[:, 0].max() <= 95 and len(np.unique(g[:, 1])) == 2
    recorded = recorded_queries(bag, "/keypoints")
    plans = list(plan_frames(ds, "topic", queries=recorded))
    assert len(plans) == 5 and all(len(p.uv) == 20 for p in plans)
    assert np.array_equal(plans[2].uv, recorded[ds.stamps[2]])


def test_cli_offline_writes_report(bag: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    rc = main(
        [
            str(bag),
            "--checkpoint",
            str(checkpoint),
            "--mode",
            "topic",
            "--queries-topic",
            "/keypoints",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "abs_rel" in printed and "encode_ms" in printed and str(out / "report.md") in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["queries"] == 100
    assert summary["queries_answered"] == 100
    rows = (out / "frames.csv").read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("frame,stamp_ns,queries,valid,abs_rel")
    per_frame = [float(r["abs_rel"]) for r in csv.DictReader(rows)]
    assert all(np.isfinite(per_frame)) and min(per_frame) > 0  # every frame scored (random weights: not exact)
    assert summary["metrics"]["abs_rel"] == pytest.approx(np.mean(per_frame), rel=1e-5)  # the mean over frames
    assert (out / "worst_frames.png").stat().st_size > 1000 and (out / "error_vs_depth.png").exists()
    assert "| stage | p50" in (out / "report.md").read_text()


def _error_of(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spd-bag-eval: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_errors(bag: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    ck = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    assert "not found" in _error_of([str(tmp_path / "missing"), *ck], capsys)
    assert "colour topic /cam/rgb not in bag" in _error_of([str(bag), "--color-topic", "/cam/rgb", *ck], capsys)
    assert "need 16UC1 or 32FC1" in _error_of([str(bag), "--depth-topic", COLOR, *ck], capsys)
    no_depth = write_synthetic_bag(tmp_path / "nodepth", 2, size=(32, 32), depth_topic="/other/depth")
    assert "depth topic" in _error_of([str(no_depth), *ck], capsys)
    empty = write_synthetic_bag(tmp_path / "empty", 0, size=(32, 32))
    assert "0 colour and 0 depth messages" in _error_of([str(empty), *ck], capsys)
    assert "queries topic /nope not in bag" in _error_of(
        [str(bag), "--mode", "topic", "--queries-topic", "/nope", *ck], capsys
    )
    assert "not found" in _error_of([str(bag), "--checkpoint", str(tmp_path / "none.pt")], capsys)
