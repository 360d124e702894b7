"""spd_node end to end over real rclpy / Fast DDS: node and test in separate processes."""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import saved_model
from ros_harness import NodeProcess, RosHarness, connected, fresh_domain_id

from spd_core.camera import back_project, rescale_intrinsics
from spd_core.predictor import DepthPredictor

H, W = 120, 160
FX, FY, CX, CY = 200.0, 210.0, 80.0, 60.0
MAX_QUERIES = 500
# as a launch file would: a namespace and remapped topics (relative names resolve in the namespace)
NAMESPACE, REMAPS = "cam", {"image": "/camera/color/image_raw", "depth_points": "points"}


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("node") / "model.pt"
    return (*saved_model(path, seed=21, train_focal=100.0), path)


@pytest.fixture(scope="module")
def predictor(model_and_ckpt) -> DepthPredictor:
    model, ckpt, _ = model_and_ckpt
    return DepthPredictor.from_model(model, ckpt)


@pytest.fixture(scope="module")
def started(model_and_ckpt, tmp_path_factory) -> Iterator[tuple[RosHarness, NodeProcess, dict]]:
    """spd_node and the test node. The node's very first exchange, a query before any image, is made
    and recorded here: only the fixture sees the node before a test has sent it a frame."""
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
    with connected(harness, node, logged=("worker joined",)):  # a clean Ctrl-C
        assert harness.pub["image"].topic_name == "/camera/color/image_raw"
        assert harness.sub_points.topic_name == "/cam/points"
        harness.send_queries(0.0, [(5, 5), (10, 10)])
        answer = harness.next_answer()
        first = {"answer": answer, "unmatched": harness.wait_counter("query_messages_unmatched", 1)}
        yield harness, node, first


@pytest.fixture
def ros(started) -> tuple[RosHarness, NodeProcess]:
    return started[0], started[1]


STAMPS = itertools.count(1)


def new_stamps() -> float:
    """The start of a stamp range (100 s wide) that no other test uses, newer than every frame sent
    before: the tests share one node and run alone or together, in any order."""
    return 100.0 * next(STAMPS)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def uv_points(n: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)], 1).astype(np.float32)


def use_camera_info(harness: RosHarness, k=(FX, FY, CX, CY), size: tuple[int, int] = (H, W)) -> None:
    """Send camera_info; a query sent after it is answered before the next image goes out (flush)."""
    harness.send_camera_info(*k, size)
    harness.send_queries(0.0, [(1, 1)])
    harness.next_answer()


def _still_answers(harness: RosHarness, stamp: float) -> None:
    harness.send_queries(stamp, [(20, 30)])
    a = harness.next_answer()
    assert a["stamp"] == stamp and np.isfinite(a["depth"]).all()


def send_frame(harness: RosHarness, seed: int, stamp: float) -> np.ndarray:
    """Send ``image(seed)`` at ``stamp`` and wait until the node has encoded it; the image."""
    img = image(seed)
    harness.send_image(img, stamp)
    _still_answers(harness, stamp)  # newer than every cached frame: the query waits for this one
    return img


def test_queries_before_any_image_get_nans(started) -> None:
    """The node's first query, before any image (made by the fixture): NaNs, the one unmatched query."""
    a, unmatched = started[2]["answer"], started[2]["unmatched"]
    assert a["n"] == 2 and np.isnan(a["depth"]).all() and a["stamp"] == 0.0
    assert unmatched == 1


def test_diagnostics_name_the_node_fully(ros) -> None:
    """One node per camera: each diagnostics status carries the node's namespace and name."""
    harness, _ = ros
    assert harness.diagnostic_status().name == f"/{NAMESPACE}/spd_node: depth"


