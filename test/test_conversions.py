"""Message conversion without cv_bridge: images (every encoding, row padding), clouds, camera info;
hostile images and clouds rejected with one ImageFormatError / ValueError line, before any big cost."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from helpers import colour_variants
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spd_core.data.images import MAX_PIXELS, encode_compressed
from spd_ros import conversions as conv

RGB = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)


def _msg(arr: np.ndarray, encoding: str, pad: int = 0) -> Image:
    row = arr.reshape(arr.shape[0], -1).view(np.uint8)
    data = np.zeros((arr.shape[0], row.shape[1] + pad), np.uint8)
    data[:, : row.shape[1]] = row
    return Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, step=data.shape[1], data=data.tobytes())


@pytest.mark.parametrize("pad", [0, 7])
def test_colour_encodings(pad: int) -> None:
    for enc, arr in colour_variants(RGB).items():
        assert np.array_equal(conv.image_to_numpy(_msg(np.ascontiguousarray(arr), enc, pad)), RGB), enc
    mono = RGB[:, :, 0].copy()
    assert np.array_equal(conv.image_to_numpy(_msg(mono, "mono8", pad)), mono)
    mono16 = mono.astype(np.uint16) << 8
    assert np.array_equal(conv.image_to_numpy(_msg(mono16, "mono16", pad)), mono)


def test_bad_images() -> None:
    with pytest.raises(conv.ImageFormatError, match="unsupported encoding 'yuv422'"):
        conv.image_to_numpy(Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)))
    with pytest.raises(conv.ImageFormatError, match="empty"):
        conv.image_to_numpy(Image(height=0, width=0, encoding="rgb8", step=0, data=b""))
    with pytest.raises(conv.ImageFormatError, match="bytes"):
        conv.image_to_numpy(Image(height=7, width=5, encoding="rgb8", step=15, data=RGB.tobytes()[:-1]))


def test_compressed() -> None:
    png = CompressedImage(format="png", data=encode_compressed(RGB, "png"))
    assert np.array_equal(conv.compressed_to_numpy(png), RGB)
    jpg = CompressedImage(format="jpeg", data=encode_compressed(RGB, "jpeg"))
    assert conv.compressed_to_numpy(jpg).shape == (7, 5, 3)
    with pytest.raises(conv.ImageFormatError, match="cannot decode compressed JPEG"):
        conv.compressed_to_numpy(CompressedImage(format="jpeg", data=b"\xff\xd8\xffgarbage"))
    with pytest.raises(conv.ImageFormatError, match="not an image format known here"):
        conv.compressed_to_numpy(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))


def test_pointcloud_round_trip() -> None:
    cols = {"x": np.arange(4, dtype=np.float32), "u": np.float32([1.5, 2, 3, 4]), "id": np.uint32([7, 8, 9, 2**31])}
    msg = conv.make_pointcloud2(Header(frame_id="cam"), cols)
    assert msg.width == 4 and msg.point_step == 12 and [f.name for f in msg.fields] == ["x", "u", "id"]
    back = conv.pointcloud2_fields(msg, ["id", "u"])
    assert np.array_equal(back["id"], cols["id"]) and back["id"].dtype == np.uint32
    assert np.array_equal(back["u"], cols["u"])
    empty = conv.make_pointcloud2(Header(), {"u": np.zeros(0, np.float32)})
    assert conv.pointcloud2_fields(empty, ["u"])["u"].shape == (0,)
    with pytest.raises(ValueError, match="no field"):
        conv.pointcloud2_fields(msg, ["u", "v"])


def test_polygon_and_header_round_trip() -> None:
    """polygon_stamped / header_at are the inverses of polygon_query / stamp_ns."""
    header = conv.header_at(1_700_000_000_123_456_789, "cam")
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (1_700_000_000, 123_456_789, "cam")
    assert conv.stamp_ns(header) == 1_700_000_000_123_456_789
    uv = np.float32([[1.5, 2.25], [0, 119], [np.nan, -1]])
    msg = conv.polygon_stamped(header, uv)
    assert msg.header == header and [p.z for p in msg.polygon.points] == [0.0] * 3
    back, ids = conv.polygon_query(msg)
    np.testing.assert_array_equal(back, uv)
    assert ids is None and conv.polygon_query(conv.polygon_stamped(header, []))[0].shape == (0, 2)


def test_intrinsics_and_depth_image() -> None:
    info = CameraInfo(width=640, height=480, k=[500.0, 0, 320, 0, 510.0, 240, 0, 0, 1])
    assert conv.intrinsics(info) == (500.0, 510.0, 320.0, 240.0)
    with pytest.raises(ValueError, match="focal"):
        conv.intrinsics(CameraInfo(width=640, height=480))  # all-zero K
    d = np.random.default_rng(1).random((4, 6)).astype(np.float32)
    msg = conv.depth_image(Header(), d)
    assert msg.encoding == "32FC1" and np.array_equal(np.frombuffer(msg.data, np.float32).reshape(4, 6), d)


# --- hostile images -------------------------------------------------------------------------------


def _saved(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR (CRC recomputed) declares ``width`` x ``height``: a tiny bomb."""
    data = bytearray(_saved(np.zeros((1, 1), np.uint8), "PNG"))
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose SOF0 declares ``width`` x ``height``."""
    data = bytearray(_saved(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _compressed(data: bytes, fmt: str = "png") -> CompressedImage:
    return CompressedImage(format=fmt, data=data)


def refused_peak_bytes(decode, msg, match: str) -> int:
    """Peak bytes Python allocated while ``decode(msg)`` raised ImageFormatError matching ``match``."""
    tracemalloc.start()
    try:
        with pytest.raises(conv.ImageFormatError, match=match):
            decode(msg)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("make", [png_declaring, jpeg_declaring])
def test_compressed_bomb_rejected_from_its_header(make) -> None:
    """20000x20000 declared in a file of a few hundred bytes: rejected by its header, nothing decoded
    (well under a MB allocated, where decoding would need 400 MB)."""
    msg = _compressed(make(20000, 20000))
    assert len(msg.data) < 1000
    assert (
        refused_peak_bytes(conv.compressed_to_numpy, msg, r"20000x20000 has 400000000 pixels.*max_image_pixels")
        < 1 << 20
    )


def test_compressed_limit_is_the_argument_not_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_pixels`` decides, both ways; Pillow's own bomb limit (here set to 10 pixels) plays no part."""
    import warnings

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)
    png = _compressed(encode_compressed(RGB, "png"))  # 7x5 = 35 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert np.array_equal(conv.compressed_to_numpy(png, max_pixels=35), RGB)
    with pytest.raises(conv.ImageFormatError, match="35 pixels, more than the limit of 34"):
        conv.compressed_to_numpy(png, max_pixels=34)


