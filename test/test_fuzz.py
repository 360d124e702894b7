"""Seeded fuzz of the node's message conversions (no ROS process): mutated JPEG / PNG CompressedImage,
raw Image, PointCloud2 and PolygonStamped messages, CASES of each kind from SEED.

Every case either converts to a valid array or raises the conversion's one declared error type
(ImageFormatError for images, ValueError for queries); nothing else, no MemoryError, no crash (a
returned view is read to its end). Both outcomes must occur often, so the mutations really reach the
decoder and the parsers and do not all fail at the first check.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from geometry_msgs.msg import PolygonStamped
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spd_core.data.images import COLOR_ENCODINGS, ENCODINGS
from spd_ros import conversions as conv

SEED = 1313
CASES = 2000
MAX_PIXELS = 1 << 18  # small, so that a mutated header under the limit decodes quickly
MAX_POINTS = 4096
U32 = 2**32 - 1


def _u32(value) -> int:
    """Clamped into uint32: every message built here can be serialised (and so published)."""
    return min(max(int(value), 0), U32)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_ihdr(rng: np.random.Generator, data: bytes) -> bytes:
    """IHDR fields redrawn (size, bit depth, colour type, ...), its CRC fixed or not."""
    width, height = (int(rng.choice([0, 1, 2, 5, 300, 1 << 12, 20000, U32])) for _ in range(2))
    depth, colour, comp, filt, lace = (int(rng.integers(0, 17)) for _ in range(5))
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, comp % 2, filt % 2, lace % 3))
    if rng.random() < 0.3:
        ihdr = ihdr[:-4] + bytes(rng.integers(0, 256, 4, dtype=np.uint8))
    return data[:8] + ihdr + data[33:]


def _jpeg_sof(rng: np.random.Generator, data: bytes) -> bytes:
    """The first SOF marker's precision, size and component count redrawn."""
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    if sof < 0:
        return data
    fields = struct.pack(
        ">BHHB",
        int(rng.choice([0, 8, 12, 16, 255])),
        int(rng.choice([0, 1, 2, 7, 600, 40000, 65535])),
        int(rng.choice([0, 1, 2, 5, 600, 40000, 65535])),
        int(rng.integers(0, 5)),
    )
    return data[: sof + 4] + fields + data[sof + 10 :]


def _bytes_mutation(rng: np.random.Generator, data: bytes) -> bytes:
    """Byte flips, a truncation, an inserted or deleted run, or garbage appended."""
    buf = bytearray(data)
    kind = rng.integers(0, 5) if buf else 4
    if kind == 0:
        for i in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[i] = int(rng.integers(0, 256))
    elif kind == 1:
        del buf[int(rng.integers(0, len(buf))) :]
    elif kind == 2:
        at = int(rng.integers(0, len(buf)))
        buf[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    elif kind == 3:
        at = int(rng.integers(0, len(buf)))
        del buf[at : at + int(rng.integers(1, 64))]
    else:
        buf += bytes(rng.integers(0, 256, int(rng.integers(1, 256)), dtype=np.uint8))
    return bytes(buf)


def _bases(fmt: str) -> list[bytes]:
    """Valid files of several sizes and modes to start from."""
    rng = np.random.default_rng(SEED)
    out = []
    for h, w in ((24, 32), (9, 7), (2, 2)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for mode in ("RGB", "L", "RGBA", "P", "I;16") if fmt == "PNG" else ("RGB", "L", "CMYK"):
            img = (
                PILImage.fromarray(rgb).convert(mode)
                if mode != "I;16"
                else PILImage.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)
            )
            buf = io.BytesIO()
            img.save(buf, format=fmt, **({"progressive": True} if mode == "L" and fmt == "JPEG" else {}))
            out.append(buf.getvalue())
    return out


def compressed_case(fmt: str) -> Callable[[np.random.Generator], CompressedImage]:
    bases = _bases(fmt)
    header = _png_ihdr if fmt == "PNG" else _jpeg_sof

    def make(rng: np.random.Generator) -> CompressedImage:
        data = bases[int(rng.integers(0, len(bases)))]
        for _ in range(int(rng.integers(1, 4))):
            data = header(rng, data) if rng.random() < 0.3 else _bytes_mutation(rng, data)
        return CompressedImage(format=str(rng.choice(["jpeg", "png", "", "bmp"])), data=data)

    return make


def check_compressed(msg: CompressedImage) -> bool:
    try:
        arr = conv.compressed_to_numpy(msg, MAX_PIXELS)
    except conv.ImageFormatError:
        return False
    assert arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)), arr.shape
    assert min(arr.shape[:2]) >= 2 and arr.shape[0] * arr.shape[1] <= MAX_PIXELS
    return True


