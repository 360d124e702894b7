"""Datasets: synthetic scenes, rosbag2 RGB-D (sqlite3 + mcap), NYU BTS layout, transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spd_core.data import (
    DataError,
    EvalTransform,
    NYUDepthV2,
    RosbagRGBD,
    SyntheticRGBD,
    TrainTransform,
    render_scene,
    write_synthetic_bag,
)
from spd_core.data.images import ImageFormatError, image_array, to_rgb8
from spd_core.data.synthetic import _Plane, intrinsics

SIZE = (96, 128)
COLOR, DEPTH, INFO = "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw", "/camera/color/camera_info"


# --- synthetic scenes ---------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_varied() -> None:
    a, b, c = render_scene(3, SIZE), render_scene(3, SIZE), render_scene(4, SIZE)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["depth"], b["depth"])
    assert not np.array_equal(a["depth"], c["depth"])
    assert a["image"].dtype == np.uint8 and a["image"].shape == (*SIZE, 3)
    d = a["depth"]
    assert d.dtype == np.float32 and np.isfinite(d).all()
    assert 0.3 < d[d > 0].min() and d.max() <= 10.0
    assert d[d > 0].std() > 0.3 and a["image"].std() > 10  # real structure, not a flat frame
    assert a["focal"] == pytest.approx(518.8579 * 128 / 640)


def test_synthetic_depth_is_exact_ray_plane_distance() -> None:
    """A camera at height h looking level at a floor: depth along Z at row v is h·fy / (v − cy)."""
    h, w = 480, 640
    k = intrinsics((h, w))
    cam_h = 1.3
    floor = _Plane(1, 0.0, 1.0)
    v = np.arange(300, 480, dtype=np.float32)
    d = (np.zeros_like(v), -(v - k[1, 2]) / k[1, 1], np.ones_like(v))  # world y up, level camera
    t = floor.intersect(np.array([0.0, cam_h, 0.0]), d)
    np.testing.assert_allclose(t, cam_h * k[1, 1] / (v - k[1, 2]), rtol=1e-5)
    wall = _Plane(2, 4.0, -1.0)  # facing wall 4 m ahead: depth 4 everywhere on it
    d = (np.random.default_rng(0).uniform(-0.5, 0.5, 50), np.random.default_rng(1).uniform(-0.5, 0.5, 50), np.ones(50))
    np.testing.assert_allclose(wall.intersect(np.zeros(3), d), 4.0)


def test_synthetic_dataset_applies_transform() -> None:
    ds = SyntheticRGBD(3, seed=5, size=SIZE, transform=EvalTransform())
    assert len(ds) == 3 and ds[1]["image"].shape == (3, *SIZE)
    assert torch.equal(ds[1]["depth"][0], torch.from_numpy(render_scene(5 * 100003 + 1, SIZE)["depth"]))
    with pytest.raises(IndexError):
        ds[3]


# --- rosbag2 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "storage,encoding,compressed", [("sqlite3", "16UC1", False), ("mcap", "32FC1", True), ("mcap", "16UC1", False)]
)
def test_bag_round_trip(tmp_path: Path, storage: str, encoding: str, compressed: bool) -> None:
    bag = write_synthetic_bag(tmp_path / "bag", 4, seed=2, size=SIZE, storage=storage, depth_encoding=encoding,
                              compressed=compressed)  # fmt: skip
    ds = RosbagRGBD(bag, color_topic=COLOR + ("/compressed" if compressed else ""), depth_topic=DEPTH, info_topic=INFO)
    assert len(ds) == 4 and ds.stamps == sorted(ds.stamps)
    for i in (0, 3):
        ref, s = render_scene(2 * 100003 + i, SIZE), ds[i]
        assert np.array_equal(s["image"], ref["image"])  # rgb8 and PNG are lossless
        tol = 0.5e-3 + 1e-6 if encoding == "16UC1" else 0.0
        assert np.abs(s["depth"] - ref["depth"]).max() <= tol
        assert (s["depth"][ref["depth"] == 0] == 0).all()  # invalid stays invalid (32FC1 NaN -> 0)
        assert s["focal"] == pytest.approx(ref["focal"]) and s["K"][0, 2] == pytest.approx(ref["K"][0, 2])


def _bag_with_depth_offsets(path: Path, offsets_ms: list[float | None]) -> Path:
    """Colour at 10 Hz; depth i stamped offsets_ms[i] later (None = missing)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from spd_core.data.rosbag import START_NS, image_msg

    ts = get_typestore(Stores.ROS2_JAZZY)
    with Writer(path, version=9) as w:
        cc = w.add_connection(COLOR, "sensor_msgs/msg/Image", typestore=ts)
        cd = w.add_connection(DEPTH, "sensor_msgs/msg/Image", typestore=ts)
        for i, off in enumerate(offsets_ms):
            t = START_NS + i * 100_000_000
            w.write(
                cc,
                t,
                ts.serialize_cdr(image_msg(ts, t, np.full((4, 6, 3), i, np.uint8), "bgr8"), "sensor_msgs/msg/Image"),
            )
            if off is not None:
                td = t + int(off * 1e6)
                dm = image_msg(ts, td, np.full((4, 6), 1000 + i, np.uint16), "16UC1")
                w.write(cd, td, ts.serialize_cdr(dm, "sensor_msgs/msg/Image"))
    return path


