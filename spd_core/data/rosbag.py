"""RGB-D rosbag2 recordings (sqlite3 or mcap, via ``rosbags``) as a dataset of time-matched
(colour, depth) frames. Writing synthetic bags lives in :mod:`spd_core.data.rosbag_write`.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch.utils.data

from spd_core.data.common import DataError, FrameError, Sample, check_sample
from spd_core.data.images import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ImageFormatError,
    decode_compressed,
    image_array,
    to_metres,
    to_rgb8,
)
from spd_core.data.rosbag_types import CAMERA_INFO, COMPRESSED, IMAGE, typestore

log = logging.getLogger(__name__)


def stamp_ns(header: Any) -> int:
    """Header stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def decode_color(msg: Any, msgtype: str) -> np.ndarray:
    """Image / CompressedImage (rosbags message) -> uint8 RGB [H,W,3] (grey is repeated to 3 channels)."""
    if msgtype == COMPRESSED:
        rgb = decode_compressed(msg.data, msg.format)
    else:
        arr = image_array(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))
        rgb = to_rgb8(arr, msg.encoding)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb)


def decode_depth(msg: Any) -> np.ndarray:
    """Depth Image (16UC1 mm / 32FC1 m) -> float32 metres [H,W], invalid (0, NaN, inf) = 0."""
    arr = image_array(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))
    return to_metres(arr, msg.encoding)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def open_reader(path: Path) -> Any:
    """An open rosbags AnyReader of ``path``; DataError (one line) when the bag cannot be opened."""
    from rosbags.highlevel import AnyReader

    try:
        reader = AnyReader([Path(path)], default_typestore=typestore())
        reader.open()
    except Exception as e:  # rosbags raises its own error types (and OverflowError, ...) for unreadable bags
        raise DataError(f"cannot read bag {path}: {_first_line(e)}") from None
    return reader


def bag_messages(reader: Any, path: Path, connections: list, **kwargs: Any) -> Iterator[tuple[Any, int, Any, Any]]:
    """(connection, bag time, raw bytes, message) of ``reader.messages``: whatever a damaged bag makes
    rosbags raise while reading or deserialising (checksum, truncated record, bad CDR) is one DataError."""
    try:
        for conn, t_bag, raw in reader.messages(connections=connections, **kwargs):
            yield conn, t_bag, raw, reader.deserialize(raw, conn.msgtype)
    except DataError:
        raise
    except Exception as e:
        raise DataError(
            f"bag {path} is damaged ({type(e).__name__}: {_first_line(e)}); re-record or repair it"
        ) from None


def _nearest(sorted_stamps: list[int], stamp: int) -> int:
    """Index of the entry of ``sorted_stamps`` (non-empty) nearest to ``stamp``."""
    j = bisect.bisect_left(sorted_stamps, stamp)
    return min((c for c in (j - 1, j) if 0 <= c < len(sorted_stamps)), key=lambda c: abs(sorted_stamps[c] - stamp))


class BagFrame(NamedTuple):
    """A matched pair: colour header stamp, the bag times of both messages, the depth header stamp."""

    stamp: int
    color_time: int
    depth_time: int
    depth_stamp: int


