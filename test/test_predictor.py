"""DepthPredictor: original-image pixels, resizing, focal scaling, back-projection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_model

from spd_core.camera import back_project
from spd_core.device import resolve_device
from spd_core.model.checkpoint import CheckpointError, make_checkpoint, save_checkpoint
from spd_core.predictor import DepthPredictor
from spd_core.preprocess import to_model_pixels


@pytest.fixture(scope="module")
def predictor() -> DepthPredictor:
    model = random_model("convnextv2_atto", size=(64, 96), seed=6)
    return DepthPredictor(model, input_size=(64, 96), train_focal=100.0)


def image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_query_equals_dense_map_at_original_pixels(predictor: DepthPredictor) -> None:
    """Queries in original pixels == the dense map resized to the original image (same mapping)."""
    frame = predictor.encode(image(120, 160))
    dense = predictor.dense(frame)
    assert dense.shape == (120, 160)
    rng = np.random.default_rng(1)
    vs, us = rng.integers(0, 120, 200), rng.integers(0, 160, 200)
    uv = np.stack([us, vs], 1).astype(np.float32)
    uv = np.concatenate([uv, [[0, 0], [159, 119], [0, 119], [159, 0]]]).astype(np.float32)
    d = predictor.query(frame, uv)
    np.testing.assert_allclose(d, dense[uv[:, 1].astype(int), uv[:, 0].astype(int)], rtol=1e-4)


def test_pixel_mapping_and_outside_queries() -> None:
    inf, nan = float("inf"), float("nan")
    uv = np.array([[0.0, 0.0], [159.0, 119.0], [79.5, 59.5], [-0.5, 3.0], [160.0, 3.0], [nan, 1.0], [3.0, inf]])
    m = to_model_pixels(uv, (120, 160), (64, 96))
    assert m.dtype == np.float32 and m.shape == uv.shape
    np.testing.assert_allclose(m[2], [47.5, 31.5])  # image centre -> model centre
    np.testing.assert_allclose(m[:2], [[0.0, 0.0], [95.0, 63.0]])  # clamped onto edge centres
    assert np.isnan(m[3:]).all()


def test_outside_queries_are_nan_and_empty_is_empty(predictor: DepthPredictor) -> None:
    frame = predictor.encode(image())
    d = predictor.query(frame, [[-1, 5], [5, 500], [3, 3]])
    assert np.isnan(d[:2]).all() and np.isfinite(d[2])
    assert predictor.query(frame, np.zeros((0, 2))).shape == (0,)


def test_focal_scaling(predictor: DepthPredictor) -> None:
    img = image()
    plain = predictor.query(predictor.encode(img), [[10, 10], [50, 60]])
    fx = 320.0
    scaled = predictor.query(predictor.encode(img, fx=fx), [[10, 10], [50, 60]])
    s = 96 / 160  # resize factor
    np.testing.assert_allclose(scaled, plain * fx * s / 100.0, rtol=1e-6)
    assert predictor.depth_scale((120, 160), 0.0) == 1.0  # zero focal: scaling off, not a crash
    predictor.focal_scaling = False
    try:
        assert predictor.depth_scale((120, 160), fx) == 1.0
    finally:
        predictor.focal_scaling = True


def test_mono_images(predictor: DepthPredictor) -> None:
    mono = image()[:, :, 0]
    a = predictor.query(predictor.encode(mono), [[20, 30]])
    b = predictor.query(predictor.encode(np.repeat(mono[:, :, None], 3, 2)), [[20, 30]])
    np.testing.assert_allclose(a, b)
    c = predictor.query(predictor.encode(mono.astype(np.uint16) << 8), [[20, 30]])
    np.testing.assert_allclose(a, c)
    with pytest.raises(ValueError, match="uint8"):
        predictor.encode(np.zeros((10, 10, 3), np.float32))


def test_back_projection() -> None:
    uv = np.array([[320.0, 240.0], [420.0, 140.0], [0.0, 0.0]])
    pts = back_project(uv, np.array([2.0, 4.0, np.nan]), fx=500.0, fy=400.0, cx=320.0, cy=240.0)
    np.testing.assert_allclose(pts[0], [0, 0, 2])
    np.testing.assert_allclose(pts[1], [100 * 4 / 500, -100 * 4 / 400, 4], rtol=1e-6)
    assert np.isnan(pts[2]).all()


def test_from_checkpoint(tmp_path: Path) -> None:
    model = random_model("convnextv2_atto", seed=7)
    path = tmp_path / "m.pt"
    save_checkpoint(path, make_checkpoint(model, train_focal=200.0, input_size=(64, 96)))
    p = DepthPredictor.from_checkpoint(str(path), device="cpu")
    assert p.input_size == (64, 96) and p.train_focal == 200.0
    frame = p.encode(image(64, 96))
    with torch.no_grad():
        ref = DepthPredictor(model, (64, 96), 200.0).query(frame, [[5, 5]])
    np.testing.assert_array_equal(p.query(frame, [[5, 5]]), ref)
    with pytest.raises(CheckpointError):
        DepthPredictor.from_checkpoint(str(tmp_path / "missing.pt"))


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
