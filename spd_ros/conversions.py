"""ROS messages <-> numpy for spd_node (no cv_bridge; the pixel decoding lives in spd_core.data.images)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import Point32, PolygonStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spd_core.camera import check_intrinsics
from spd_core.data.images import (
    COLOR_ENCODINGS,
    MAX_PIXELS,
    ImageFormatError,
    decode_compressed,
    image_array,
    to_rgb8,
)
from spd_core.data.rosbag import stamp_ns  # re-exported: one definition for bags and live messages

# PointField datatype -> numpy dtype
_FIELD_DTYPES = {
    PointField.INT8: np.int8,
    PointField.UINT8: np.uint8,
    PointField.INT16: np.int16,
    PointField.UINT16: np.uint16,
    PointField.INT32: np.int32,
    PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32,
    PointField.FLOAT64: np.float64,
}
_DTYPE_FIELDS = {np.dtype(v): k for k, v in _FIELD_DTYPES.items()}


class TooManyPoints(ValueError):
    """A query message with more points than allowed; raised before its points are converted."""


def image_to_numpy(msg: Image, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16; any row padding) -> uint8 RGB [H,W,3] or mono [H,W].

    Raises ImageFormatError (unsupported encoding, too small, more than ``max_pixels``, short data).
    """
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageFormatError(f"unsupported encoding {msg.encoding!r}; use one of {', '.join(COLOR_ENCODINGS)}")
    arr = image_array(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian), max_pixels)
    return to_rgb8(arr, msg.encoding)


def compressed_to_numpy(msg: CompressedImage, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """CompressedImage (JPEG/PNG only) -> uint8 RGB [H,W,3] or mono [H,W]; the declared size is checked
    against ``max_pixels`` before decoding (:func:`spd_core.data.images.decode_compressed`)."""
    return decode_compressed(msg.data, msg.format, max_pixels)


def intrinsics(msg: CameraInfo) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a CameraInfo; ValueError (one line) when they are not plausible for its
    size (:func:`spd_core.camera.check_intrinsics`)."""
    k = tuple(float(msg.k[i]) for i in (0, 4, 2, 5))
    check_intrinsics(k, int(msg.width), int(msg.height))
    return k


def _check_count(n: int, max_points: int | None) -> None:
    if max_points is not None and n > max_points:
        raise TooManyPoints(f"{n} points > max_queries={max_points}")


def _field_layout(msg: PointCloud2) -> dict[str, PointField]:
    """The fields of ``msg`` by name, checked: a known datatype each, unique names, each inside
    ``point_step`` and none overlapping another. ValueError (one line) otherwise."""
    step = int(msg.point_step)
    if step <= 0:
        raise ValueError("PointCloud2 point_step is 0; set it to the size of one point in bytes")
    fields: dict[str, PointField] = {}
    spans = []
    for f in msg.fields:
        if f.name in fields:
            raise ValueError(f"PointCloud2 has two fields named {f.name!r}; field names must be unique")
        if f.datatype not in _FIELD_DTYPES:
            raise ValueError(f"PointCloud2 field {f.name!r} has unknown datatype {f.datatype} (PointField 1..8)")
        end = int(f.offset) + int(f.count) * np.dtype(_FIELD_DTYPES[f.datatype]).itemsize
        if end > step:
            raise ValueError(f"PointCloud2 field {f.name!r} (bytes {f.offset}..{end}) exceeds point_step {step}")
        fields[f.name] = f
        if end > f.offset:
            spans.append((int(f.offset), end, f.name))
    spans.sort()
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):  # sorted: a neighbour overlaps first
        if start < end:
            raise ValueError(f"PointCloud2 fields {a!r} and {b!r} overlap (byte {start} < {end})")
    return fields


def pointcloud2_fields(msg: PointCloud2, names: Sequence[str], max_points: int | None = None) -> dict[str, np.ndarray]:
    """Named fields of a PointCloud2 as 1-D arrays in point order (their own dtype, native order).

    Strict: at most ``max_points`` points (TooManyPoints, checked first, before the data is looked
    at), a valid field layout (:func:`_field_layout`), one value (count 1) per requested field,
    ``row_step`` ≥ width·point_step and exactly height·row_step bytes of data; ``is_bigendian`` is
    honoured. Raises ValueError (one line) naming what is wrong.
    """
    height, width = int(msg.height), int(msg.width)
    n = height * width
    _check_count(n, max_points)
    fields = _field_layout(msg)
    missing = [name for name in names if name not in fields]
    if missing:
        raise ValueError(f"PointCloud2 has no field(s) {', '.join(missing)}; it has {', '.join(fields) or 'none'}")
    for name in names:
        if fields[name].count != 1:
            raise ValueError(f"PointCloud2 field {name!r} has count {fields[name].count}; 1 value per point expected")
    step, row_step = int(msg.point_step), int(msg.row_step)
    if n and row_step < width * step:
        raise ValueError(f"PointCloud2 row_step {row_step} < width {width} x point_step {step}")
    if n and len(msg.data) != height * row_step:
        raise ValueError(f"PointCloud2 data has {len(msg.data)} bytes, height {height} x row_step {row_step} expected")
    buf = np.frombuffer(msg.data, np.uint8)
    out = {}
    for name in names:
        f = fields[name]
        dt = np.dtype(_FIELD_DTYPES[f.datatype]).newbyteorder(">" if msg.is_bigendian else "<")
        if n == 0:
            out[name] = np.zeros(0, dt.newbyteorder("="))
            continue
        view = np.ndarray((height, width), dt, buf, int(f.offset), (row_step, step))
        out[name] = view.reshape(-1).astype(dt.newbyteorder("="))
    return out


def cloud_query(msg: PointCloud2, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A ``query_points`` cloud -> (uv float32 [N,2], ids or None); fields ``u``, ``v`` and optional
    ``id`` of any PointField type. Raises as :func:`pointcloud2_fields`."""
    names = ("u", "v", "id") if any(f.name == "id" for f in msg.fields) else ("u", "v")
    cols = pointcloud2_fields(msg, names, max_points)
    with np.errstate(over="ignore"):  # float64 beyond float32: inf, outside the image like NaN
        return np.stack([cols["u"], cols["v"]], 1).astype(np.float32), cols.get("id")


def polygon_query(msg: PolygonStamped, max_points: int | None = None) -> tuple[np.ndarray, None]:
    """A ``queries`` polygon -> (uv float32 [N,2] from x, y; None); TooManyPoints before converting."""
    points = msg.polygon.points
    _check_count(len(points), max_points)
    return np.array([(p.x, p.y) for p in points], np.float32).reshape(-1, 2), None


def header_at(stamp: int, frame_id: str = "") -> Header:
    """A Header stamped ``stamp`` integer nanoseconds (the inverse of :func:`stamp_ns`)."""
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp), 1_000_000_000)
    return header


