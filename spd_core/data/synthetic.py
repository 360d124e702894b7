"""Procedural synthetic RGB-D indoor scenes with exact metric depth (tests, demo, smoke training).

A room (floor, ceiling, four walls) with random boxes, spheres and vertical cylinders, procedural
textures (checker, stripes, value noise) in world coordinates, Lambertian shading from a point
light plus ambient, seen by a pinhole camera with NYU-like intrinsics. Depth is the analytic
ray-cast distance along the optical axis (Z), so it is exact. Deterministic per seed; vectorised
numpy (a 480×640 frame in tens of milliseconds on one core).

World frame: x right, y up, z forward; camera frame (REP 103 optical): x right, y down, z forward.
"""

from __future__ import annotations

import math

import numpy as np
import torch.utils.data

from spd_core.data.common import Sample

NYU_FX, NYU_CX, NYU_CY = 518.8579, 325.58, 253.74  # px at 640×480
MAX_SCENE_DEPTH = 9.5


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    """NYU-like K [3,3] scaled to ``size`` = (H, W)."""
    h, w = size
    s = w / 640.0
    return np.array([[NYU_FX * s, 0, NYU_CX * s], [0, NYU_FX * s, NYU_CY * h / 480.0], [0, 0, 1]])


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera (optical) -> world rotation for a camera yawed about world y and pitched about its x."""
    flip = np.diag([1.0, -1.0, 1.0])  # optical y down -> world y up
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return r_yaw @ r_pitch @ flip


def _texture(p: tuple[np.ndarray, ...], kind: int, scale: float, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Procedural texture at world points p = (x, y, z) [N] each -> colours [N,3] in [0,1]."""
    x, y, z = (c / scale for c in p)
    if kind == 0:  # checker
        m = (np.floor(x) + np.floor(y) + np.floor(z)) % 2
    elif kind == 1:  # stripes
        m = (np.sin(2 * np.pi * (x + z)) > 0).astype(np.float32)
    else:  # blocky value noise from a lattice hash
        hsh = np.sin(np.floor(x) * 12.9898 + np.floor(y) * 78.233 + np.floor(z) * 37.719) * 43758.5453
        m = hsh - np.floor(hsh)
    return (c0 + (c1 - c0) * m[:, None]).astype(np.float32)


# Shapes take the camera centre o [3] and ray directions d = (dx, dy, dz) [N] each (1-D arrays are
# much faster than [N,3] reductions) and return the hit distance t [N] (inf = miss); normal(p) takes
# hit points the same way and returns [N,3].


