"""spd_node end to end over real rclpy / Fast DDS: node and test in separate processes."""

from __future__ import annotations

import queue
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from helpers import random_model
from ros_harness import NodeProcess, RosHarness, fresh_domain_id

from spd_core.camera import back_project
from spd_core.model.checkpoint import make_checkpoint, save_checkpoint
from spd_core.predictor import DepthPredictor
from spd_ros.launch_util import node_command
from spd_ros.ros_env import local_ros_env

H, W = 120, 160
FX, FY, CX, CY = 200.0, 210.0, 80.0, 60.0
MAX_QUERIES = 500
# as a launch file would: a namespace and remapped topics (relative names resolve in the namespace)
NAMESPACE, REMAPS = "cam", {"image": "/camera/color/image_raw", "depth_points": "points"}


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory: pytest.TempPathFactory):
    model = random_model("convnextv2_atto", size=(64, 96), seed=21)
    ckpt = make_checkpoint(model, train_focal=100.0, input_size=(64, 96))
    path = tmp_path_factory.mktemp("node") / "model.pt"
    save_checkpoint(path, ckpt)
    return model, ckpt, path


@pytest.fixture(scope="module")
def predictor(model_and_ckpt) -> DepthPredictor:
    model, ckpt, _ = model_and_ckpt
    return DepthPredictor.from_model(model, ckpt)


@pytest.fixture(scope="module")
def ros(model_and_ckpt, tmp_path_factory) -> Iterator[tuple[RosHarness, NodeProcess]]:
    domain = fresh_domain_id()
    node = NodeProcess(
        model_and_ckpt[2],
        domain,
        tmp_path_factory.mktemp("logs"),
        NAMESPACE,
        REMAPS,
        query_timeout=2.0,
        max_queries=MAX_QUERIES,
        stamp_tolerance=0.001,
    )
    harness = RosHarness(domain, NAMESPACE, REMAPS)
    try:
        harness.wait_ready(node, ("image", "queries", "query_points", "camera_info"))
        assert harness.pub["image"].topic_name == "/camera/color/image_raw"
        assert harness.sub_points.topic_name == "/cam/points"
        yield harness, node
    finally:
        harness.close()
        rc = node.stop()
        out = node.output()
        assert rc == 0 and "Traceback" not in out and "worker joined" in out, out  # clean Ctrl-C


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def uv_points(n: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)], 1).astype(np.float32)


def test_00_queries_before_any_image_get_nans(ros) -> None:
    harness, _ = ros
    harness.send_queries(0.0, [(5, 5), (10, 10)])
    a = harness.next_answer()
    assert a["n"] == 2 and np.isnan(a["depth"]).all()
    harness.wait_counter("query_messages_unmatched", 1)


def test_diagnostics_name_the_node_fully(ros) -> None:
    """One node per camera: each diagnostics status carries the node's namespace and name."""
    harness, _ = ros
    assert harness.diagnostic_status().name == f"/{NAMESPACE}/spd_node: depth"


def test_end_to_end_matches_predictor_and_back_projection(ros, predictor: DepthPredictor) -> None:
    harness, _ = ros
    harness.send_camera_info(FX, FY, CX, CY, (H, W))
    harness.send_queries(0.0, [(1, 1)])  # flush: camera_info is processed before the image below
    harness.next_answer()
    img = image(1)
    harness.send_image(img, 1.0)
    uv = uv_points(40)
    ids = np.arange(100, 140, dtype=np.uint32)
    harness.send_query_points(1.0, uv, ids)
    a = harness.next_answer()
    assert a["stamp"] == 1.0 and a["frame_id"] == "cam" and a["n"] == 40
    np.testing.assert_array_equal(a["u"], uv[:, 0])
    np.testing.assert_array_equal(a["v"], uv[:, 1])
    np.testing.assert_array_equal(a["id"], ids)
    expect = predictor.query(predictor.encode(img, fx=FX), uv)
    np.testing.assert_allclose(a["depth"], expect, rtol=1e-5)
    assert predictor.depth_scale(predictor.geometry((H, W)), FX) != 1.0  # focal scaling really applied
    xyz = back_project(uv, a["depth"], FX, FY, CX, CY)
    np.testing.assert_allclose(np.stack([a["x"], a["y"], a["z"]], 1), xyz, rtol=1e-5, atol=1e-6)


