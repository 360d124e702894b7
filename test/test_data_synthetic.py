"""Synthetic RGB-D scenes: deterministic, varied, and depth equal to the analytic ray-cast distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import EvalTransform

from spd_core.data import SyntheticRGBD, render_scene
from spd_core.data.shapes import Box, Room, Sphere, Texture
from spd_core.data.synthetic import Scene, intrinsics, render, rotation

SIZE = (96, 128)
GREY = Texture(0, 0.5, (0.5, 0.5, 0.5), (0.9, 0.9, 0.9))


def _empty_room(
    cam_h: float, half_w: float, height: float, back: float, yaw: float = 0.0, pitch: float = 0.0, objects: tuple = ()
) -> Scene:
    room = Room((-half_w, 0.0, -3.0), (half_w, height, back))
    return Scene(room, objects, (GREY,) * (6 + len(objects)), (0.0, cam_h, 0.0), yaw, pitch, (0.0, height - 0.2, 1.0))


def test_deterministic_per_seed_and_varied() -> None:
    a, b, c = render_scene(3, SIZE), render_scene(3, SIZE), render_scene(4, SIZE)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["depth"], b["depth"])
    assert not np.array_equal(a["depth"], c["depth"]) and not np.array_equal(a["image"], c["image"])
    assert a["name"] == "synthetic_3" and a["image"].dtype == np.uint8 and a["image"].shape == (*SIZE, 3)
    assert a["focal"] == pytest.approx(518.8579 * 128 / 640) and a["K"][0, 0] == a["focal"]
    np.testing.assert_allclose(a["K"][:2, 2], [325.58 * 128 / 640, 253.74 * 96 / 480])


def test_value_ranges_and_invalid_regions() -> None:
    frames = [render_scene(s, SIZE) for s in range(12)]
    for f in frames:
        d = f["depth"]
        assert d.dtype == np.float32 and np.isfinite(d).all() and (d >= 0).all() and d.max() <= 10.0
        assert 0.2 < d[d > 0].min() and (d > 0).mean() > 0.9
        assert d[d > 0].std() > 0.2 and f["image"].std() > 10  # real structure, not a flat frame
    assert any((f["depth"] == 0).any() for f in frames)  # sensor holes exercise validity masks
    assert max(f["depth"].max() for f in frames) > 5.0 and min(f["depth"][f["depth"] > 0].min() for f in frames) < 2


def test_empty_room_depth_is_the_analytic_plane_distance() -> None:
    """Level camera at height h in a box room: depth along Z at pixel (u, v) is the nearest of
    back wall D, floor h·fy/(v−cy), ceiling (H−h)·fy/(cy−v) and side walls W·fx/|u−cx|."""
    h, w = 120, 160
    cam_h, half_w, height, back = 1.3, 2.0, 2.8, 6.0
    s = render(_empty_room(cam_h, half_w, height, back), (h, w))
    k = intrinsics((h, w))
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    with np.errstate(divide="ignore"):
        dv, du = (v - k[1, 2]) / k[1, 1], np.abs(u - k[0, 2]) / k[0, 0]
        floor, ceiling = np.where(dv > 0, cam_h / dv, np.inf), np.where(dv < 0, (height - cam_h) / -dv, np.inf)
        cand = np.stack([np.full((h, w), back), floor, ceiling, np.where(du > 0, half_w / du, np.inf)])
    np.testing.assert_allclose(s["depth"], cand.min(0), rtol=2e-6)
    on_back = cand.argmin(0) == 0
    assert on_back.sum() > 1000 and (s["depth"][on_back] == np.float32(back)).all()  # facing wall: exactly D
    on_floor = cand.argmin(0) == 1
    rows = v[on_floor]
    np.testing.assert_allclose(s["depth"][on_floor], cam_h * k[1, 1] / (rows - k[1, 2]), rtol=2e-6)


def test_objects_depth_sphere_and_box_front() -> None:
    """A sphere on the optical axis at distance z0 (radius r): depth z0 − r at the principal point;
    a box face parallel to the image at z1: depth z1 on its interior."""
    h, w = 120, 160
    k = intrinsics((h, w))
    cam_h = 1.4
    sphere = Sphere((0.0, cam_h, 4.0), 0.5)
    box = Box((-1.5, 0.0, 2.5), (-0.8, 1.0, 3.0))
    s = render(_empty_room(cam_h, 2.0, 2.8, 7.0, objects=(sphere, box)), (h, w))
    ci, cj = round(k[1, 2]), round(k[0, 2])
    x, y = (cj - k[0, 2]) / k[0, 0], (ci - k[1, 2]) / k[1, 1]  # ray (x, -y, 1) in world: exact sphere hit
    a, b, c = x * x + y * y + 1, -2 * 4.0, 16.0 - 0.25
    assert s["depth"][ci, cj] == pytest.approx((-b - np.sqrt(b * b - 4 * a * c)) / (2 * a), rel=1e-5)
    assert s["depth"][ci, cj] == pytest.approx(3.5, abs=2e-3)
    # box front face z = 2.5 spans x in [-1.5, -0.8], world y in [0, 1] -> image columns/rows
    u0, u1 = k[0, 2] + k[0, 0] * -1.5 / 2.5, k[0, 2] + k[0, 0] * -0.8 / 2.5
    v0, v1 = k[1, 2] + k[1, 1] * (cam_h - 1.0) / 2.5, min(h - 1.0, k[1, 2] + k[1, 1] * cam_h / 2.5)
    front = s["depth"][int(v0) + 2 : int(v1) - 1, int(u0) + 2 : int(u1) - 1]
    assert front.size > 20 and (front == np.float32(2.5)).all()


def test_back_projected_points_lie_on_the_room_with_yaw_and_pitch() -> None:
    """Depth is Z in the camera frame: back-projected pixels of a tilted camera land on the walls."""
    size = (90, 120)
    scene = _empty_room(1.2, 1.8, 2.6, 5.0, yaw=0.2, pitch=-0.15)
    s = render(scene, size)
    k = intrinsics(size)
    v, u = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    z = s["depth"].astype(np.float64)
    assert (z > 0).all()
    pc = np.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z], -1)
    pw = pc @ rotation(scene.yaw, scene.pitch).T + np.array(scene.cam)
    lo, hi = np.array(scene.room.lo), np.array(scene.room.hi)
    assert (pw > lo - 1e-4).all() and (pw < hi + 1e-4).all()
    gap = np.minimum(np.abs(pw - lo), np.abs(pw - hi)).min(-1)  # distance to the nearest room plane
    assert gap.max() < 1e-4


def test_dataset_items_and_transform() -> None:
    ds = SyntheticRGBD(3, seed=5, size=SIZE)
    assert len(ds) == 3 and ds[2]["name"] == f"synthetic_{5 * 100003 + 2}"
    assert np.array_equal(ds[1]["depth"], render_scene(5 * 100003 + 1, SIZE)["depth"])
    assert not np.array_equal(SyntheticRGBD(1, seed=6, size=SIZE)[0]["depth"], ds[0]["depth"])
    t = SyntheticRGBD(3, seed=5, size=SIZE, transform=EvalTransform())
    assert t[1]["image"].shape == (3, *SIZE) and torch.equal(t[1]["depth"][0], torch.from_numpy(ds[1]["depth"]))
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="n >= 1"):
        SyntheticRGBD(0)