def test_bag_time_matching(tmp_path: Path) -> None:
    bag = _bag_with_depth_offsets(tmp_path / "b", [0.0, 5.0, None, 30.0, -8.0])
    ds = RosbagRGBD(bag, COLOR, DEPTH, info_topic=None, tolerance_s=0.01, default_focal=500.0)
    assert len(ds) == 3  # frame 2 has no depth, frame 3's is 30 ms off
    assert [int(ds[i]["depth"][0, 0] * 1000 + 0.5) for i in range(3)] == [1000, 1001, 1004]
    assert [int(ds[i]["image"][0, 0, 0]) for i in range(3)] == [0, 1, 4]  # bgr8 decoded to RGB of equal channels
    assert ds[0]["focal"] == 500.0
    assert len(RosbagRGBD(bag, COLOR, DEPTH, tolerance_s=0.05, default_focal=500.0)) == 4


def test_bag_errors(tmp_path: Path) -> None:
    bag = write_synthetic_bag(tmp_path / "bag", 2, size=(32, 32))
    with pytest.raises(DataError, match="not found"):
        RosbagRGBD(tmp_path / "missing", COLOR, DEPTH)
    with pytest.raises(DataError, match=r"depth topic /nope not in bag .*topics there: .*image_raw"):
        RosbagRGBD(bag, COLOR, "/nope", INFO)
    with pytest.raises(DataError, match="need Image"):
        RosbagRGBD(bag, INFO, DEPTH, INFO)  # CameraInfo is no colour topic
    with pytest.raises(DataError, match="encoding rgb8; need 16UC1 or 32FC1"):
        RosbagRGBD(bag, COLOR, COLOR, INFO)
    with pytest.raises(DataError, match="no camera_info"):
        RosbagRGBD(bag, COLOR, DEPTH, info_topic=None)
    no_depth = _bag_with_depth_offsets(tmp_path / "nodepth", [None, None])
    with pytest.raises(DataError, match="0 depth messages"):
        RosbagRGBD(no_depth, COLOR, DEPTH, default_focal=1.0)
    with pytest.raises(DataError, match="exists"):
        write_synthetic_bag(bag, 1)
    for err in (DataError, ImageFormatError):
        assert "\n" not in str(err("x"))


def test_image_decoding_with_row_padding() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (3, 5, 3), dtype=np.uint8)
    bgr = np.full((3, 20), 77, np.uint8)  # rows padded to step 20 with junk bytes
    bgr[:, :15] = rgb[:, :, ::-1].reshape(3, 15)
    out = to_rgb8(image_array(bgr.tobytes(), 3, 5, 20, "bgr8"), "bgr8")
    assert np.array_equal(out, rgb)
    with pytest.raises(ImageFormatError, match="unsupported encoding"):
        image_array(b"", 1, 1, 3, "yuv422")
    with pytest.raises(ImageFormatError, match="need"):
        image_array(bgr.tobytes()[:40], 3, 5, 20, "bgr8")
    with pytest.raises(ImageFormatError, match="step"):
        image_array(bgr.tobytes(), 3, 5, 10, "bgr8")