def test_end_to_end_matches_predictor_and_back_projection(ros, predictor: DepthPredictor) -> None:
    harness, _ = ros
    t0 = new_stamps()
    use_camera_info(harness)  # camera_info is processed before the image below
    img = image(1)
    harness.send_image(img, t0 + 1)
    uv = uv_points(40)
    ids = np.arange(100, 140, dtype=np.uint32)
    harness.send_query_points(t0 + 1, uv, ids)
    a = harness.next_answer()
    assert a["stamp"] == t0 + 1 and a["frame_id"] == "cam" and a["n"] == 40
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
    t0 = new_stamps()
    use_camera_info(harness)
    imgs = {t0 + 10: image(10), t0 + 11: image(11), t0 + 12: image(12)}
    uv = uv_points(8, seed=3)
    expect = {s: predictor.query(predictor.encode(im, fx=FX), uv) for s, im in imgs.items()}
    for s in (t0 + 10, t0 + 11):
        harness.send_image(imgs[s], s)
        harness.send_queries(s, uv)
        np.testing.assert_allclose(harness.next_answer()["depth"], expect[s], rtol=1e-5)
    harness.send_queries(t0 + 10, uv)  # an older cached frame
    a = harness.next_answer()
    assert a["stamp"] == t0 + 10
    np.testing.assert_allclose(a["depth"], expect[t0 + 10], rtol=1e-5)
    harness.send_queries(0.0, uv)  # stamp 0: the newest frame
    a = harness.next_answer()
    assert a["stamp"] == t0 + 11
    np.testing.assert_allclose(a["depth"], expect[t0 + 11], rtol=1e-5)
    harness.send_queries(t0 + 12, uv)  # query before its frame: waits for it
    assert harness.no_answer(0.3)
    harness.send_image(imgs[t0 + 12], t0 + 12)
    a = harness.next_answer()
    assert a["stamp"] == t0 + 12
    np.testing.assert_allclose(a["depth"], expect[t0 + 12], rtol=1e-5)
    before = harness.wait_counter("query_messages_unmatched", 0)
    harness.send_queries(t0 + 10.5, uv)  # unknown stamp between cached frames: NaNs at once, counted
    a = harness.next_answer(timeout=1.0)
    assert a["stamp"] == t0 + 10.5 and np.isnan(a["depth"]).all() and np.isnan(a["z"]).all()
    harness.wait_counter("query_messages_unmatched", before + 1)


def test_bad_images_are_rejected_and_counted(ros, predictor: DepthPredictor) -> None:
    from sensor_msgs.msg import Image

    harness, _ = ros
    t0 = new_stamps()
    use_camera_info(harness)
    send_frame(harness, 29, t0)
    base = harness.wait_counter("rejected_image", 0)
    good = image(30)
    bad = [
        Image(header=harness.header(t0 + 30), height=H, width=W, encoding="yuv422", step=W * 2, data=bytes(H * W * 2)),
        Image(header=harness.header(t0 + 31), height=0, width=0, encoding="rgb8", step=0, data=b""),
        Image(
            header=harness.header(t0 + 32), height=H, width=W, encoding="rgb8", step=W * 3, data=good.tobytes()[:-10]
        ),
    ]
    for i, msg in enumerate(bad, 1):
        harness.publish("image", msg)
        harness.wait_counter("rejected_image", base + i)
        _still_answers(harness, t0)
    padded = np.zeros((H, W * 3 + 16), np.uint8)  # rows padded to a longer step: valid
    padded[:, : W * 3] = good.reshape(H, W * 3)
    harness.publish(
        "image",
        Image(
            header=harness.header(t0 + 33), height=H, width=W, encoding="rgb8", step=W * 3 + 16, data=padded.tobytes()
        ),
    )
    uv = uv_points(5, seed=4)
    harness.send_queries(t0 + 33, uv)
    np.testing.assert_allclose(
        harness.next_answer()["depth"], predictor.query(predictor.encode(good, fx=FX), uv), rtol=1e-5
    )
    bgr = image(34)
    harness.send_image(bgr, t0 + 34, encoding="bgr8")
    harness.send_queries(t0 + 34, uv)
    np.testing.assert_allclose(
        harness.next_answer()["depth"], predictor.query(predictor.encode(bgr, fx=FX), uv), rtol=1e-5
    )