def test_stamp_matching(ros, predictor: DepthPredictor) -> None:
    harness, _ = ros
    imgs = {10.0: image(10), 11.0: image(11), 12.0: image(12)}
    uv = uv_points(8, seed=3)
    expect = {s: predictor.query(predictor.encode(im, fx=FX), uv) for s, im in imgs.items()}
    for s in (10.0, 11.0):
        harness.send_image(imgs[s], s)
        harness.send_queries(s, uv)
        np.testing.assert_allclose(harness.next_answer()["depth"], expect[s], rtol=1e-5)
    harness.send_queries(10.0, uv)  # an older cached frame
    a = harness.next_answer()
    assert a["stamp"] == 10.0
    np.testing.assert_allclose(a["depth"], expect[10.0], rtol=1e-5)
    harness.send_queries(0.0, uv)  # stamp 0: the newest frame
    a = harness.next_answer()
    assert a["stamp"] == 11.0
    np.testing.assert_allclose(a["depth"], expect[11.0], rtol=1e-5)
    harness.send_queries(12.0, uv)  # query before its frame: waits for it
    assert harness.no_answer(0.3)
    harness.send_image(imgs[12.0], 12.0)
    a = harness.next_answer()
    assert a["stamp"] == 12.0
    np.testing.assert_allclose(a["depth"], expect[12.0], rtol=1e-5)
    before = harness.wait_counter("query_messages_unmatched", 0)
    harness.send_queries(10.5, uv)  # unknown stamp between cached frames: NaNs at once, counted
    a = harness.next_answer(timeout=1.0)
    assert a["stamp"] == 10.5 and np.isnan(a["depth"]).all() and np.isnan(a["z"]).all()
    harness.wait_counter("query_messages_unmatched", before + 1)


def test_no_markers_unless_enabled(ros) -> None:
    """publish_markers defaults to false: no depth_markers publisher at all, nothing on the topic
    while answers flow (the enabled case: test_lifecycle_node)."""
    harness, _ = ros
    harness.subscribe_markers()
    for _ in range(3):
        harness.send_queries(11.0, [(20, 30)])
        assert np.isfinite(harness.next_answer()["depth"]).all()
    assert harness.node.count_publishers(f"/{NAMESPACE}/depth_markers") == 0
    assert harness.markers.empty()


def _still_answers(harness: RosHarness, stamp: float = 11.0) -> None:
    harness.send_queries(stamp, [(20, 30)])
    a = harness.next_answer()
    assert a["stamp"] == stamp and np.isfinite(a["depth"]).all()


def test_bad_images_are_rejected_and_counted(ros, predictor: DepthPredictor) -> None:
    from sensor_msgs.msg import Image

    harness, _ = ros
    base = harness.wait_counter("rejected_image", 0)
    good = image(30)
    bad = [
        Image(header=harness.header(30.0), height=H, width=W, encoding="yuv422", step=W * 2, data=bytes(H * W * 2)),
        Image(header=harness.header(31.0), height=0, width=0, encoding="rgb8", step=0, data=b""),
        Image(header=harness.header(32.0), height=H, width=W, encoding="rgb8", step=W * 3, data=good.tobytes()[:-10]),
    ]
    for i, msg in enumerate(bad, 1):
        harness.publish("image", msg)
        harness.wait_counter("rejected_image", base + i)
        _still_answers(harness)
    padded = np.zeros((H, W * 3 + 16), np.uint8)  # rows padded to a longer step: valid
    padded[:, : W * 3] = good.reshape(H, W * 3)
    harness.publish(
        "image",
        Image(header=harness.header(33.0), height=H, width=W, encoding="rgb8", step=W * 3 + 16, data=padded.tobytes()),
    )
    uv = uv_points(5, seed=4)
    harness.send_queries(33.0, uv)
    np.testing.assert_allclose(
        harness.next_answer()["depth"], predictor.query(predictor.encode(good, fx=FX), uv), rtol=1e-5
    )
    bgr = image(34)
    harness.send_image(bgr, 34.0, encoding="bgr8")
    harness.send_queries(34.0, uv)
    np.testing.assert_allclose(
        harness.next_answer()["depth"], predictor.query(predictor.encode(bgr, fx=FX), uv), rtol=1e-5
    )