def polygon_stamped(header: Header, uv) -> PolygonStamped:
    """Query pixels ``uv`` [K,2] as a ``queries`` PolygonStamped, x = u, y = v (the inverse of
    :func:`polygon_query`)."""
    msg = PolygonStamped(header=header)
    msg.polygon.points = [Point32(x=float(u), y=float(v), z=0.0) for u, v in np.asarray(uv, np.float64).reshape(-1, 2)]
    return msg


def make_pointcloud2(header: Header, columns: dict[str, np.ndarray]) -> PointCloud2:
    """An unorganized PointCloud2 (height 1) with one field per column, in the given order."""
    names = list(columns)
    dtype = np.dtype([(n, np.asarray(columns[n]).dtype) for n in names])
    n = len(next(iter(columns.values()))) if columns else 0
    rec = np.empty(n, dtype)
    for name in names:
        rec[name] = columns[name]
    msg = PointCloud2(
        header=header,
        height=1,
        width=n,
        is_bigendian=False,
        point_step=dtype.itemsize,
        row_step=dtype.itemsize * n,
        is_dense=False,
    )
    msg.fields = [
        PointField(name=name, offset=dtype.fields[name][1], datatype=_DTYPE_FIELDS[dtype[name]], count=1)
        for name in names
    ]
    msg.data = rec.tobytes()
    return msg


def depth_image(header: Header, depth: np.ndarray) -> Image:
    """float32 [H,W] metres -> Image 32FC1."""
    depth = np.ascontiguousarray(depth, np.float32)
    return Image(
        header=header,
        height=depth.shape[0],
        width=depth.shape[1],
        encoding="32FC1",
        is_bigendian=False,
        step=depth.shape[1] * 4,
        data=depth.tobytes(),
    )


def rgb_image(header: Header, rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    """uint8 [H,W,3] -> Image (rgb8 or bgr8); for publishers and tests."""
    data = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    data = np.ascontiguousarray(data)
    return Image(
        header=header,
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        is_bigendian=False,
        step=rgb.shape[1] * 3,
        data=data.tobytes(),
    )


__all__ = [
    "ImageFormatError",
    "TooManyPoints",
    "cloud_query",
    "compressed_to_numpy",
    "depth_image",
    "header_at",
    "image_to_numpy",
    "intrinsics",
    "make_pointcloud2",
    "pointcloud2_fields",
    "polygon_query",
    "polygon_stamped",
    "rgb_image",
    "stamp_ns",
]
