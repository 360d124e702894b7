"""Procedural synthetic RGB-D indoor scenes with exact metric depth (tests, demo, smoke training).

A room (floor, ceiling, walls 2.5–8.5 m away) with random boxes, spheres and vertical cylinders,
procedural textures (checker, stripes, value noise) fixed in world units, Lambertian shading from
a point light plus ambient, seen by a pinhole camera with NYU-like intrinsics and a small random
height / pitch / yaw. Depth is the analytic ray-cast distance along the optical axis (Z), so it is
exact; it lies in (0, 9.5] m, 0 = invalid (a random sensor "hole" in half the frames). Vectorised
numpy with screen-space culling of the objects; deterministic per seed.

World frame: x right, y up, z forward; camera frame (REP 103 optical): x right, y down, z forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch.utils.data

from spd_core.data.common import Sample
from spd_core.data.shapes import Box, Cylinder, Room, Shape, Sphere, Texture, Vec, corners

NYU_FX, NYU_CX, NYU_CY = 518.8579, 325.58, 253.74  # px at 640×480
MAX_SCENE_DEPTH = 9.5
SEED_STRIDE = 100003  # SyntheticRGBD(seed=s) item i is render_scene(s * SEED_STRIDE + i)


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    """NYU-like K [3,3] scaled to ``size`` = (H, W)."""
    h, w = size
    sx, sy = w / 640.0, h / 480.0
    return np.array([[NYU_FX * sx, 0, NYU_CX * sx], [0, NYU_FX * sy, NYU_CY * sy], [0, 0, 1]])


def rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera (optical) -> world rotation [3,3] for a camera yawed about world y, pitched about its x."""
    flip = np.diag([1.0, -1.0, 1.0])  # optical y down -> world y up
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return r_yaw @ r_pitch @ flip


@dataclass(frozen=True)
class Scene:
    """Everything :func:`render` needs. ``textures`` has the 6 room faces (see :class:`Room`) first,
    then one per object. ``hole`` = (top, left, height, width) as fractions of the image, or None."""

    room: Room
    objects: tuple[Shape, ...]
    textures: tuple[Texture, ...]
    cam: Vec
    yaw: float
    pitch: float
    light: Vec
    ambient: float = 0.25
    hole: tuple[float, float, float, float] | None = None


def _vec(a) -> Vec:
    return float(a[0]), float(a[1]), float(a[2])


def _texture(rng: np.random.Generator, lo: float, hi: float) -> Texture:
    return Texture(
        int(rng.integers(0, 3)),
        float(rng.uniform(lo, hi)),
        _vec(rng.uniform(0.1, 1.0, 3)),
        _vec(rng.uniform(0.1, 1.0, 3)),
    )


def random_scene(rng: np.random.Generator) -> Scene:
    """A random room with 3..7 objects standing in front of the camera."""
    half_w, back, height = rng.uniform(1.2, 3.5), rng.uniform(2.5, 8.5), rng.uniform(2.4, 3.2)
    cam = (float(rng.uniform(-0.5, 0.5) * min(1.0, half_w - 0.7)), float(rng.uniform(1.0, 1.6)), 0.0)
    objects: list[Shape] = []
    for _ in range(int(rng.integers(3, 8))):
        cx, cz = rng.uniform(-half_w + 0.4, half_w - 0.4), rng.uniform(1.2, max(1.3, back - 0.5))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            sx, sz = rng.uniform(0.15, 0.6, 2)
            objects.append(Box((cx - sx, 0.0, cz - sz), (cx + sx, float(rng.uniform(0.3, 1.8)), cz + sz)))
        elif kind == 1:
            r = float(rng.uniform(0.2, 0.6))
            objects.append(Sphere((cx, float(rng.uniform(r, 1.8)), cz), r))
        else:
            objects.append(Cylinder(cx, cz, float(rng.uniform(0.15, 0.45)), float(rng.uniform(0.4, 2.0))))
    textures = [_texture(rng, 0.3, 1.0) for _ in range(6)] + [_texture(rng, 0.05, 0.3) for _ in objects]
    light = (float(rng.uniform(-half_w, half_w) * 0.5), height - 0.2, float(rng.uniform(1.0, back * 0.6)))
    yaw, pitch = float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.1))
    hole = None
    if rng.random() < 0.5:  # a sensor hole, so validity masks get exercised
        hh, hw = rng.uniform(1 / 20, 1 / 6, 2)
        hole = (float(rng.uniform(0, 1 - hh)), float(rng.uniform(0, 1 - hw)), float(hh), float(hw))
    room = Room((-half_w, 0.0, -3.0), (half_w, height, back))
    return Scene(room, tuple(objects), tuple(textures), cam, yaw, pitch, light, hole=hole)