def test_bad_queries(ros) -> None:
    from sensor_msgs.msg import CameraInfo

    from spd_ros.conversions import make_pointcloud2

    harness, node = ros
    t0 = new_stamps()
    send_frame(harness, 11, t0)
    invalid = harness.wait_counter("query_points_invalid", 0)
    harness.send_queries(t0, [(float("nan"), 3), (5, float("inf")), (20, 30), (-1, 5), (W, 5), (5, H + 3)])
    a = harness.next_answer()
    assert np.isnan(a["depth"][[0, 1, 3, 4, 5]]).all() and np.isfinite(a["depth"][2])
    assert harness.wait_counter("query_points_invalid", invalid + 5) == invalid + 5  # counted, not rejected
    harness.send_queries(t0, [])  # empty list: an empty answer with the frame's header
    a = harness.next_answer()
    assert a["n"] == 0 and a["stamp"] == t0
    base = harness.wait_counter("query_messages", 0)
    rejected = {
        r: harness.wait_counter(f"rejected_{r}", 0) for r in ("too_many_queries", "query_points", "camera_info")
    }
    harness.send_queries(t0, uv_points(MAX_QUERIES + 1))
    harness.wait_counter("rejected_too_many_queries", rejected["too_many_queries"] + 1)
    assert harness.no_answer(0.3)
    _still_answers(harness, t0)
    harness.publish("query_points", make_pointcloud2(harness.header(t0), {"x": np.zeros(3, np.float32)}))
    harness.wait_counter("rejected_query_points", rejected["query_points"] + 1)
    _still_answers(harness, t0)
    harness.publish("camera_info", CameraInfo(header=harness.header(0.0), height=H, width=W))  # all-zero K
    harness.wait_counter("rejected_camera_info", rejected["camera_info"] + 1)
    _still_answers(harness, t0)
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
    saved = harness.get_parameters(node, "max_queries", "inline_max_points", "publish_dense")
    t0 = new_stamps()
    use_camera_info(harness)
    send_frame(harness, 11, t0)
    try:
        _runtime_parameters_and_dense(harness, node, predictor, t0)
    finally:
        harness.set_parameters(node, **saved)  # for the other tests, in any order


def _runtime_parameters_and_dense(harness: RosHarness, node: str, predictor: DepthPredictor, t0: float) -> None:
    ok, reason = harness.set_parameters(node, pixel_budget=128 * 128)[0]
    assert not ok and "read-only" in reason  # not a run-time parameter
    assert harness.set_parameters(node, max_queries=3) == [(True, "")]
    base = harness.wait_counter("rejected_too_many_queries", 0)
    harness.send_queries(t0, uv_points(4))
    harness.wait_counter("rejected_too_many_queries", base + 1)
    harness.send_queries(t0, uv_points(3))
    assert harness.next_answer()["n"] == 3
    harness.send_image(image(36), t0 + 36)
    harness.send_queries(t0 + 36, uv_points(2))
    assert np.isfinite(harness.next_answer()["depth"]).all()  # frame 36 encoded (the query waited for it)
    before = harness.diagnostics()
    harness.send_queries(t0 + 36, uv_points(2))  # model free, frame cached: answered on the callback thread
    assert np.isfinite(harness.next_answer()["depth"]).all()
    mid = harness.diagnostics()
    assert int(mid["query_messages_inline"]) == int(before.get("query_messages_inline", 0)) + 1
    assert harness.set_parameters(node, inline_max_points=0) == [(True, "")]
    harness.send_queries(t0 + 36, uv_points(2))
    assert np.isfinite(harness.next_answer()["depth"]).all()
    after = harness.diagnostics()
    assert int(after["query_messages"]) == int(mid["query_messages"]) + 1
    assert after["query_messages_inline"] == mid["query_messages_inline"]  # by the worker now
    assert harness.set_parameters(node, max_queries=MAX_QUERIES, publish_dense=True) == [(True, "")] * 2
    img = image(40)
    expect = predictor.dense(predictor.encode(img, fx=FX))
    for i in range(20):  # until the node has matched the depth subscriber
        harness.send_image(img, t0 + 40 + i)
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


def test_camera_info_of_another_aspect_ratio_is_refused(ros) -> None:
    """A 640x640 camera_info for the 160x120 stream: counted, no 3D points made from it; depth still
    answered. The right camera_info afterwards gives points again."""
    harness, node = ros
    t0 = new_stamps()
    before = harness.wait_counter("rejected_camera_info", 0)
    harness.send_camera_info(FX, FY, CX, CY, (640, 640))
    time.sleep(0.5)  # another topic: give the camera_info time to arrive before the image
    harness.send_image(image(80), t0 + 80)
    harness.send_queries(t0 + 80, [(20, 30)])
    a = harness.next_answer()
    assert a["stamp"] == t0 + 80 and np.isfinite(a["depth"]).all() and np.isnan(a["x"]).all(), node.output()[-3000:]
    harness.wait_counter("rejected_camera_info", before + 1)  # raises unless counted
    harness.send_camera_info(FX, FY, CX, CY, (H, W))
    time.sleep(0.5)
    harness.send_image(image(81), t0 + 81)
    harness.send_queries(t0 + 81, [(20, 30)])
    a = harness.next_answer()
    assert a["stamp"] == t0 + 81 and np.isfinite(a["x"]).all() and np.isfinite(a["z"]).all()