def test_bad_queries(ros) -> None:
    from sensor_msgs.msg import CameraInfo

    from spd_ros.conversions import make_pointcloud2

    harness, node = ros
    invalid = harness.wait_counter("query_points_invalid", 0)
    harness.send_queries(11.0, [(float("nan"), 3), (5, float("inf")), (20, 30), (-1, 5), (W, 5), (5, H + 3)])
    a = harness.next_answer()
    assert np.isnan(a["depth"][[0, 1, 3, 4, 5]]).all() and np.isfinite(a["depth"][2])
    assert harness.wait_counter("query_points_invalid", invalid + 5) == invalid + 5  # counted, not rejected
    harness.send_queries(11.0, [])  # empty list: an empty answer with the frame's header
    a = harness.next_answer()
    assert a["n"] == 0 and a["stamp"] == 11.0
    base = harness.wait_counter("query_messages", 0)
    harness.send_queries(11.0, uv_points(MAX_QUERIES + 1))
    harness.wait_counter("rejected_too_many_queries", 1)
    assert harness.no_answer(0.3)
    _still_answers(harness)
    harness.publish("query_points", make_pointcloud2(harness.header(11.0), {"x": np.zeros(3, np.float32)}))
    harness.wait_counter("rejected_query_points", 1)
    _still_answers(harness)
    harness.publish("camera_info", CameraInfo(header=harness.header(0.0), height=H, width=W))  # all-zero K
    harness.wait_counter("rejected_camera_info", 1)
    _still_answers(harness)
    harness.wait_counter("query_messages", base + 3)  # raises unless the three valid queries were counted
    # three reasons within a few seconds: each is logged (the throttle is per reason)
    reasons = ("too_many_queries", "query_points", "camera_info")
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not all(f"rejected {r}:" in node.output() for r in reasons):
        time.sleep(0.1)
    assert all(f"rejected {r}:" in node.output() for r in reasons), node.output()[-2000:]


def test_runtime_parameters_and_dense(ros, predictor: DepthPredictor) -> None:
    harness, _ = ros
    node = f"/{NAMESPACE}/spd_node"
    ok, reason = harness.set_parameters(node, pixel_budget=128 * 128)[0]
    assert not ok and "read-only" in reason  # not a run-time parameter
    assert harness.set_parameters(node, max_queries=3) == [(True, "")]
    base = harness.wait_counter("rejected_too_many_queries", 0)
    harness.send_queries(11.0, uv_points(4))
    harness.wait_counter("rejected_too_many_queries", base + 1)
    harness.send_queries(11.0, uv_points(3))
    assert harness.next_answer()["n"] == 3
    harness.send_image(image(36), 36.0)
    harness.send_queries(36.0, uv_points(2))
    assert np.isfinite(harness.next_answer()["depth"]).all()  # frame 36 encoded (the query waited for it)
    before = harness.diagnostics()
    harness.send_queries(36.0, uv_points(2))  # model free, frame cached: answered on the callback thread
    assert np.isfinite(harness.next_answer()["depth"]).all()
    mid = harness.diagnostics()
    assert int(mid["query_messages_inline"]) == int(before.get("query_messages_inline", 0)) + 1
    assert harness.set_parameters(node, inline_max_points=0) == [(True, "")]
    harness.send_queries(36.0, uv_points(2))
    assert np.isfinite(harness.next_answer()["depth"]).all()
    after = harness.diagnostics()
    assert int(after["query_messages"]) == int(mid["query_messages"]) + 1
    assert after["query_messages_inline"] == mid["query_messages_inline"]  # by the worker now
    assert harness.set_parameters(node, max_queries=MAX_QUERIES, publish_dense=True) == [(True, "")] * 2
    img = image(40)
    expect = predictor.dense(predictor.encode(img, fx=FX))
    for i in range(20):  # until the node has matched the depth subscriber
        harness.send_image(img, 40.0 + i)
        try:
            msg = harness.dense.get(timeout=1.0)
            break
        except queue.Empty:
            continue
    else:
        raise AssertionError("no dense depth image with publish_dense:=true")
    assert msg.encoding == "32FC1" and (msg.height, msg.width) == (H, W)
    np.testing.assert_allclose(np.frombuffer(msg.data, np.float32).reshape(H, W), expect, rtol=1e-5)
    assert harness.set_parameters(node, publish_dense=False) == [(True, "")]


