"""RGB-D rosbag2 recordings (sqlite3 or mcap, via ``rosbags``): read time-matched colour + depth, and
write synthetic ones (colour, depth, camera_info, optional keypoint queries) for tests and the demo.
"""

from __future__ import annotations

import bisect
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch.utils.data

from spd_core.data.common import DataError, Sample, check_sample
from spd_core.data.images import ImageFormatError, decode_compressed, encode_compressed, image_array, to_metres, to_rgb8

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
FRAME_ID = "camera_color_optical_frame"
START_NS = 1_700_000_000 * 1_000_000_000


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def decode_color(msg: Any, msgtype: str) -> np.ndarray:
    """Image / CompressedImage (rosbags message) -> uint8 RGB [H,W,3]."""
    if msgtype == COMPRESSED:
        rgb = decode_compressed(msg.data, msg.format)
    else:
        arr = image_array(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))
        rgb = to_rgb8(arr, msg.encoding)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb)


def decode_depth(msg: Any) -> np.ndarray:
    """Depth Image (16UC1 mm / 32FC1 m) -> float32 metres, invalid = 0."""
    arr = image_array(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))
    return to_metres(arr, msg.encoding)


class RosbagRGBD(torch.utils.data.Dataset):
    """Time-matched (colour, depth) pairs of a rosbag2: item i -> sample dict (+ "stamp_ns").

    Colour: Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) or CompressedImage (JPEG/PNG); depth:
    Image 16UC1 (mm) or 32FC1 (m); pairs are matched by header stamp within ``tolerance_s``; the
    focal is fx of the CameraInfo nearest in time, else ``default_focal``.
    """

    def __init__(self, path: str | os.PathLike, color_topic: str = "/camera/color/image_raw",
                 depth_topic: str = "/camera/aligned_depth_to_color/image_raw", info_topic: str | None = None,
                 tolerance_s: float = 0.02, transform=None, default_focal: float | None = None) -> None:  # fmt: skip
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"bag {self.path} not found; give a rosbag2 directory or .mcap/.db3 file")
        self.color_topic, self.depth_topic, self.info_topic = color_topic, depth_topic, info_topic
        self.transform, self.default_focal = transform, default_focal
        self._reader, self._pid = None, None
        reader = self._open()
        conns = {c.topic: c for c in reader.connections}
        for role, topic in (("colour", color_topic), ("depth", depth_topic), ("camera_info", info_topic)):
            if topic and topic not in conns:
                raise DataError(
                    f"{role} topic {topic} not in bag {self.path}; topics there: {', '.join(sorted(conns))}"
                )
        self._color, self._depth = conns[color_topic], conns[depth_topic]
        if self._color.msgtype not in (IMAGE, COMPRESSED):
            raise DataError(f"colour topic {color_topic} has type {self._color.msgtype}; need Image or CompressedImage")
        if self._depth.msgtype != IMAGE:
            raise DataError(f"depth topic {depth_topic} has type {self._depth.msgtype}; need Image (16UC1 or 32FC1)")
        self._index(reader, conns.get(info_topic) if info_topic else None, tolerance_s)

    def _open(self):
        """One reader per process (DataLoader workers fork): reopened when the pid changes."""
        from rosbags.highlevel import AnyReader

        if self._reader is None or self._pid != os.getpid():
            try:
                self._reader = AnyReader([self.path], default_typestore=_typestore())
                self._reader.open()
            except Exception as e:  # rosbags raises its own reader errors for unreadable bags
                raise DataError(f"cannot read bag {self.path}: {e}") from None
            self._pid = os.getpid()
        return self._reader

    def _index(self, reader, info_conn, tolerance_s: float) -> None:
        """Header stamps and bag times of every colour/depth message; match pairs; focal per frame."""
        color, depth, infos = [], [], []
        conns = [self._color, self._depth] + ([info_conn] if info_conn else [])
        for conn, t_bag, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            entry = (stamp_ns(msg.header), t_bag)
            if conn is info_conn:
                infos.append((entry[0], np.array(msg.k, np.float64).reshape(3, 3)))
                continue
            if conn is self._color:
                color.append(entry)
            if conn is self._depth:
                if msg.encoding not in ("16UC1", "mono16", "32FC1"):
                    raise DataError(f"depth topic {self.depth_topic} has encoding {msg.encoding}; need 16UC1 or 32FC1")
                depth.append(entry)
        if not color or not depth:
            raise DataError(f"bag {self.path} has {len(color)} colour and {len(depth)} depth messages; need both")
        depth.sort()
        dstamps = [s for s, _ in depth]
        tol = int(tolerance_s * 1e9)
        self.frames: list[tuple[int, int, int]] = []  # (stamp, colour bag time, depth bag time)
        for stamp, t_bag in sorted(color):
            j = bisect.bisect_left(dstamps, stamp)
            best = min((c for c in (j - 1, j) if 0 <= c < len(dstamps)), key=lambda c: abs(dstamps[c] - stamp))
            if abs(dstamps[best] - stamp) <= tol:
                self.frames.append((stamp, t_bag, depth[best][1]))
        if not self.frames:
            raise DataError(f"no colour/depth pair of {self.path} within {tolerance_s} s; raise the tolerance")
        infos.sort(key=lambda x: x[0])
        self._infos = infos
        if not infos and self.default_focal is None:
            raise DataError(f"bag {self.path}: no camera_info (info_topic={self.info_topic}) and no default_focal")
        log.info("bag %s: %d colour, %d depth, %d matched frames", self.path, len(color), len(depth), len(self.frames))

    @property
    def stamps(self) -> list[int]:
        return [s for s, _, _ in self.frames]

    def intrinsics(self, stamp: int) -> np.ndarray | None:
        """K [3,3] of the CameraInfo nearest to ``stamp`` (None without camera_info)."""
        if not self._infos:
            return None
        j = bisect.bisect_left([s for s, _ in self._infos], stamp)
        best = min((c for c in (j - 1, j) if 0 <= c < len(self._infos)), key=lambda c: abs(self._infos[c][0] - stamp))
        return self._infos[best][1]

    def __len__(self) -> int:
        return len(self.frames)

    def _read(self, conn, t_bag: int, stamp: int):
        reader = self._open()
        for c, _, raw in reader.messages(connections=[conn], start=t_bag, stop=t_bag + 1):
            msg = reader.deserialize(raw, c.msgtype)
            if stamp_ns(msg.header) == stamp or conn is self._depth:
                return msg
        raise DataError(f"bag {self.path}: message of {conn.topic} at {t_bag} vanished; is the bag being written?")

    def __getitem__(self, i: int) -> Sample:
        stamp, t_color, t_depth = self.frames[i]
        try:
            image = decode_color(self._read(self._color, t_color, stamp), self._color.msgtype)
            depth = decode_depth(self._read(self._depth, t_depth, -1))
        except ImageFormatError as e:
            raise DataError(f"bag {self.path} frame {i}: {e}") from None
        k = self.intrinsics(stamp)
        focal = float(k[0, 0]) if k is not None and k[0, 0] > 0 else self.default_focal
        if focal is None:
            raise DataError(f"bag {self.path} frame {i}: camera_info has fx=0 and no default_focal is set")
        s = check_sample({"image": image, "depth": depth, "focal": focal, "name": f"{self.path.name}_{i:06d}",
                          "stamp_ns": stamp, **({"K": k} if k is not None else {})})  # fmt: skip
        return self.transform(s) if self.transform else s


