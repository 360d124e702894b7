"""Ray casting for the synthetic scenes: the room (inside of a box), boxes, spheres, vertical cylinders.

Rays start at the camera centre ``o`` (3 Python floats, world frame) with directions
``d = (dx, dy, dz)``: three float32 arrays of one shape (any, e.g. a [h,w] block of pixels).
A direction is the world image of the optical ray (x, y, 1), so the hit parameter ``t`` is the
depth along the optical axis (Z). ``intersect`` returns t (inf = miss); ``normal`` takes hit
points p = (x, y, z) arrays and returns unit normals as three arrays; ``bounds`` is the
world-axis-aligned box (lo, hi) that holds the shape (for screen-space culling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Vec = tuple[float, float, float]
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Texture:
    """Procedural texture in world coordinates: kind 0 checker, 1 stripes, 2 blocky value noise."""

    kind: int
    scale: float  # metres per cell: a fixed world size, so its image size is a depth cue
    c0: Vec
    c1: Vec

    def __call__(self, p: Arrays) -> np.ndarray:
        """Colours [N,3] in [0,1] at world points p (arrays [N])."""
        x, y, z = (c * np.float32(1.0 / self.scale) for c in p)
        if self.kind == 0:
            m = (np.floor(x) + np.floor(y) + np.floor(z)) % 2
        elif self.kind == 1:
            m = (np.sin(np.float32(2 * np.pi) * (x + z)) > 0).astype(np.float32)
        else:
            h = np.sin(np.floor(x) * 12.9898 + np.floor(y) * 78.233 + np.floor(z) * 37.719) * 43758.5453
            m = h - np.floor(h)
        c0, c1 = np.array(self.c0, np.float32), np.array(self.c1, np.float32)
        return c0 + (c1 - c0) * m.astype(np.float32)[:, None]


@dataclass(frozen=True)
class Room:
    """The room is the box [lo, hi] seen from inside; its 6 faces are numbered 2·axis + (d > 0):
    0 left (x = lo), 1 right, 2 floor (y = lo), 3 ceiling, 4 behind the camera (z = lo), 5 back wall."""

    lo: Vec
    hi: Vec

    def intersect(self, o: Vec, d: Arrays) -> tuple[np.ndarray, np.ndarray]:
        """(t [..], face index [..] int8) of the exit point of every ray (camera inside the room)."""
        t = face = None
        for a in range(3):
            pos = d[a] > 0
            ta = np.where(pos, np.float32(self.hi[a] - o[a]), np.float32(self.lo[a] - o[a])) / d[a]
            fa = (2 * a + pos).astype(np.int8)
            if t is None:
                t, face = ta, fa
            else:
                closer = ta < t
                t, face = np.where(closer, ta, t), np.where(closer, fa, face)
        return t, face

    @staticmethod
    def face_normal(face: int) -> Vec:
        """Inward unit normal of a face."""
        n = [0.0, 0.0, 0.0]
        n[face // 2] = -1.0 if face % 2 else 1.0
        return n[0], n[1], n[2]


@dataclass(frozen=True)
class Box:
    """Axis-aligned box [lo, hi] (camera outside)."""

    lo: Vec
    hi: Vec

    def bounds(self) -> tuple[Vec, Vec]:
        return self.lo, self.hi

    def intersect(self, o: Vec, d: Arrays) -> np.ndarray:
        t_near = t_far = None
        for a in range(3):
            t1, t2 = (self.lo[a] - o[a]) / d[a], (self.hi[a] - o[a]) / d[a]
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            t_near = lo if t_near is None else np.maximum(t_near, lo)
            t_far = hi if t_far is None else np.minimum(t_far, hi)
        return np.where((t_near <= t_far) & (t_near > 0), t_near, np.float32(np.inf))

    def normal(self, p: Arrays) -> Arrays:
        dist = np.stack([np.abs(p[a] - b[a]) for b in (self.lo, self.hi) for a in range(3)])
        face = dist.argmin(0)  # the face the point lies on
        sign = np.where(face < 3, np.float32(-1.0), np.float32(1.0))
        zero = np.float32(0.0)
        return tuple(np.where(face % 3 == a, sign, zero) for a in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class Sphere:
    c: Vec
    r: float

    def bounds(self) -> tuple[Vec, Vec]:
        c, r = self.c, self.r
        return (c[0] - r, c[1] - r, c[2] - r), (c[0] + r, c[1] + r, c[2] + r)

    def intersect(self, o: Vec, d: Arrays) -> np.ndarray:
        oc = [o[a] - self.c[a] for a in range(3)]
        a2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        b = d[0] * oc[0] + d[1] * oc[1] + d[2] * oc[2]  # half of the usual b
        disc = b * b - a2 * (oc[0] ** 2 + oc[1] ** 2 + oc[2] ** 2 - self.r**2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a2
        return np.where((disc >= 0) & (t > 0), t, np.float32(np.inf))

    def normal(self, p: Arrays) -> Arrays:
        return tuple((p[a] - self.c[a]) * np.float32(1.0 / self.r) for a in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class Cylinder:
    """Vertical cylinder standing on the floor: axis (cx, cz), radius r, height top; side and top cap."""

    cx: float
    cz: float
    r: float
    top: float

    def bounds(self) -> tuple[Vec, Vec]:
        return (self.cx - self.r, 0.0, self.cz - self.r), (self.cx + self.r, self.top, self.cz + self.r)

    def intersect(self, o: Vec, d: Arrays) -> np.ndarray:
        ox, oz = o[0] - self.cx, o[2] - self.cz
        a2 = d[0] * d[0] + d[2] * d[2]
        b = d[0] * ox + d[2] * oz
        disc = b * b - a2 * (ox * ox + oz * oz - self.r**2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a2
        y = o[1] + t * d[1]
        t = np.where((disc >= 0) & (t > 0) & (y >= 0) & (y <= self.top), t, np.float32(np.inf))
        tc = (self.top - o[1]) / d[1]
        on_cap = (ox + tc * d[0]) ** 2 + (oz + tc * d[2]) ** 2 <= self.r**2
        return np.where(on_cap & (tc > 0) & (tc < t), tc, t)

    def normal(self, p: Arrays) -> Arrays:
        cap = p[1] > self.top - 1e-4
        inv_r, zero = np.float32(1.0 / self.r), np.float32(0.0)
        return (
            np.where(cap, zero, (p[0] - self.cx) * inv_r),
            cap.astype(np.float32),
            np.where(cap, zero, (p[2] - self.cz) * inv_r),
        )


Shape = Box | Sphere | Cylinder


def corners(lo: Vec, hi: Vec) -> np.ndarray:
    """The 8 corners [8,3] of the box [lo, hi]."""
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