STARTUP_ERRORS = {
    "missing": "not found",
    "corrupt": "corrupt",
    "bad_param": "cache_size",
    "params_file": "missing.yaml",
    "bad_field": "train_focal = nan",
}


def test_camera_info_of_another_aspect_ratio_is_refused(ros) -> None:
    """A 640x640 camera_info for the 160x120 stream: counted, no 3D points made from it; depth still
    answered. The right camera_info afterwards gives points again."""
    harness, node = ros
    before = harness.wait_counter("rejected_camera_info", 0)
    harness.send_camera_info(FX, FY, CX, CY, (640, 640))
    time.sleep(0.5)  # another topic: give the camera_info time to arrive before the image
    harness.send_image(image(80), 80.0)
    harness.send_queries(80.0, [(20, 30)])
    a = harness.next_answer()
    assert a["stamp"] == 80.0 and np.isfinite(a["depth"]).all() and np.isnan(a["x"]).all(), node.output()[-3000:]
    harness.wait_counter("rejected_camera_info", before + 1)  # raises unless counted
    harness.send_camera_info(FX, FY, CX, CY, (H, W))
    time.sleep(0.5)
    harness.send_image(image(81), 81.0)
    harness.send_queries(81.0, [(20, 30)])
    a = harness.next_answer()
    assert a["stamp"] == 81.0 and np.isfinite(a["x"]).all() and np.isfinite(a["z"]).all()


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """spd_node started once per kind of damage, all at once (start-up is mostly imports): (rc, stderr)."""
    tmp = tmp_path_factory.mktemp("bad_start")
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    nan_focal = tmp / "nan_focal.pt"  # a readable checkpoint whose train_focal would make every depth NaN
    torch.save(
        {"format": "spd_ros.checkpoint", "version": 1, "train_focal": float("nan"), "input_size": [64, 96]}, nan_focal
    )
    cases = {
        "missing": node_command(tmp / "missing.pt", device="cpu"),
        "corrupt": node_command(corrupt, device="cpu"),
        "bad_param": node_command(corrupt, device="cpu", extra_params={"cache_size": 0}),  # out of its range
        "params_file": node_command(corrupt, tmp / "missing.yaml", device="cpu"),  # e.g. a typo in a launch file
        "bad_field": node_command(nan_focal, device="cpu"),
    }
    procs = {
        name: subprocess.Popen(cmd, env=local_ros_env(fresh_domain_id()), stderr=subprocess.PIPE, text=True)
        for name, cmd in cases.items()
    }
    errs = {name: proc.communicate(timeout=120)[1] for name, proc in procs.items()}
    return {name: (procs[name].returncode, err) for name, err in errs.items()}


@pytest.mark.parametrize("damage", list(STARTUP_ERRORS))
def test_bad_checkpoint_or_parameter_fails_at_start(failed_starts, damage: str) -> None:
    rc, stderr = failed_starts[damage]
    assert rc == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("spd_node: error:")]
    assert len(lines) == 1 and STARTUP_ERRORS[damage] in lines[0], stderr
    assert "Traceback" not in stderr