def _header(ts, stamp: int, frame_id: str = FRAME_ID):
    t = ts.types
    sec, nsec = divmod(stamp, 1_000_000_000)
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)


def image_msg(ts, stamp: int, arr: np.ndarray, encoding: str):
    """rosbags Image message of an [H,W] or [H,W,C] array."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    return ts.types[IMAGE](header=_header(ts, stamp), height=h, width=w, encoding=encoding, is_bigendian=0,
                           step=arr.strides[0], data=arr.reshape(-1).view(np.uint8))  # fmt: skip


def camera_info_msg(ts, stamp: int, k: np.ndarray, size: tuple[int, int]):
    t = ts.types
    p = np.zeros((3, 4))
    p[:, :3] = k
    return t[CAMERA_INFO](header=_header(ts, stamp), height=size[0], width=size[1], distortion_model="plumb_bob",
                          d=np.zeros(5), k=k.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1),
                          p=p.reshape(-1), binning_x=0, binning_y=0,
                          roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                    do_rectify=False))  # fmt: skip


def write_synthetic_bag(path: str | os.PathLike, n_frames: int, seed: int = 0, size: tuple[int, int] = (480, 640),
                        storage: str = "sqlite3", rate_hz: float = 10.0,
                        color_topic: str = "/camera/color/image_raw",
                        depth_topic: str = "/camera/aligned_depth_to_color/image_raw",
                        info_topic: str = "/camera/color/camera_info", depth_encoding: str = "16UC1",
                        compressed: bool = False, queries_topic: str | None = None,
                        n_queries: int = 0) -> Path:  # fmt: skip
    """Write ``n_frames`` synthetic RGB-D frames as a rosbag2 (colour, aligned depth, camera_info and,
    with ``queries_topic``, ``n_queries`` PolygonStamped keypoint queries per frame: x=u, y=v, the
    frame's stamp). Returns the bag directory."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from spd_core.data.synthetic import render_scene

    if storage not in ("sqlite3", "mcap"):
        raise ValueError(f"storage {storage!r} must be sqlite3 or mcap")
    if depth_encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"depth_encoding {depth_encoding!r} must be 16UC1 or 32FC1")
    path = Path(path)
    if path.exists():
        raise DataError(f"{path} exists; rosbag2 writes a new directory (remove it or pick another path)")
    ts = _typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    rng = np.random.default_rng(seed)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        c_color = writer.add_connection(color_topic + ("/compressed" if compressed else ""),
                                        COMPRESSED if compressed else IMAGE, typestore=ts)  # fmt: skip
        c_depth = writer.add_connection(depth_topic, IMAGE, typestore=ts)
        c_info = writer.add_connection(info_topic, CAMERA_INFO, typestore=ts) if info_topic else None
        c_q = (
            writer.add_connection(queries_topic, "geometry_msgs/msg/PolygonStamped", typestore=ts)
            if queries_topic
            else None
        )
        for i in range(n_frames):
            s = render_scene(seed * 100003 + i, size)
            stamp = START_NS + round(i * 1e9 / rate_hz)
            if compressed:
                png = np.frombuffer(encode_compressed(s["image"], "png"), np.uint8)
                msg = ts.types[COMPRESSED](header=_header(ts, stamp), format="png", data=png)
            else:
                msg = image_msg(ts, stamp, s["image"], "rgb8")
            writer.write(c_color, stamp, ts.serialize_cdr(msg, msg.__msgtype__))
            d = s["depth"]
            dmsg = image_msg(ts, stamp, np.round(d * 1000).astype(np.uint16), "16UC1") if depth_encoding == "16UC1" \
                else image_msg(ts, stamp, np.where(d > 0, d, np.nan).astype(np.float32), "32FC1")  # fmt: skip
            writer.write(c_depth, stamp + 1000, ts.serialize_cdr(dmsg, IMAGE))
            if c_info:
                writer.write(c_info, stamp, ts.serialize_cdr(camera_info_msg(ts, stamp, s["K"], size), CAMERA_INFO))
            if c_q:
                pts = [ts.types["geometry_msgs/msg/Point32"](x=float(u), y=float(v), z=0.0)
                       for u, v in zip(rng.uniform(0, size[1] - 1, n_queries), rng.uniform(0, size[0] - 1, n_queries),
                                       strict=True)]  # fmt: skip
                polygon = ts.types["geometry_msgs/msg/Polygon"](points=pts)
                q = ts.types["geometry_msgs/msg/PolygonStamped"](header=_header(ts, stamp), polygon=polygon)
                writer.write(c_q, stamp + 2000, ts.serialize_cdr(q, q.__msgtype__))
    return path