class _Box:
    """Axis-aligned box [lo, hi] (camera outside)."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo, self.hi = lo, hi

    def intersect(self, o: np.ndarray, d: tuple[np.ndarray, ...]) -> np.ndarray:
        t_near, t_far = None, None
        for a in range(3):
            t1, t2 = (self.lo[a] - o[a]) / d[a], (self.hi[a] - o[a]) / d[a]
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            t_near = lo if t_near is None else np.maximum(t_near, lo)
            t_far = hi if t_far is None else np.minimum(t_far, hi)
        return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)

    def normal(self, p: tuple[np.ndarray, ...]) -> np.ndarray:
        dist = np.stack([np.abs(p[a] - b[a]) for b in (self.lo, self.hi) for a in range(3)], 1)
        face = dist.argmin(1)  # the face the point lies on
        n = np.zeros((len(face), 3), np.float32)
        n[np.arange(len(face)), face % 3] = np.where(face < 3, -1.0, 1.0)
        return n


class _Sphere:
    def __init__(self, c: np.ndarray, r: float) -> None:
        self.c, self.r = c, r

    def intersect(self, o: np.ndarray, d: tuple[np.ndarray, ...]) -> np.ndarray:
        oc = o - self.c
        a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        b = 2 * (d[0] * oc[0] + d[1] * oc[1] + d[2] * oc[2])
        disc = b * b - 4 * a * (oc @ oc - self.r**2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        return np.where((disc >= 0) & (t > 0), t, np.inf)

    def normal(self, p: tuple[np.ndarray, ...]) -> np.ndarray:
        return np.stack([(p[a] - self.c[a]) / self.r for a in range(3)], 1)


class _Cylinder:
    """Vertical cylinder on the floor: axis (cx, cz), radius r, height top; side and top cap."""

    def __init__(self, cx: float, cz: float, r: float, top: float) -> None:
        self.cx, self.cz, self.r, self.top = cx, cz, r, top

    def intersect(self, o: np.ndarray, d: tuple[np.ndarray, ...]) -> np.ndarray:
        ox, oz = o[0] - self.cx, o[2] - self.cz
        a = d[0] * d[0] + d[2] * d[2]
        b = 2 * (d[0] * ox + d[2] * oz)
        disc = b * b - 4 * a * (ox * ox + oz * oz - self.r**2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        y = o[1] + t * d[1]
        t = np.where((disc >= 0) & (t > 0) & (y >= 0) & (y <= self.top), t, np.inf)
        tc = (self.top - o[1]) / d[1]
        on_cap = (ox + tc * d[0]) ** 2 + (oz + tc * d[2]) ** 2 <= self.r**2
        return np.where(on_cap & (tc > 0) & (tc < t), tc, t)

    def normal(self, p: tuple[np.ndarray, ...]) -> np.ndarray:
        side = np.stack([(p[0] - self.cx) / self.r, np.zeros_like(p[0]), (p[2] - self.cz) / self.r], 1)
        return np.where((p[1] > self.top - 1e-4)[:, None], np.array([0.0, 1.0, 0.0], np.float32), side)


class _Plane:
    """Room wall: coordinate ``axis`` == pos, normal pointing into the room."""

    def __init__(self, axis: int, pos: float, sign: float) -> None:
        self.axis, self.pos, self.n = axis, pos, (np.eye(3)[axis] * sign).astype(np.float32)

    def intersect(self, o: np.ndarray, d: tuple[np.ndarray, ...]) -> np.ndarray:
        t = (self.pos - o[self.axis]) / d[self.axis]
        return np.where(t > 0, t, np.inf)

    def normal(self, p: tuple[np.ndarray, ...]) -> np.ndarray:
        return np.broadcast_to(self.n, (len(p[0]), 3))


def _random_scene(rng: np.random.Generator) -> tuple[list, np.ndarray, np.ndarray]:
    """Room planes + 3..7 objects with their textures, the camera centre and the light position."""
    half_w, back, height = rng.uniform(1.5, 3.5), rng.uniform(4.0, 8.5), rng.uniform(2.4, 3.2)
    cam = np.array([rng.uniform(-0.5, 0.5), rng.uniform(1.0, 1.6), 0.0])
    shapes: list = [_Plane(1, 0.0, 1.0), _Plane(1, height, -1.0), _Plane(0, -half_w, 1.0),
                    _Plane(0, half_w, -1.0), _Plane(2, back, -1.0), _Plane(2, -3.0, 1.0)]  # fmt: skip
    scales = [rng.uniform(0.3, 1.0) for _ in shapes]
    for _ in range(int(rng.integers(3, 8))):
        cx, cz = rng.uniform(-half_w + 0.4, half_w - 0.4), rng.uniform(1.2, back - 0.5)
        kind = rng.integers(0, 3)
        if kind == 0:
            sx, sz = rng.uniform(0.15, 0.6, 2)
            shapes.append(_Box(np.array([cx - sx, 0.0, cz - sz]), np.array([cx + sx, rng.uniform(0.3, 1.8), cz + sz])))
        elif kind == 1:
            r = rng.uniform(0.2, 0.6)
            shapes.append(_Sphere(np.array([cx, rng.uniform(r, 1.8), cz]), r))
        else:
            shapes.append(_Cylinder(cx, cz, rng.uniform(0.15, 0.45), rng.uniform(0.4, 2.0)))
        scales.append(rng.uniform(0.05, 0.3))
    textures = [(int(rng.integers(0, 3)), sc, rng.uniform(0.1, 1.0, 3), rng.uniform(0.1, 1.0, 3)) for sc in scales]
    light = np.array([rng.uniform(-half_w, half_w) * 0.5, height - 0.2, rng.uniform(1.0, back * 0.6)])
    return list(zip(shapes, textures, strict=True)), cam, light


def render_scene(seed: int, size: tuple[int, int] = (480, 640)) -> Sample:
    """One synthetic RGB-D frame: {"image", "depth", "focal", "K", "name"} (see module doc)."""
    rng = np.random.default_rng(seed)
    h, w = size
    k = intrinsics(size)
    objects, cam, light = _random_scene(rng)
    rot = _rotation(rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.1))
    xs = ((np.arange(w) - k[0, 2]) / k[0, 0]).astype(np.float32)
    ys = ((np.arange(h) - k[1, 2]) / k[1, 1]).astype(np.float32)
    xc, yc = np.broadcast_to(xs, (h, w)).ravel(), np.repeat(ys, w)
    # world direction of the ray with optical direction (xc, yc, 1): t along it is depth along Z
    d = tuple((rot[a, 0] * xc + rot[a, 1] * yc + np.float32(rot[a, 2])).astype(np.float32) for a in range(3))
    t_min, obj = np.full(h * w, np.inf, np.float32), np.full(h * w, -1, np.int16)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i, (shape, _) in enumerate(objects):
            t = shape.intersect(cam, d)
            obj[t < t_min] = i
            np.minimum(t_min, t, out=t_min)
    rgb = np.zeros((h * w, 3), np.float32)
    for i, (shape, (kind, scale, c0, c1)) in enumerate(objects):
        sel = np.flatnonzero(obj == i)
        if sel.size == 0:
            continue
        ts = t_min[sel]
        ps = tuple(cam[a] + ts * d[a][sel] for a in range(3))
        to_light = np.stack([light[a] - ps[a] for a in range(3)], 1)
        dist = np.sqrt((to_light**2).sum(1))
        lambert = np.clip((shape.normal(ps) * to_light).sum(1) / np.maximum(dist, 1e-6), 0, None)
        rgb[sel] = _texture(ps, kind, scale, c0, c1) * (0.25 + 0.9 * lambert / (1 + 0.08 * dist**2))[:, None]
    depth = np.where(np.isfinite(t_min) & (t_min < MAX_SCENE_DEPTH), t_min, 0.0).reshape(h, w).astype(np.float32)
    if rng.random() < 0.5:  # a sensor hole, so validity masks get exercised
        hh, hw = int(rng.integers(h // 20, h // 6 + 1)), int(rng.integers(w // 20, w // 6 + 1))
        y0, x0 = int(rng.integers(0, h - hh + 1)), int(rng.integers(0, w - hw + 1))
        depth[y0 : y0 + hh, x0 : x0 + hw] = 0.0
    image = (np.clip(rgb, 0, 1).reshape(h, w, 3) * 255 + 0.5).astype(np.uint8)
    return {"image": image, "depth": depth, "focal": float(k[0, 0]), "K": k, "name": f"synthetic_{seed}"}


class SyntheticRGBD(torch.utils.data.Dataset):
    """``n`` synthetic scenes; item i is ``render_scene(seed * 100003 + i)`` then ``transform``."""

    def __init__(self, n: int, seed: int = 0, size: tuple[int, int] | list[int] = (480, 640), transform=None) -> None:
        if n < 1:
            raise ValueError(f"synthetic dataset needs n >= 1, got {n}")
        self.n, self.seed, self.size, self.transform = int(n), int(seed), (int(size[0]), int(size[1])), transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = render_scene(self.seed * 100003 + i, self.size)
        return self.transform(s) if self.transform else s