def _screen_rect(shape: Shape, cam: Vec, rot: np.ndarray, k: np.ndarray, size: tuple[int, int]):
    """Pixel block (rows, cols slices) that holds the shape's image, None if it is off screen."""
    h, w = size
    pc = (corners(*shape.bounds()) - np.array(cam)) @ rot  # rows: R^T (p - cam), camera frame
    if (pc[:, 2] < 1e-3).any():  # a corner behind the camera: test the whole image
        return slice(0, h), slice(0, w)
    u = k[0, 0] * pc[:, 0] / pc[:, 2] + k[0, 2]
    v = k[1, 1] * pc[:, 1] / pc[:, 2] + k[1, 2]
    x0, x1 = max(0, math.floor(u.min()) - 1), min(w, math.ceil(u.max()) + 2)
    y0, y1 = max(0, math.floor(v.min()) - 1), min(h, math.ceil(v.max()) + 2)
    return (slice(y0, y1), slice(x0, x1)) if x0 < x1 and y0 < y1 else None


def render(scene: Scene, size: tuple[int, int] = (480, 640)) -> Sample:
    """Ray-cast ``scene``: {"image" uint8 [H,W,3], "depth" float32 [H,W] (Z, metres, 0 invalid),
    "focal", "K" [3,3], "name": ""}."""
    h, w = size
    k = intrinsics(size)
    rot = rotation(scene.yaw, scene.pitch)
    xs = ((np.arange(w) - k[0, 2]) / k[0, 0]).astype(np.float32)[None, :]
    ys = ((np.arange(h) - k[1, 2]) / k[1, 1]).astype(np.float32)[:, None]
    # world direction of the optical ray (x, y, 1): the ray parameter t is depth along Z
    d = tuple((np.float32(rot[a, 0]) * xs + np.float32(rot[a, 1]) * ys + np.float32(rot[a, 2])) for a in range(3))
    cam = scene.cam
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t_min, obj = scene.room.intersect(cam, d)
        obj = obj.astype(np.int16)  # 0..5 room faces, 6 + i object i
        for i, shape in enumerate(scene.objects):
            rect = _screen_rect(shape, cam, rot, k, size)
            if rect is None:
                continue
            t = shape.intersect(cam, tuple(c[rect] for c in d))
            closer = t < t_min[rect]
            obj[rect][closer] = 6 + i
            t_min[rect] = np.where(closer, t, t_min[rect])
    t_flat, obj_flat, d_flat = t_min.ravel(), obj.ravel(), tuple(c.ravel() for c in d)
    rgb = np.zeros((h * w, 3), np.float32)
    for i, tex in enumerate(scene.textures):
        sel = np.flatnonzero(obj_flat == i)
        if sel.size == 0:
            continue
        ts = t_flat[sel]
        p = tuple(np.float32(cam[a]) + ts * d_flat[a][sel] for a in range(3))
        n = Room.face_normal(i) if i < 6 else scene.objects[i - 6].normal(p)
        to_light = tuple(np.float32(scene.light[a]) - p[a] for a in range(3))
        dist = np.sqrt(to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2)
        cos = (n[0] * to_light[0] + n[1] * to_light[1] + n[2] * to_light[2]) / np.maximum(dist, np.float32(1e-6))
        shade = scene.ambient + np.float32(0.9) * np.maximum(cos, 0) / (1 + np.float32(0.08) * dist * dist)
        rgb[sel] = tex(p) * shade[:, None]
    depth = np.where(np.isfinite(t_min) & (t_min > 0) & (t_min <= MAX_SCENE_DEPTH), t_min, np.float32(0))
    depth = depth.astype(np.float32, copy=False)
    if scene.hole is not None:
        top, left, hh, hw = scene.hole
        y0, x0 = int(top * h), int(left * w)
        depth[y0 : y0 + max(1, int(hh * h)), x0 : x0 + max(1, int(hw * w))] = 0.0
    image = (np.clip(rgb, 0, 1).reshape(h, w, 3) * 255 + 0.5).astype(np.uint8)
    return {"image": image, "depth": depth, "focal": float(k[0, 0]), "K": k, "name": ""}


def render_scene(seed: int, size: tuple[int, int] = (480, 640)) -> Sample:
    """One synthetic RGB-D frame, deterministic per ``seed`` (see module doc); name ``synthetic_<seed>``."""
    s = render(random_scene(np.random.default_rng(seed)), (int(size[0]), int(size[1])))
    s["name"] = f"synthetic_{seed}"
    return s


class SyntheticRGBD(torch.utils.data.Dataset):
    """``n`` synthetic scenes; item i is ``render_scene(seed * 100003 + i, size)`` then ``transform``."""

    def __init__(self, n: int, seed: int = 0, size: tuple[int, int] | list[int] = (480, 640), transform=None) -> None:
        if n < 1:
            raise ValueError(f"synthetic dataset needs n >= 1, got {n}")
        if len(size) != 2 or min(size) < 2:
            raise ValueError(f"synthetic size must be (height, width) of at least 2 px, got {size}")
        self.n, self.seed, self.size, self.transform = int(n), int(seed), (int(size[0]), int(size[1])), transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(f"synthetic item {i} out of range 0..{self.n - 1}")
        s = render_scene(self.seed * SEED_STRIDE + i, self.size)
        return self.transform(s) if self.transform else s