def bmp_declaring(width: int, height: int) -> bytes:
    """A BMP file header + BITMAPINFOHEADER declaring ``width`` x ``height`` 24-bit pixels, no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def gif_tile_outside() -> bytes:
    """A GIF whose 1x1 logical screen holds a 10x10 frame placed at (100, 100)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + bytes(6)  # 2-colour global table
    frame = b"," + struct.pack("<HHHHB", 100, 100, 10, 10, 0) + b"\x02\x02\x4c\x01\x00"
    return screen + frame + b";"


HOSTILE = {
    "BMP": bmp_declaring(100000, 100000),
    "GIF": gif_tile_outside(),
    "PPM": b"P6\n-1 5\n255\n" + bytes(30),
}


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF", "WEBP", "PPM"])
def test_only_jpeg_and_png_are_decoded(fmt: str) -> None:
    """Well-formed and hostile files of other formats are rejected by name, none is decoded."""
    for data in (_saved(RGB, fmt), HOSTILE.get(fmt)):
        if data is None:
            continue
        with pytest.raises(conv.ImageFormatError, match=f"is a {fmt} image; only JPEG and PNG are decoded"):
            conv.compressed_to_numpy(_compressed(data, fmt.lower()))


@pytest.mark.parametrize("h, w", [(1, 1), (1, 50), (50, 1)])
def test_too_small_images_rejected_at_conversion(h: int, w: int) -> None:
    arr = np.zeros((h, w, 3), np.uint8)
    with pytest.raises(conv.ImageFormatError, match=f"image {h}x{w} is too small"):
        conv.image_to_numpy(_msg(arr, "rgb8"))
    with pytest.raises(conv.ImageFormatError, match=f"image {h}x{w} is too small"):
        conv.compressed_to_numpy(_compressed(encode_compressed(arr, "png")))
    assert conv.image_to_numpy(_msg(np.zeros((2, 2, 3), np.uint8), "rgb8")).shape == (2, 2, 3)  # the smallest


def test_raw_image_over_the_limit_rejected_before_its_data() -> None:
    """The declared size is checked first: a header of 2**32-1 squared (whose byte count would overflow
    any 64-bit product) and a real 20x20 image over a limit of 399 are both refused by the limit."""
    huge = Image(height=2**32 - 1, width=2**32 - 1, encoding="rgb8", step=2**32 - 1, data=b"")
    assert refused_peak_bytes(conv.image_to_numpy, huge, f"more than the limit of {MAX_PIXELS}") < 1 << 20
    img = _msg(np.zeros((20, 20, 3), np.uint8), "rgb8")
    with pytest.raises(conv.ImageFormatError, match="400 pixels, more than the limit of 399"):
        conv.image_to_numpy(img, max_pixels=399)
    assert conv.image_to_numpy(img, max_pixels=400).shape == (20, 20, 3)


# --- strict PointCloud2 ---------------------------------------------------------------------------


def _cloud(
    fields, point_step: int, data: bytes, width: int, height: int = 1, row_step: int | None = None, big: bool = False
) -> PointCloud2:
    """A PointCloud2 as given, no questions asked; ``fields`` = (name, offset, datatype[, count])."""
    msg = PointCloud2(height=height, width=width, point_step=point_step, is_bigendian=big)
    msg.row_step = width * point_step if row_step is None else row_step
    msg.fields = [PointField(name=f[0], offset=f[1], datatype=f[2], count=(*f, 1)[3]) for f in fields]
    msg.data = data
    return msg


