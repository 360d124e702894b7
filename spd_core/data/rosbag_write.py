"""Write RGB-D rosbag2 recordings (sqlite3 or mcap, via ``rosbags``) of synthetic scenes: colour,
aligned depth, camera_info and optional keypoint queries, for tests, the demo and replay."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from spd_core.data.common import DataError
from spd_core.data.images import encode_compressed
from spd_core.data.rosbag_types import CAMERA_INFO, COMPRESSED, IMAGE, POLYGON_STAMPED, typestore

FRAME_ID = "camera_color_optical_frame"
START_NS = 1_700_000_000 * 1_000_000_000  # stamp of frame 0 (2023-11-14T22:13:20Z)
DEPTH_DELAY_NS = 1000  # depth is written 1 µs after colour (bag time), queries 2 µs after


def header(ts: Any, stamp: int, frame_id: str = FRAME_ID) -> Any:
    t = ts.types
    sec, nsec = divmod(int(stamp), 1_000_000_000)
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)


def image_msg(ts: Any, stamp: int, arr: np.ndarray, encoding: str) -> Any:
    """rosbags Image message of an [H,W] or [H,W,C] array (little endian, no row padding)."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    return ts.types[IMAGE](
        header=header(ts, stamp),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=arr.strides[0],
        data=arr.reshape(-1).view(np.uint8),
    )


def compressed_msg(ts: Any, stamp: int, rgb: np.ndarray, fmt: str) -> Any:
    """rosbags CompressedImage of uint8 RGB [H,W,3] as ``fmt`` = "png" (lossless) or "jpeg"."""
    data = np.frombuffer(encode_compressed(rgb, fmt), np.uint8)
    return ts.types[COMPRESSED](header=header(ts, stamp), format=fmt, data=data)


def camera_info_msg(ts: Any, stamp: int, k: np.ndarray, size: tuple[int, int]) -> Any:
    """rosbags CameraInfo of intrinsics K [3,3] for an image of ``size`` = (H, W), no distortion."""
    t = ts.types
    p = np.zeros((3, 4))
    p[:, :3] = k
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return t[CAMERA_INFO](
        header=header(ts, stamp),
        height=size[0],
        width=size[1],
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.asarray(k, np.float64).reshape(-1),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def polygon_msg(ts: Any, stamp: int, uv: np.ndarray) -> Any:
    """PolygonStamped keypoint queries: one Point32 per row of uv [K,2] (x = u, y = v, z = 0)."""
    t = ts.types
    pts = [t["geometry_msgs/msg/Point32"](x=float(u), y=float(v), z=0.0) for u, v in np.asarray(uv).reshape(-1, 2)]
    return t[POLYGON_STAMPED](header=header(ts, stamp), polygon=t["geometry_msgs/msg/Polygon"](points=pts))


def write_synthetic_bag(
    path: str | os.PathLike,
    n_frames: int,
    seed: int = 0,
    size: tuple[int, int] = (480, 640),
    storage: str = "sqlite3",
    rate_hz: float = 10.0,
    color_topic: str = "/camera/color/image_raw",
    depth_topic: str = "/camera/aligned_depth_to_color/image_raw",
    info_topic: str | None = "/camera/color/camera_info",
    depth_encoding: str = "16UC1",
    compressed: bool | str = False,
    queries_topic: str | None = None,
    n_queries: int = 0,
) -> Path:
    """Write ``n_frames`` synthetic RGB-D frames (``render_scene(seed * 100003 + i, size)``) as a rosbag2.

    Colour: Image rgb8 on ``color_topic``, or with ``compressed`` (True = "png", or "jpeg") a
    CompressedImage on ``color_topic + "/compressed"``. Depth: Image ``depth_encoding`` 16UC1 (mm,
    0 invalid) or 32FC1 (m, NaN invalid). CameraInfo every frame unless ``info_topic`` is None. With
    ``queries_topic``, ``n_queries`` random PolygonStamped keypoints per frame (x = u, y = v).
    Stamps start at ``START_NS``, 1/``rate_hz`` apart; frame_id ``camera_color_optical_frame``.
    Returns the bag directory.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from spd_core.data.synthetic import SEED_STRIDE, render_scene

    if storage not in ("sqlite3", "mcap"):
        raise DataError(f"bag storage {storage!r} is not supported; use sqlite3 or mcap")
    if depth_encoding not in ("16UC1", "32FC1"):
        raise DataError(f"depth encoding {depth_encoding!r} is not supported for writing; use 16UC1 or 32FC1")
    fmt = {False: None, True: "png", "png": "png", "jpeg": "jpeg", "jpg": "jpeg"}.get(compressed, "bad")
    if fmt == "bad":
        raise DataError(f"compressed={compressed!r}: use False, True (png), 'png' or 'jpeg'")
    if n_frames < 0 or rate_hz <= 0:
        raise DataError(f"need n_frames >= 0 and rate_hz > 0, got {n_frames} and {rate_hz}")
    path = Path(path)
    if path.exists():
        raise DataError(f"{path} exists; rosbag2 writes a new directory (remove it or pick another path)")
    ts = typestore()
    rng = np.random.default_rng(seed)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        c_color = writer.add_connection(
            color_topic + ("/compressed" if fmt else ""), COMPRESSED if fmt else IMAGE, typestore=ts
        )
        c_depth = writer.add_connection(depth_topic, IMAGE, typestore=ts)
        c_info = writer.add_connection(info_topic, CAMERA_INFO, typestore=ts) if info_topic else None
        c_query = writer.add_connection(queries_topic, POLYGON_STAMPED, typestore=ts) if queries_topic else None
        for i in range(n_frames):
            s = render_scene(seed * SEED_STRIDE + i, size)
            stamp = START_NS + round(i * 1e9 / rate_hz)
            msg = compressed_msg(ts, stamp, s["image"], fmt) if fmt else image_msg(ts, stamp, s["image"], "rgb8")
            writer.write(c_color, stamp, ts.serialize_cdr(msg, msg.__msgtype__))
            d = s["depth"]
            if depth_encoding == "16UC1":
                dmsg = image_msg(ts, stamp, np.round(d * 1000).astype(np.uint16), "16UC1")
            else:
                dmsg = image_msg(ts, stamp, np.where(d > 0, d, np.float32(np.nan)).astype(np.float32), "32FC1")
            writer.write(c_depth, stamp + DEPTH_DELAY_NS, ts.serialize_cdr(dmsg, IMAGE))
            if c_info:
                writer.write(c_info, stamp, ts.serialize_cdr(camera_info_msg(ts, stamp, s["K"], size), CAMERA_INFO))
            if c_query:
                uv = np.stack([rng.uniform(0, size[1] - 1, n_queries), rng.uniform(0, size[0] - 1, n_queries)], 1)
                q = polygon_msg(ts, stamp, uv)
                writer.write(c_query, stamp + 2 * DEPTH_DELAY_NS, ts.serialize_cdr(q, POLYGON_STAMPED))
    return path