def raw_case(rng: np.random.Generator) -> Image:
    """Random size, step, encoding, data length and byte order; mostly near-consistent ones."""
    encoding = str(rng.choice([*COLOR_ENCODINGS, "8UC1", "32FC1", "yuv422", "", "rgb16"]))
    size = ENCODINGS.get(encoding, (3, np.dtype(np.uint8)))
    pixel = size[0] * size[1].itemsize
    small = rng.random() < 0.8
    height, width = (int(rng.integers(0, 70)) if small else int(rng.choice([U32, 1 << 16, 600])) for _ in range(2))
    step = width * pixel + int(rng.choice([0, 0, 0, 1, 5, -1, -pixel]))
    if rng.random() < 0.1:
        step = int(rng.choice([0, U32, 1 << 31]))
    step = _u32(step)
    need = step * height
    length = int(rng.choice([need, need, max(need - 1, 0), need + 7, int(rng.integers(0, 5000))]))
    data = bytes(rng.integers(0, 256, min(length, 1 << 20), dtype=np.uint8))
    return Image(
        height=height, width=width, step=step, encoding=encoding, is_bigendian=bool(rng.random() < 0.3), data=data
    )


def check_raw(msg: Image) -> bool:
    try:
        arr = conv.image_to_numpy(msg, MAX_PIXELS)
    except conv.ImageFormatError:
        return False
    assert arr.dtype == np.uint8 and arr.shape[:2] == (msg.height, msg.width), (arr.shape, msg.height, msg.width)
    assert arr.ndim == 2 or arr.shape[2] == 3
    np.ascontiguousarray(arr).sum()  # every pixel of the (strided) view is readable
    return True


FIELD_NAMES = ("u", "v", "id", "x", "rgb")


def cloud_case(rng: np.random.Generator) -> PointCloud2:
    """A valid query cloud of random types, then its layout, size or data mutated."""
    n = int(rng.integers(0, 40))
    types = [np.float32, np.float64, np.uint16, np.int8, np.uint32]
    cols = {name: rng.normal(0, 50, n).astype(types[int(rng.integers(0, len(types)))]) for name in ("u", "v")}
    if rng.random() < 0.5:
        cols["id"] = np.arange(n, dtype=np.uint32)
    msg = conv.make_pointcloud2(Header(), cols)
    for _ in range(int(rng.integers(1, 4))):
        what = rng.integers(0, 7)
        if what == 0:
            msg.point_step = _u32(rng.choice([0, 1, 4, msg.point_step - 1, msg.point_step + 4, U32]))
        elif what == 1:
            msg.width, msg.height = int(rng.choice([0, 1, 5, n + 1, 5000, U32])), int(rng.choice([0, 1, 2, U32]))
        elif what == 2:
            msg.row_step = _u32(rng.choice([0, msg.row_step - 1, msg.row_step + 3, U32]))
        elif what == 3:
            msg.data = _bytes_mutation(rng, bytes(msg.data) or b"\x00")
        elif what == 4:
            msg.is_bigendian = not msg.is_bigendian
        else:
            fields = list(msg.fields) or [PointField()]
            f = fields[int(rng.integers(0, len(fields)))]
            f.name = str(rng.choice(FIELD_NAMES))
            f.offset = int(rng.choice([0, 1, 4, 8, 12, 40, U32]))
            f.datatype = int(rng.integers(0, 11))
            f.count = int(rng.choice([0, 1, 1, 2, U32]))
            msg.fields = (
                fields if rng.random() < 0.7 else [*fields, PointField(name="u", offset=0, datatype=7, count=1)]
            )
    return msg


def check_cloud(msg: PointCloud2) -> bool:
    try:
        uv, ids = conv.cloud_query(msg, MAX_POINTS)
    except ValueError:  # TooManyPoints is one
        return False
    n = msg.width * msg.height
    assert uv.dtype == np.float32 and uv.shape == (n, 2)
    assert ids is None or ids.shape == (n,)
    return True


def polygon_case(rng: np.random.Generator) -> PolygonStamped:
    n = int(rng.choice([0, 1, 7, 50, MAX_POINTS + 1])) if rng.random() < 0.97 else MAX_POINTS
    values = rng.choice([0.0, -1.0, 1e38, -3e38, np.nan, np.inf, -np.inf, 12.5], (n, 2))
    return conv.polygon_stamped(Header(), values)


def check_polygon(msg: PolygonStamped) -> bool:
    try:
        uv, ids = conv.polygon_query(msg, MAX_POINTS)
    except ValueError:
        return False
    assert uv.dtype == np.float32 and uv.shape == (len(msg.polygon.points), 2) and ids is None
    return True


KINDS = {  # kind -> (a maker of cases, built when the test runs; its check)
    "jpeg": (lambda: compressed_case("JPEG"), check_compressed),
    "png": (lambda: compressed_case("PNG"), check_compressed),
    "raw_image": (lambda: raw_case, check_raw),
    "pointcloud2": (lambda: cloud_case, check_cloud),
    "polygon": (lambda: polygon_case, check_polygon),
}


@pytest.mark.parametrize("kind", list(KINDS), ids=[f"{k}-seed{SEED}-{CASES}cases" for k in KINDS])
def test_conversion_fuzz(kind: str) -> None:
    """CASES mutated messages of one kind from SEED: a valid array or the declared error, both often."""
    maker, check = KINDS[kind]
    make = maker()
    rng = np.random.default_rng([SEED, list(KINDS).index(kind)])
    converted = 0
    for case in range(CASES):
        msg = make(rng)
        try:
            converted += check(msg)
        except Exception as e:  # name the case: SEED and its index reproduce it
            raise AssertionError(f"{kind} case {case} (seed {SEED}): {type(e).__name__}: {e}") from e
    assert 0.03 * CASES <= converted <= 0.97 * CASES, f"{converted} of {CASES} converted"