def test_camera_info_of_another_resolution_is_rescaled(ros, predictor: DepthPredictor) -> None:
    """A camera_info for 320x240 and the 160x120 stream (same aspect): the intrinsics are rescaled to
    the image (rescale_intrinsics), depth is focal-scaled with the rescaled fx, the points are
    back-projected with the rescaled intrinsics."""
    harness, _ = ros
    k_info, info_size = (2 * FX + 6.0, 2 * FY - 4.0, 2 * CX + 3.0, 2 * CY - 2.0), (2 * H, 2 * W)
    k = rescale_intrinsics(k_info, info_size, (H, W))
    t0 = new_stamps()
    use_camera_info(harness, k_info, info_size)
    img, uv = image(90), uv_points(25, seed=9)
    harness.send_image(img, t0)
    harness.send_queries(t0, uv)
    a = harness.next_answer()
    assert a["stamp"] == t0 and a["n"] == len(uv)
    np.testing.assert_allclose(a["depth"], predictor.query(predictor.encode(img, fx=k[0]), uv), rtol=1e-5)
    unscaled_fx = predictor.query(predictor.encode(img, fx=k_info[0]), uv)  # the camera_info's fx as sent
    assert not np.allclose(a["depth"], unscaled_fx, rtol=1e-2)
    xyz = back_project(uv, a["depth"], *k)
    np.testing.assert_allclose(np.stack([a["x"], a["y"], a["z"]], 1), xyz, rtol=1e-5, atol=1e-6)


def test_stamp_tolerance_and_query_timeout_change_at_run_time(ros, predictor: DepthPredictor) -> None:
    """stamp_tolerance: a query 3.9 ms after a cached frame is unmatched at the fixture's 1 ms, and
    answered from that frame once set to 10 ms. query_timeout: raised from 2 s to 30 s, a query for
    a frame not sent yet is still waiting after 3 s and is answered from that frame when it comes."""
    harness, _ = ros
    node = f"/{NAMESPACE}/spd_node"
    saved = harness.get_parameters(node, "stamp_tolerance", "query_timeout")
    assert saved == {"stamp_tolerance": 0.001, "query_timeout": 2.0}
    t0 = new_stamps()
    use_camera_info(harness)
    first = send_frame(harness, 50, t0)
    send_frame(harness, 51, t0 + 1)  # a newer frame: no frame between the two can still come
    uv, off = uv_points(6, seed=5), t0 + 0.00390625
    try:
        unmatched = harness.wait_counter("query_messages_unmatched", 0)
        harness.send_queries(off, uv)
        a = harness.next_answer()
        assert a["stamp"] == off and np.isnan(a["depth"]).all()
        harness.wait_counter("query_messages_unmatched", unmatched + 1)
        assert harness.set_parameters(node, stamp_tolerance=0.01) == [(True, "")]
        harness.send_queries(off, uv)
        a = harness.next_answer()
        assert a["stamp"] == t0  # the frame's header
        np.testing.assert_allclose(a["depth"], predictor.query(predictor.encode(first, fx=FX), uv), rtol=1e-5)
        assert harness.set_parameters(node, query_timeout=30.0) == [(True, "")]
        harness.send_queries(t0 + 2, uv)  # its frame is not sent yet
        assert harness.no_answer(3.0)  # with the 2 s timeout it would have been answered with NaNs
        later = image(52)
        harness.send_image(later, t0 + 2)
        a = harness.next_answer()
        assert a["stamp"] == t0 + 2
        np.testing.assert_allclose(a["depth"], predictor.query(predictor.encode(later, fx=FX), uv), rtol=1e-5)
    finally:
        harness.set_parameters(node, **saved)


def test_default_qos_is_best_effort(ros) -> None:
    """qos:=sensor_data (config/spd.yaml): the node's subscriptions, as the graph shows them, are
    best effort and volatile."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    harness, _ = ros
    for topic in ("image", "camera_info", "queries", "query_points"):
        qos = harness.subscription_qos(topic)
        assert qos.reliability == ReliabilityPolicy.BEST_EFFORT, topic
        assert qos.durability == DurabilityPolicy.VOLATILE, topic
