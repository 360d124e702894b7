"""ROS messages <-> numpy for spd_node (no cv_bridge; the pixel decoding lives in spd_core.data.images)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spd_core.camera import check_intrinsics
from spd_core.data.images import COLOR_ENCODINGS, ImageFormatError, decode_compressed, image_array, to_rgb8
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


def image_to_numpy(msg: Image) -> np.ndarray:
    """Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16; any row padding) -> uint8 RGB [H,W,3] or mono [H,W].

    Raises ImageFormatError (unsupported encoding, empty image, short data).
    """
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageFormatError(f"unsupported encoding {msg.encoding!r}; use one of {', '.join(COLOR_ENCODINGS)}")
    arr = image_array(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))
    return to_rgb8(arr, msg.encoding)


def compressed_to_numpy(msg: CompressedImage) -> np.ndarray:
    """CompressedImage (JPEG/PNG) -> uint8 RGB [H,W,3] or mono [H,W]."""
    return decode_compressed(msg.data, msg.format)


def intrinsics(msg: CameraInfo) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a CameraInfo; ValueError (one line) when they are not plausible for its
    size (:func:`spd_core.camera.check_intrinsics`)."""
    k = tuple(float(msg.k[i]) for i in (0, 4, 2, 5))
    check_intrinsics(k, int(msg.width), int(msg.height))
    return k


def pointcloud2_fields(msg: PointCloud2, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named fields of a PointCloud2 as 1-D arrays in point order (their own dtype).

    Raises ValueError naming the missing fields.
    """
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(f"PointCloud2 has no field(s) {', '.join(missing)}; it has {', '.join(fields) or 'none'}")
    n = int(msg.width) * int(msg.height)
    if n and len(msg.data) < n * msg.point_step:
        raise ValueError(f"PointCloud2 data has {len(msg.data)} bytes, {n} points of {msg.point_step} need more")
    buf = np.frombuffer(msg.data, np.uint8)
    out = {}
    for name in names:
        f = fields[name]
        if f.datatype not in _FIELD_DTYPES:
            raise ValueError(f"PointCloud2 field {name} has unknown datatype {f.datatype}")
        dt = np.dtype(_FIELD_DTYPES[f.datatype]).newbyteorder(">" if msg.is_bigendian else "<")
        if n == 0:
            out[name] = np.zeros(0, dt.newbyteorder("="))
            continue
        out[name] = np.ndarray((n,), dt, buf, f.offset, (msg.point_step,)).astype(dt.newbyteorder("="))
    return out


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
    "compressed_to_numpy",
    "depth_image",
    "image_to_numpy",
    "intrinsics",
    "make_pointcloud2",
    "pointcloud2_fields",
    "rgb_image",
    "stamp_ns",
]