# --- NYU ------------------------------------------------------------------------------------------


def _nyu_tree(root: Path) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(0)
    depth_mm = rng.integers(500, 9000, (48, 64)).astype(np.uint16)
    depth_mm[:5] = 0
    for scene in ("kitchen_0028b", "bathroom"):
        (root / "sync" / scene).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "sync" / scene / "rgb_00045.jpg")
        Image.fromarray(depth_mm).save(root / "sync" / scene / "sync_depth_00045.png")
    train = root / "nyudepthv2_train_files_with_gt.txt"
    train.write_text("/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n"
                     "/kitchen_0028b/rgb_00046.jpg None 518.8579\n")  # fmt: skip
    test = root / "nyudepthv2_test_files_with_gt.txt"
    test.write_text("bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n\n")
    return train, test, depth_mm


def test_nyu_bts_layout(tmp_path: Path) -> None:
    train, test, depth_mm = _nyu_tree(tmp_path)
    for lst in (train, test):
        ds = NYUDepthV2(tmp_path / "sync", lst)
        assert len(ds) == 1  # the None line is skipped
        s = ds[0]
        np.testing.assert_allclose(s["depth"], depth_mm / 1000.0, rtol=1e-6)
        assert (s["depth"][:5] == 0).all() and s["focal"] == 518.8579 and s["image"].shape == (48, 64, 3)
    with pytest.raises(DataError, match="not found"):
        NYUDepthV2(tmp_path / "sync", tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("bathroom/rgb_00099.jpg bathroom/sync_depth_00099.png 518.8579\n")
    with pytest.raises(DataError, match=r"rgb_00099\.jpg not found"):
        NYUDepthV2(tmp_path / "sync", bad)[0]
    bad.write_text("just_one_column.jpg\n")
    with pytest.raises(DataError, match="expected 'rgb depth focal'"):
        NYUDepthV2(tmp_path / "sync", bad)


# --- transforms -----------------------------------------------------------------------------------


def test_train_transform_recipe() -> None:
    s = render_scene(7, SIZE)
    t = TrainTransform(crop=(64, 96), rotate_deg=2.5, seed=0)
    out = t(s)
    assert out["image"].shape == (3, 64, 96) and out["depth"].shape == (1, 64, 96)
    assert out["image"].dtype == torch.float32 and float(out["focal"]) == pytest.approx(s["focal"])
    assert set(np.unique(out["depth"].numpy())) <= set(np.unique(s["depth"])) | {0.0}  # nearest: no new depths
    t.rng = np.random.default_rng(5)
    a = t(s)
    t.rng = np.random.default_rng(5)
    again = t(s)
    assert torch.equal(a["image"], again["image"]) and torch.equal(a["depth"], again["depth"])
    with pytest.raises(DataError, match="smaller than the crop"):
        TrainTransform(crop=(128, 128))(s)


def test_flip_moves_image_and_depth_together() -> None:
    s = render_scene(8, SIZE)
    plain = TrainTransform(crop=SIZE, rotate_deg=0, flip=False, color_jitter=False)(s)
    flips = [TrainTransform(crop=SIZE, rotate_deg=0, flip=True, color_jitter=False, seed=i)(s) for i in range(8)]
    flipped = [f for f in flips if not torch.equal(f["depth"], plain["depth"])]
    assert flipped, "no flip in 8 draws"
    for f in flipped:
        assert torch.equal(f["depth"], plain["depth"].flip(-1)) and torch.equal(f["image"], plain["image"].flip(-1))


def test_eval_transform_resizes_image_only() -> None:
    s = render_scene(9, (120, 160))
    out = EvalTransform((96, 128))(s)
    assert out["image"].shape == (3, 96, 128) and out["depth"].shape == (1, 120, 160)
    assert torch.equal(out["depth"][0], torch.from_numpy(s["depth"]))
