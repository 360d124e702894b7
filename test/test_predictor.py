"""DepthPredictor: aspect-preserving input geometry, original-image pixels, focal scaling, back-projection."""

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
from spd_core.preprocess import fit_geometry, image_to_tensor, to_model_pixels


@pytest.fixture(scope="module")
def predictor() -> DepthPredictor:
    model = random_model("convnextv2_atto", size=(64, 96), seed=6)
    return DepthPredictor(model, train_focal=100.0, pixel_budget=64 * 96)


def image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# (H, W): 4:3 down, 16:9 (1280x720 shape), 848x480 shape, upscaled, extreme aspect, unpadded exact fit
SIZES = [(120, 160), (72, 128), (60, 106), (20, 30), (3, 200), (64, 96)]


@pytest.mark.parametrize("size", SIZES)
def test_query_equals_dense_map_at_original_pixels(predictor: DepthPredictor, size: tuple[int, int]) -> None:
    """Queries in original pixels == the dense map sampled at the same mapping, at every aspect."""
    h, w = size
    frame = predictor.encode(image(h, w))
    dense = predictor.dense(frame)
    assert dense.shape == (h, w) and np.isfinite(dense).all()
    rng = np.random.default_rng(1)
    uv = np.stack([rng.integers(0, w, 200), rng.integers(0, h, 200)], 1)
    uv = np.concatenate([uv, [[0, 0], [w - 1, h - 1], [0, h - 1], [w - 1, 0]]]).astype(np.float32)
    d = predictor.query(frame, uv)
    np.testing.assert_allclose(d, dense[uv[:, 1].astype(int), uv[:, 0].astype(int)], rtol=1e-4)


@pytest.mark.parametrize("size", [(720, 1280), (480, 848), (480, 640), (1080, 1920), (3, 1000)])
def test_geometry_keeps_the_camera_aspect(size: tuple[int, int]) -> None:
    """One scale for both axes, content within the budget, padding below one block of 32."""
    budget = 416 * 544
    g = fit_geometry(size, budget)
    (h, w), (ch, cw), (ih, iw) = size, g.content_size, g.input_size
    assert (ch, cw) == (int(h * g.scale), int(w * g.scale)) and ch * cw <= budget
    assert abs(cw / ch - w / h) <= (w / h) * (1 / ch + 1 / cw)  # aspect kept to one pixel of rounding
    assert ih % 32 == iw % 32 == 0 and 0 <= ih - ch < 32 and 0 <= iw - cw < 32
    assert fit_geometry((416, 544), budget).scale == 1.0


def test_input_tensor_is_the_scaled_image_padded_with_zeros() -> None:
    """A horizontal ramp lands where ``to_model_pixels`` says; the padding is zero (the mean colour)."""
    h, w = 90, 160  # 16:9 into 64·96 pixels: s = 0.65, content 58x104, input 64x128
    ramp = np.broadcast_to((np.arange(w) * 1.5).astype(np.uint8)[None, :, None], (h, w, 3)).copy()
    g = fit_geometry((h, w), 64 * 96)
    x = image_to_tensor(ramp, g, torch.device("cpu"))
    (ch, cw), (ih, iw) = g.content_size, g.input_size
    assert tuple(x.shape) == (1, 3, ih, iw) and (ch, cw) == (58, 104)
    assert (x[..., ch:, :] == 0).all() and (x[..., cw:] == 0).all()
    # interior: the content pixel at model column mu shows the original ramp value at u
    u = np.arange(10, w - 10, 7, dtype=np.float32)
    mu = to_model_pixels(np.stack([u, np.full_like(u, 45)], 1), g)[:, 0]
    std, mean = 0.229, 0.485
    row = (x[0, 0, 29].numpy() * std + mean) * 255  # red channel, a middle row
    np.testing.assert_allclose(np.interp(mu, np.arange(cw), row[:cw]), np.floor(u * 1.5), atol=0.6)


def test_pixel_mapping_and_outside_queries() -> None:
    inf, nan = float("inf"), float("nan")
    uv = np.array([[0.0, 0.0], [159.0, 119.0], [79.5, 59.5], [-0.5, 3.0], [160.0, 3.0], [nan, 1.0], [3.0, inf]])
    g = fit_geometry((120, 160), 60 * 80)  # s = 0.5: content 60x80, padded to 64x96
    assert (g.scale, g.content_size, g.input_size) == (0.5, (60, 80), (64, 96))
    m = to_model_pixels(uv, g)
    assert m.dtype == np.float32 and m.shape == uv.shape
    np.testing.assert_allclose(m[2], [39.5, 29.5])  # image centre -> content centre
    np.testing.assert_allclose(m[:2], [[0.0, 0.0], [79.0, 59.0]])  # clamped onto content edge centres, not padding
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
    g = predictor.geometry((120, 160))
    s = (64 * 96 / (120 * 160)) ** 0.5  # one isotropic scale factor
    assert g.scale == pytest.approx(s)
    np.testing.assert_allclose(scaled, plain * fx * s / 100.0, rtol=1e-6)
    assert predictor.depth_scale(g, 0.0) == 1.0  # zero focal: scaling off, not a crash
    predictor.focal_scaling = False
    try:
        assert predictor.depth_scale(g, fx) == 1.0
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
    assert p.pixel_budget == 64 * 96 and p.train_focal == 200.0
    frame = p.encode(image(64, 96))
    assert frame.geometry.scale == 1.0 and frame.features.size == (64, 96)
    with torch.no_grad():
        ref = DepthPredictor(model, 200.0, 64 * 96).query(frame, [[5, 5]])
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


@pytest.mark.parametrize("size", [(2, 8_000_000), (3, 20_000), (20_000, 3)])
def test_too_elongated_images_are_refused(size: tuple[int, int]) -> None:
    """Scaled to the budget such an image is under 2 pixels high, or its padding to 32 would cost
    more than 4x the budget (or a 32x4096 strip): one line, never a degenerate network input."""
    with pytest.raises(ValueError, match="too elongated"):
        fit_geometry(size, 64 * 96)
    assert fit_geometry((3, 1000), 64 * 96).input_size == (32, 1440)  # 333:1 still fits
