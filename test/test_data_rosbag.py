"""RGB-D rosbag2 files written and read with rosbags (sqlite3 + mcap): round trips, time matching,
colour encodings, streaming, DataLoader workers, and one-line errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import colour_variants
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer

from spd_core.data import DataError, RosbagRGBD, render_scene, write_synthetic_bag
from spd_core.data.rosbag_types import IMAGE, typestore
from spd_core.data.rosbag_write import START_NS, image_msg

SIZE = (48, 64)
COLOR, DEPTH, INFO = "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw", "/camera/color/camera_info"
TS = typestore()


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ValueError)
    return msg


@pytest.mark.parametrize(
    "storage,encoding,compressed",
    [("sqlite3", "16UC1", False), ("mcap", "32FC1", False), ("mcap", "16UC1", "png"), ("sqlite3", "32FC1", "jpeg")],
)
def test_round_trip(tmp_path: Path, storage: str, encoding: str, compressed: bool | str) -> None:
    n = 3
    bag = write_synthetic_bag(
        tmp_path / "bag",
        n,
        seed=2,
        size=SIZE,
        storage=storage,
        depth_encoding=encoding,
        compressed=compressed,
        rate_hz=20.0,
    )
    files = {p.suffix for p in bag.iterdir()}
    assert (".mcap" if storage == "mcap" else ".db3") in files and "metadata.yaml" in {p.name for p in bag.iterdir()}
    ds = RosbagRGBD(bag, color_topic=COLOR + ("/compressed" if compressed else ""), depth_topic=DEPTH, info_topic=INFO)
    assert len(ds) == n and ds.stamps == [START_NS + i * 50_000_000 for i in range(n)]
    for i in range(n):
        ref, s = render_scene(2 * 100003 + i, SIZE), ds[i]
        if compressed == "jpeg":
            assert np.abs(s["image"].astype(int) - ref["image"]).mean() < 5  # lossy, 4:4:4 at quality 95
        else:
            assert np.array_equal(s["image"], ref["image"])  # rgb8 and PNG are lossless
        assert s["depth"].dtype == np.float32 and s["depth"].shape == SIZE and np.isfinite(s["depth"]).all()
        assert np.abs(s["depth"] - ref["depth"]).max() <= (0.5e-3 + 1e-6 if encoding == "16UC1" else 0.0)
        assert ((s["depth"] == 0) == (ref["depth"] == 0)).all()  # invalid stays invalid (32FC1 NaN -> 0)
        assert s["focal"] == pytest.approx(ref["focal"]) and np.allclose(s["K"], ref["K"])
        assert s["stamp_ns"] == ds.stamps[i]
    streamed = list(ds.iter_frames())
    assert len(streamed) == n
    for i, s in enumerate(streamed):
        assert np.array_equal(s["image"], ds[i]["image"]) and np.array_equal(s["depth"], ds[i]["depth"])


def test_header_stamps_frame_id_and_queries(tmp_path: Path) -> None:
    bag = write_synthetic_bag(
        tmp_path / "q", 4, size=SIZE, storage="mcap", rate_hz=10.0, queries_topic="/kp", n_queries=7
    )
    with AnyReader([bag], default_typestore=TS) as reader:
        by_topic: dict[str, list] = {}
        for conn, _, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    assert {t: len(m) for t, m in by_topic.items()} == {COLOR: 4, DEPTH: 4, INFO: 4, "/kp": 4}
    for topic, msgs in by_topic.items():
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs]
        assert stamps == [START_NS + i * 100_000_000 for i in range(4)], topic
        assert {m.header.frame_id for m in msgs} == {"camera_color_optical_frame"}
    uv = np.array([[p.x, p.y] for p in by_topic["/kp"][0].polygon.points])
    assert uv.shape == (7, 2) and (uv >= 0).all() and (uv <= np.array([SIZE[1] - 1, SIZE[0] - 1])).all()
    assert by_topic[DEPTH][0].encoding == "16UC1" and by_topic[COLOR][0].encoding == "rgb8"


def _write(
    path: Path,
    color: list[tuple[int, np.ndarray, str]],
    depth: list[tuple[int, np.ndarray, str]],
    color_topic: str = COLOR,
) -> Path:
    """A bag of explicit (stamp offset ms, array, encoding) colour and depth Images."""
    with Writer(path, version=9) as w:
        cc = w.add_connection(color_topic, IMAGE, typestore=TS)
        cd = w.add_connection(DEPTH, IMAGE, typestore=TS)
        for conn, items in ((cc, color), (cd, depth)):
            for off_ms, arr, enc in items:
                t = START_NS + round(off_ms * 1e6)
                w.write(conn, t, TS.serialize_cdr(image_msg(TS, t, arr, enc), IMAGE))
    return path


def test_time_matching_with_offsets_and_missing_depth(tmp_path: Path) -> None:
    color = [(i * 100.0, np.full((4, 6, 3), i, np.uint8), "rgb8") for i in range(5)]
    offsets = {0: 0.0, 1: 5.0, 3: 30.0, 4: -8.0}  # frame 2 has no depth, frame 3's is 30 ms late
    depth = [(i * 100.0 + off, np.full((4, 6), 1000 + i, np.uint16), "16UC1") for i, off in offsets.items()]
    bag = _write(tmp_path / "b", color, depth)
    ds = RosbagRGBD(bag, COLOR, DEPTH, info_topic=None, tolerance_s=0.01, default_focal=500.0)
    assert len(ds) == 3 and ds.stamps == [START_NS + i * 100_000_000 for i in (0, 1, 4)]
    assert [round(float(ds[i]["depth"][0, 0]) * 1000) for i in range(3)] == [1000, 1001, 1004]
    assert [int(ds[i]["image"][0, 0, 0]) for i in range(3)] == [0, 1, 4]
    assert ds[0]["focal"] == 500.0 and "K" not in ds[0]
    wide = RosbagRGBD(bag, COLOR, DEPTH, tolerance_s=0.05, default_focal=500.0)
    assert len(wide) == 4 and round(float(wide[2]["depth"][0, 0]) * 1000) == 1003
    assert [int(s["image"][0, 0, 0]) for s in wide.iter_frames()] == [0, 1, 3, 4]


def test_depth_shared_by_two_colour_frames_when_streaming(tmp_path: Path) -> None:
    color = [(i * 50.0, np.full((4, 6, 3), i, np.uint8), "rgb8") for i in range(4)]  # 20 Hz colour
    depth = [(i * 100.0 + 20, np.full((4, 6), 2000 + i, np.uint16), "16UC1") for i in range(2)]  # 10 Hz depth
    ds = RosbagRGBD(_write(tmp_path / "b", color, depth), COLOR, DEPTH, tolerance_s=0.04, default_focal=1.0)
    got = [round(float(s["depth"][0, 0]) * 1000) for s in ds.iter_frames()]
    assert got == [2000, 2000, 2001, 2001] == [round(float(ds[i]["depth"][0, 0]) * 1000) for i in range(4)]


def test_colour_encodings_and_32fc1_invalid_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    variants = {**colour_variants(rgb), "mono8": rgb[:, :, 0]}
    d = np.array([[1.5, np.nan, np.inf, -1.0, 0.0, 2.25]] * 4, np.float32)
    for enc, arr in variants.items():
        bag = _write(tmp_path / enc, [(0.0, arr, enc)], [(0.0, d, "32FC1")])
        s = RosbagRGBD(bag, COLOR, DEPTH, default_focal=1.0)[0]
        want = np.repeat(rgb[:, :, :1], 3, 2) if enc == "mono8" else rgb
        assert np.array_equal(s["image"], want), enc
        assert s["depth"][0].tolist() == [1.5, 0.0, 0.0, 0.0, 0.0, 2.25]  # NaN / inf / negative -> 0


def test_dataloader_workers_reopen_the_bag(tmp_path: Path) -> None:
    bag = write_synthetic_bag(tmp_path / "bag", 4, seed=1, size=(32, 32), storage="sqlite3")
    ds = RosbagRGBD(bag, COLOR, DEPTH, INFO)
    ds[0]  # the parent process has an open reader; each forked worker must open its own
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda b: b)
    got = [s["stamp_ns"] for batch in loader for s in batch]
    assert got == ds.stamps
    clone = pickle.loads(pickle.dumps(ds))  # spawned workers get a pickled copy without the open reader
    assert np.array_equal(clone[3]["depth"], ds[3]["depth"])
    ds.close()
    assert ds[1]["stamp_ns"] == ds.stamps[1]  # reopened on access


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    bag = write_synthetic_bag(tmp_path / "bag", 2, size=(16, 16))
    with pytest.raises(DataError) as e:
        RosbagRGBD(tmp_path / "missing", COLOR, DEPTH)
    assert "missing not found" in _one_line(e)
    with pytest.raises(DataError) as e:
        RosbagRGBD(bag, COLOR, "/nope", INFO)
    msg = _one_line(e)
    assert "depth topic /nope not in bag" in msg and all(t in msg for t in (COLOR, DEPTH, INFO))
    with pytest.raises(DataError) as e:
        RosbagRGBD(bag, COLOR, DEPTH, "/no_info")
    assert "camera_info topic /no_info" in _one_line(e)
    with pytest.raises(DataError, match="type sensor_msgs/msg/CameraInfo; need Image or CompressedImage"):
        RosbagRGBD(bag, INFO, DEPTH, INFO)
    with pytest.raises(DataError, match="encoding rgb8; need 16UC1 or 32FC1"):
        RosbagRGBD(bag, COLOR, COLOR, INFO)
    with pytest.raises(DataError) as e:
        RosbagRGBD(bag, COLOR, DEPTH, info_topic=None)
    assert "no camera_info" in _one_line(e) and "default_focal" in str(e.value)
    yuv = _write(
        tmp_path / "yuv", [(0.0, np.zeros((4, 8), np.uint8), "yuv422")], [(0.0, np.ones((4, 4), np.uint16), "16UC1")]
    )
    with pytest.raises(DataError) as e:
        RosbagRGBD(yuv, COLOR, DEPTH, default_focal=1.0)
    assert f"colour topic {COLOR} has encoding yuv422; supported: rgb8" in _one_line(e)
    empty = write_synthetic_bag(tmp_path / "empty", 0, size=(16, 16), storage="mcap")
    with pytest.raises(DataError) as e:
        RosbagRGBD(empty, COLOR, DEPTH, INFO)
    assert "0 colour and 0 depth messages" in _one_line(e)
    no_depth = write_synthetic_bag(tmp_path / "nodepth", 2, size=(16, 16), depth_topic="/other/depth")
    with pytest.raises(DataError) as e:
        RosbagRGBD(no_depth, COLOR, DEPTH, INFO)
    assert f"depth topic {DEPTH} not in bag" in _one_line(e) and "/other/depth" in str(e.value)
    (tmp_path / "notabag").mkdir()
    with pytest.raises(DataError) as e:
        RosbagRGBD(tmp_path / "notabag", COLOR, DEPTH)
    assert "no rosbag2 directory (no metadata.yaml)" in _one_line(e)
    (tmp_path / "garbage.mcap").write_bytes(b"not an mcap file")
    with pytest.raises(DataError) as e:
        RosbagRGBD(tmp_path / "garbage.mcap", COLOR, DEPTH)
    assert "cannot read bag" in _one_line(e)
    far = _write(
        tmp_path / "far", [(0.0, np.zeros((4, 6, 3), np.uint8), "rgb8")], [(500.0, np.ones((4, 6), np.uint16), "16UC1")]
    )
    with pytest.raises(DataError, match=r"no colour/depth pair .* within tolerance_s=0\.02"):
        RosbagRGBD(far, COLOR, DEPTH, default_focal=1.0)
    with pytest.raises(DataError, match="exists"):
        write_synthetic_bag(bag, 1)
    for kwargs in ({"storage": "rosbag1"}, {"depth_encoding": "mono8"}, {"compressed": "webp"}):
        with pytest.raises(DataError) as e:
            write_synthetic_bag(tmp_path / "new", 1, **kwargs)
        assert str(next(iter(kwargs.values()))) in _one_line(e)
