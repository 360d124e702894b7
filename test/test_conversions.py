"""Message conversion without cv_bridge: images (every encoding, row padding), clouds, camera info."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from spd_core.data.images import encode_compressed
from spd_ros import conversions as conv

RGB = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)


def _msg(arr: np.ndarray, encoding: str, pad: int = 0) -> Image:
    row = arr.reshape(arr.shape[0], -1).view(np.uint8)
    data = np.zeros((arr.shape[0], row.shape[1] + pad), np.uint8)
    data[:, : row.shape[1]] = row
    return Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, step=data.shape[1], data=data.tobytes())


@pytest.mark.parametrize("pad", [0, 7])
def test_colour_encodings(pad: int) -> None:
    alpha = np.full((7, 5, 1), 9, np.uint8)
    cases = {
        "rgb8": RGB,
        "bgr8": RGB[:, :, ::-1],
        "rgba8": np.concatenate([RGB, alpha], 2),
        "bgra8": np.concatenate([RGB[:, :, ::-1], alpha], 2),
    }
    for enc, arr in cases.items():
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
    with pytest.raises(conv.ImageFormatError, match="cannot decode"):
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


def test_intrinsics_and_depth_image() -> None:
    info = CameraInfo(width=640, height=480, k=[500.0, 0, 320, 0, 510.0, 240, 0, 0, 1])
    assert conv.intrinsics(info) == (500.0, 510.0, 320.0, 240.0)
    with pytest.raises(ValueError, match="focal"):
        conv.intrinsics(CameraInfo(width=640, height=480))  # all-zero K
    d = np.random.default_rng(1).random((4, 6)).astype(np.float32)
    msg = conv.depth_image(Header(), d)
    assert msg.encoding == "32FC1" and np.array_equal(np.frombuffer(msg.data, np.float32).reshape(4, 6), d)