F32 = PointField.FLOAT32
UV = [("u", 0, F32), ("v", 4, F32)]


@pytest.mark.parametrize(
    "fields, point_step, error",
    [
        (UV, 0, "point_step is 0"),
        (UV, 4, "field 'v' \\(bytes 4..8\\) exceeds point_step 4"),  # v would lie in the next point
        ([("u", 0, F32), ("v", 2, F32)], 8, "fields 'u' and 'v' overlap"),
        ([("u", 0, F32), ("v", 4, F32), ("u", 8, F32)], 12, "two fields named 'u'"),
        ([("u", 0, F32), ("v", 4, 9)], 8, "field 'v' has unknown datatype 9"),
        ([("u", 0, F32), ("v", 4, 0)], 8, "field 'v' has unknown datatype 0"),
    ],
)
def test_bad_field_layouts_are_rejected(fields, point_step: int, error: str) -> None:
    msg = _cloud(fields, point_step, bytes(3 * max(point_step, 1)), 3)
    with pytest.raises(ValueError, match=error):
        conv.cloud_query(msg)


def test_row_step_and_data_length_must_agree() -> None:
    data = np.float32([1, 2, 3, 4]).tobytes()
    assert conv.cloud_query(_cloud(UV, 8, data, 2))[0].tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="row_step 8 < width 2 x point_step 8"):
        conv.cloud_query(_cloud(UV, 8, data, 2, row_step=8))
    with pytest.raises(ValueError, match="data has 15 bytes, height 1 x row_step 16 expected"):
        conv.cloud_query(_cloud(UV, 8, data[:-1], 2))
    with pytest.raises(ValueError, match="field 'u' has count 2"):  # u[2] then v: one value per point expected
        conv.cloud_query(_cloud([("u", 0, F32, 2), ("v", 8, F32)], 12, bytes(24), 2))


def test_organized_cloud_with_row_padding() -> None:
    """height 2, width 2, rows padded to 20 bytes: points read at row·row_step + col·point_step."""
    rows = np.zeros((2, 20), np.uint8)
    rows[0, :16] = np.frombuffer(np.float32([1, 2, 3, 4]).tobytes(), np.uint8)
    rows[1, :16] = np.frombuffer(np.float32([5, 6, 7, 8]).tobytes(), np.uint8)
    uv, ids = conv.cloud_query(_cloud(UV, 8, rows.tobytes(), 2, height=2, row_step=20))
    assert uv.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]] and ids is None


def test_big_endian_float64_and_integer_fields() -> None:
    uv = np.array([[1.25, 2.5], [3.0, 400.75]])
    rec = np.zeros(2, [("u", ">f8"), ("v", ">f8"), ("id", ">u4")])
    rec["u"], rec["v"], rec["id"] = uv[:, 0], uv[:, 1], [7, 2**31]
    fields = [("u", 0, PointField.FLOAT64), ("v", 8, PointField.FLOAT64), ("id", 16, PointField.UINT32)]
    got, ids = conv.cloud_query(_cloud(fields, 20, rec.tobytes(), 2, big=True))
    assert got.dtype == np.float32 and np.array_equal(got, uv.astype(np.float32))
    assert ids.tolist() == [7, 2**31] and ids.dtype == np.uint32
    little = conv.make_pointcloud2(Header(), {"u": np.uint16([3, 65535]), "v": np.int8([-1, 5])})
    assert conv.cloud_query(little)[0].tolist() == [[3, -1], [65535, 5]]


def test_too_many_points_rejected_before_the_data() -> None:
    """A cloud declaring (2**32-1)**2 points with no data, or a polygon of 6 points over a limit
    of 5: TooManyPoints (its own reason in the node), not a data error."""
    huge = _cloud(UV, 8, b"", 2**32 - 1, height=2**32 - 1, row_step=0)
    with pytest.raises(conv.TooManyPoints, match=f"{(2**32 - 1) ** 2} points > max_queries=4096"):
        conv.cloud_query(huge, max_points=4096)
    cloud = conv.make_pointcloud2(Header(), {"u": np.zeros(6, np.float32), "v": np.zeros(6, np.float32)})
    with pytest.raises(conv.TooManyPoints, match="6 points > max_queries=5"):
        conv.cloud_query(cloud, max_points=5)
    assert conv.cloud_query(cloud, max_points=6)[0].shape == (6, 2)
    poly = conv.polygon_stamped(Header(), [(float(i), 2.0 * i) for i in range(6)])
    with pytest.raises(conv.TooManyPoints, match="6 points > max_queries=5"):
        conv.polygon_query(poly, max_points=5)
    uv, ids = conv.polygon_query(poly, max_points=6)
    assert uv.dtype == np.float32 and uv[:, 1].tolist() == [0, 2, 4, 6, 8, 10] and ids is None