class RosbagRGBD(torch.utils.data.Dataset):
    """Time-matched (colour, depth) pairs of a rosbag2: item i -> sample dict (+ "stamp_ns", "K").

    Colour: Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) or CompressedImage (JPEG/PNG); depth:
    Image 16UC1 (mm) or 32FC1 (m). Each colour message is paired with the depth message nearest
    in header stamp if within ``tolerance_s`` (else dropped). The focal is fx of the CameraInfo
    nearest in stamp, else ``default_focal``. ``stamps`` lists the frames' colour stamps (ns);
    :meth:`iter_frames` streams all frames in one pass over the bag.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        color_topic: str = "/camera/color/image_raw",
        depth_topic: str = "/camera/aligned_depth_to_color/image_raw",
        info_topic: str | None = None,
        tolerance_s: float = 0.02,
        transform=None,
        default_focal: float | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"bag {self.path} not found; give a rosbag2 directory or .mcap/.db3 file")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise DataError(f"{self.path} is no rosbag2 directory (no metadata.yaml); give the bag directory or file")
        self.color_topic, self.depth_topic, self.info_topic = color_topic, depth_topic, info_topic
        self.tolerance_s, self.transform, self.default_focal = float(tolerance_s), transform, default_focal
        self._reader = self._pid = self._color = self._depth = self._info = None
        reader = self._open()
        conns = {c.topic: c for c in reader.connections}
        for role, topic in (("colour", color_topic), ("depth", depth_topic), ("camera_info", info_topic)):
            if topic and topic not in conns:
                topics = ", ".join(f"{t} ({conns[t].msgtype})" for t in sorted(conns)) or "none"
                raise DataError(f"{role} topic {topic} not in bag {self.path}; topics there: {topics}")
        if self._color.msgtype not in (IMAGE, COMPRESSED):
            raise DataError(f"colour topic {color_topic} has type {self._color.msgtype}; need Image or CompressedImage")
        if self._depth.msgtype != IMAGE:
            raise DataError(f"depth topic {depth_topic} has type {self._depth.msgtype}; need Image (16UC1 or 32FC1)")
        if self._info is not None and self._info.msgtype != CAMERA_INFO:
            raise DataError(f"camera_info topic {info_topic} has type {self._info.msgtype}; need CameraInfo")
        self._index(reader)

    # -- reading ------------------------------------------------------------------------------------

    def _open(self) -> Any:
        """One reader per process (DataLoader workers fork): reopened when the pid changes."""
        if self._reader is None or self._pid != os.getpid():
            reader = open_reader(self.path)
            self._reader, self._pid = reader, os.getpid()
            conns = {c.topic: c for c in reader.connections}  # connections belong to their reader
            self._color, self._depth = conns.get(self.color_topic), conns.get(self.depth_topic)
            self._info = conns.get(self.info_topic) if self.info_topic else None
        return self._reader

    def close(self) -> None:
        """Close the bag (it is reopened on the next access)."""
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = self._pid = None

    def __getstate__(self) -> dict:  # picklable for spawned DataLoader workers: no open reader
        return {**self.__dict__, "_reader": None, "_pid": None, "_color": None, "_depth": None, "_info": None}

    def _check_encoding(self, msg: Any, conn: Any) -> None:
        if conn.topic == self.depth_topic and msg.encoding not in DEPTH_ENCODINGS:
            raise DataError(f"depth topic {self.depth_topic} has encoding {msg.encoding}; need 16UC1 or 32FC1")
        if conn.topic == self.color_topic and conn.msgtype == IMAGE and msg.encoding not in COLOR_ENCODINGS:
            raise DataError(
                f"colour topic {self.color_topic} has encoding {msg.encoding}; supported: {', '.join(COLOR_ENCODINGS)}"
            )

    def _index(self, reader: Any) -> None:
        """Header stamps and bag times of every colour / depth message; match pairs; intrinsics."""
        color: list[tuple[int, int]] = []
        depth: list[tuple[int, int]] = []
        infos: list[tuple[int, np.ndarray]] = []
        conns = [c for c in (self._color, self._depth, self._info) if c is not None]
        checked: set[str] = set()
        for conn, t_bag, _, msg in bag_messages(reader, self.path, conns):
            if conn.topic == self.info_topic:
                infos.append((stamp_ns(msg.header), np.array(msg.k, np.float64).reshape(3, 3)))
                continue
            if conn.topic not in checked:  # the encoding of a topic does not change within a recording
                self._check_encoding(msg, conn)
                checked.add(conn.topic)
            (color if conn.topic == self.color_topic else depth).append((stamp_ns(msg.header), t_bag))
        if not color or not depth:
            raise DataError(
                f"bag {self.path} has {len(color)} colour and {len(depth)} depth messages "
                f"on {self.color_topic} / {self.depth_topic}; need both"
            )
        depth.sort()
        dstamps = [s for s, _ in depth]
        tol = round(self.tolerance_s * 1e9)
        self.frames: list[BagFrame] = []
        for stamp, t_bag in sorted(color):
            j = _nearest(dstamps, stamp)
            if abs(dstamps[j] - stamp) <= tol:
                self.frames.append(BagFrame(stamp, t_bag, depth[j][1], dstamps[j]))
        if not self.frames:
            raise DataError(
                f"no colour/depth pair of bag {self.path} within tolerance_s={self.tolerance_s}; "
                "raise the tolerance or check the topics"
            )
        infos.sort(key=lambda x: x[0])
        self._info_stamps, self._info_k = [s for s, _ in infos], [k for _, k in infos]
        if not infos and self.default_focal is None:
            raise DataError(
                f"bag {self.path}: no camera_info (info_topic={self.info_topic}) and no default_focal; give one of them"
            )
        log.info("bag %s: %d colour, %d depth, %d matched frames", self.path, len(color), len(depth), len(self.frames))

    @property
    def stamps(self) -> list[int]:
        """Colour header stamps (ns) of the frames, ascending."""
        return [f.stamp for f in self.frames]

    def intrinsics(self, stamp: int) -> np.ndarray | None:
        """K [3,3] of the CameraInfo nearest to ``stamp`` (None without camera_info)."""
        if not self._info_stamps:
            return None
        return self._info_k[_nearest(self._info_stamps, stamp)]

    def __len__(self) -> int:
        return len(self.frames)

    def _read(self, conn: Any, t_bag: int, stamp: int) -> Any:
        """The message of ``conn`` written at bag time ``t_bag`` with header stamp ``stamp``."""
        reader = self._open()
        for _, _, _, msg in bag_messages(reader, self.path, [conn], start=t_bag, stop=t_bag + 1):
            if stamp_ns(msg.header) == stamp:
                return msg
        raise DataError(f"bag {self.path}: message of {conn.topic} at {t_bag} ns vanished; was the bag changed?")

    def _sample(self, i: int, color_msg: Any, depth_msg: Any, transform: bool) -> Sample:
        stamp = self.frames[i].stamp
        try:
            image, depth = decode_color(color_msg, self._color.msgtype), decode_depth(depth_msg)
        except ImageFormatError as e:
            raise FrameError(f"bag {self.path} frame {i} (stamp {stamp}): {e}") from None
        k = self.intrinsics(stamp)
        focal = float(k[0, 0]) if k is not None and k[0, 0] > 0 else self.default_focal
        if focal is None:
            raise DataError(f"bag {self.path} frame {i}: camera_info has fx=0 and no default_focal is set")
        s = check_sample(
            {
                "image": image,
                "depth": depth,
                "focal": float(focal),
                "name": f"{self.path.name}_{i:06d}",
                "stamp_ns": stamp,
                **({"K": k.copy()} if k is not None else {}),
            }
        )
        return self.transform(s) if transform and self.transform else s

    def __getitem__(self, i: int) -> Sample:
        if not -len(self.frames) <= i < len(self.frames):
            raise IndexError(f"bag frame {i} out of range 0..{len(self.frames) - 1}")
        i %= len(self.frames)
        f = self.frames[i]
        self._open()  # (re)binds the connections of this process's reader
        return self._sample(
            i,
            self._read(self._color, f.color_time, f.stamp),
            self._read(self._depth, f.depth_time, f.depth_stamp),
            transform=True,
        )

    def iter_frames(self, transform: bool = False) -> Iterator[Sample]:
        """All frames in order (the samples of ``self[i]``), reading the bag once: for evaluators that
        walk a long bag. Raw samples unless ``transform``."""
        reader, frames = self._open(), self.frames
        color_of = {(f.color_time, f.stamp): i for i, f in enumerate(frames)}  # (bag time, stamp) -> frame
        last_use = {(f.depth_time, f.depth_stamp): i for i, f in enumerate(frames)}  # a depth may serve two
        colors: dict[int, Any] = {}
        depths: dict[tuple[int, int], Any] = {}
        nxt = 0
        for conn, t_bag, _, msg in bag_messages(reader, self.path, [self._color, self._depth]):
            key = (t_bag, stamp_ns(msg.header))
            if conn.topic == self.color_topic:
                if key in color_of:
                    colors[color_of[key]] = msg
            elif key in last_use:
                depths[key] = msg
            while nxt < len(frames) and nxt in colors and (frames[nxt].depth_time, frames[nxt].depth_stamp) in depths:
                dkey = (frames[nxt].depth_time, frames[nxt].depth_stamp)
                yield self._sample(nxt, colors.pop(nxt), depths[dkey], transform)
                if last_use[dkey] == nxt:
                    del depths[dkey]
                nxt += 1
        if nxt < len(frames):
            raise DataError(f"bag {self.path}: frame {nxt} of {len(frames)} vanished; was the bag changed?")
