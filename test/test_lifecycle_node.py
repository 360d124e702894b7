"""spd_lifecycle_node over real rclpy / Fast DDS, every transition driven from this process through
the node's lifecycle_msgs services (<node>/change_state, <node>/get_state).

The tests run in file order on one node process: unconfigured (bad checkpoint) -> configured ->
active -> inactive -> active -> cleaned up -> configured again -> finalized; then SIGTERM.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import saved_model
from lifecycle_msgs.msg import Transition
from ros_harness import NodeProcess, RosHarness, fresh_domain_id

from spd_core.camera import back_project
from spd_core.eval.colors import depth_colors
from spd_core.predictor import DepthPredictor

NODE = "/spd_node"
H, W = 120, 160
FX, FY, CX, CY = 200.0, 210.0, 80.0, 60.0
MAX_DEPTH = 10.0  # marker_max_depth's default: the colour scale is [0, 10] m
# random sub-pixel points, plus two outside the image: answered NaN, so no marker for them
UV = np.concatenate(
    [
        np.random.default_rng(0).uniform([0, 0], [W - 1, H - 1], (24, 2)),
        [[-5.0, 10.0], [W + 3.0, 10.0]],
    ]
).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RosHarness, NodeProcess, dict]]:
    tmp = tmp_path_factory.mktemp("lifecycle")
    model, ckpt = saved_model(tmp / "model.pt", seed=41, train_focal=100.0)
    (tmp / "corrupt.pt").write_bytes(b"not a checkpoint")
    domain = fresh_domain_id()
    node = NodeProcess(
        tmp / "corrupt.pt",
        domain,
        tmp,
        executable="spd_lifecycle_node",
        publish_markers=True,
        stamp_tolerance=0.001,
        query_timeout=0.5,
    )
    harness = RosHarness(domain)
    ctx = {"good": str(tmp / "model.pt"), "predictor": DepthPredictor.from_model(model, ckpt)}
    try:
        yield harness, node, ctx
    finally:
        harness.close()
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        out = node.output()
        assert node.proc.returncode == 0 and "Traceback" not in out and "spd_node stopped" in out, out


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def transition(harness: RosHarness, transition_id: int, expect_state: str) -> None:
    assert harness.change_state(NODE, transition_id), f"transition {transition_id} failed"
    assert harness.lifecycle_state(NODE) == expect_state


def log_lines(node: NodeProcess, text: str, timeout: float = 5.0) -> list[str]:
    """The node's log lines holding ``text``, once there is one (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in node.output().splitlines() if text in ln]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_bad_checkpoint_fails_configure_and_node_stays_unconfigured(setup) -> None:
    harness, node, ctx = setup
    assert harness.lifecycle_state(NODE, timeout=90.0) == "unconfigured"  # the services are up once started
    assert not harness.change_state(NODE, Transition.TRANSITION_CONFIGURE)
    assert harness.lifecycle_state(NODE) == "unconfigured" and node.proc.poll() is None
    lines = log_lines(node, "configure failed:")
    assert len(lines) == 1 and "corrupt" in lines[0] and "ERROR" in lines[0], node.output()
    # unconfigured: the checkpoint may be changed, and applies at the next configure
    assert harness.set_parameters(NODE, checkpoint=ctx["good"]) == [(True, "")]


def test_configure_then_inactive_ignores_images_and_queries(setup) -> None:
    harness, node, _ = setup
    transition(harness, Transition.TRANSITION_CONFIGURE, "inactive")
    ok, reason = harness.set_parameters(NODE, cache_size=4)[0]
    assert not ok and "configure" in reason  # configured: fixed until cleanup
    harness.wait_ready(node, ("image", "queries", "camera_info"))
    harness.send_camera_info(FX, FY, CX, CY, (H, W))  # kept while inactive
    harness.send_image(image(1), 1.0)
    harness.send_queries(1.0, UV)
    assert harness.no_answer(1.0)
    harness.wait_counter("ignored_image", 1)
    harness.wait_counter("ignored_queries", 1)
    status = harness.diagnostic_status()
    assert status.message == "inactive"
    values = {kv.key: kv.value for kv in status.values}
    assert values.get("frames_encoded", "0") == "0" and values.get("query_messages", "0") == "0"


def _answer_and_markers(harness: RosHarness, stamp: float, tries: int = 20):
    """Query UV for ``stamp`` until a MarkerArray comes with the answer (the node must first see
    the new subscriber); (answer, markers)."""
    for _ in range(tries):
        harness.send_queries(stamp, UV)
        a = harness.next_answer()
        try:
            return a, harness.markers.get(timeout=1.0)
        except queue.Empty:
            continue
    raise AssertionError("no depth_markers with publish_markers:=true and a subscriber")


def test_activate_answers_like_the_predictor_and_publishes_markers(setup) -> None:
    from visualization_msgs.msg import Marker

    harness, _, ctx = setup
    predictor: DepthPredictor = ctx["predictor"]
    transition(harness, Transition.TRANSITION_ACTIVATE, "active")
    harness.send_image(image(1), 1.0)
    harness.send_queries(1.0, UV)
    a = harness.next_answer()
    expect = predictor.query(predictor.encode(image(1), fx=FX), UV)
    assert a["stamp"] == 1.0 and a["n"] == len(UV)
    np.testing.assert_allclose(a["depth"], expect, rtol=1e-5)
    xyz = np.stack([a["x"], a["y"], a["z"]], 1)
    np.testing.assert_allclose(xyz, back_project(UV, a["depth"], FX, FY, CX, CY), rtol=1e-5, atol=1e-6)
    finite = np.isfinite(xyz).all(1)
    assert finite.sum() == len(UV) - 2  # the two outside the image
    # enabled, nobody subscribed: no marker work at all
    assert int(harness.diagnostics().get("marker_arrays_published", 0)) == 0

    harness.subscribe_markers()
    a, msg = _answer_and_markers(harness, 1.0)
    (marker,) = msg.markers
    assert marker.type == Marker.SPHERE_LIST and marker.action == Marker.ADD
    assert len(marker.points) == len(marker.colors) == finite.sum()  # one per answered point with a 3D position
    assert marker.header.frame_id == "cam" and (marker.header.stamp.sec, marker.header.stamp.nanosec) == (1, 0)
    pos = np.array([[p.x, p.y, p.z] for p in marker.points])
    np.testing.assert_allclose(pos, xyz[finite], rtol=1e-6)
    rgb = np.array([[c.r, c.g, c.b] for c in marker.colors])
    np.testing.assert_allclose(rgb, depth_colors(a["depth"][finite], 0.0, MAX_DEPTH), atol=1e-6)
    assert np.ptp(rgb, axis=0).max() > 0.05  # the depths differ, so do the colours
    assert int(harness.wait_counter("marker_arrays_published", 1)) >= 1

    assert harness.set_parameters(NODE, publish_markers=False) == [(True, "")]
    harness.send_queries(1.0, UV)
    harness.next_answer()
    time.sleep(0.5)
    while not harness.markers.empty():  # those published before the change
        harness.markers.get()
    harness.send_queries(1.0, UV)
    assert np.isfinite(harness.next_answer()["depth"][finite]).all()
    with pytest.raises(queue.Empty):  # switched off while subscribed: none
        harness.markers.get(timeout=1.0)


def test_deactivate_stops_answering_and_keeps_the_cache(setup) -> None:
    harness, _, ctx = setup
    predictor: DepthPredictor = ctx["predictor"]
    transition(harness, Transition.TRANSITION_DEACTIVATE, "inactive")
    ignored = harness.wait_counter("ignored_image", 0)
    harness.send_queries(1.0, UV)
    harness.send_image(image(2), 2.0)
    assert harness.no_answer(1.5)
    harness.wait_counter("ignored_image", ignored + 1)

    transition(harness, Transition.TRANSITION_ACTIVATE, "active")
    harness.send_queries(1.0, UV)  # frame 1.0 was encoded before deactivating
    a = harness.next_answer()
    assert a["stamp"] == 1.0
    np.testing.assert_allclose(a["depth"], predictor.query(predictor.encode(image(1), fx=FX), UV), rtol=1e-5)
    harness.send_queries(2.0, UV)  # frame 2.0 came while inactive: never encoded, NaN after query_timeout
    a = harness.next_answer()
    assert a["stamp"] == 2.0 and np.isnan(a["depth"]).all()


def test_cleanup_frees_then_configure_again_and_shutdown(setup) -> None:
    harness, node, _ = setup
    transition(harness, Transition.TRANSITION_DEACTIVATE, "inactive")
    transition(harness, Transition.TRANSITION_CLEANUP, "unconfigured")
    assert len(log_lines(node, "cleaned up: model and worker freed")) == 1
    time.sleep(0.3)
    while not harness.diag.empty():
        harness.diag.get()
    with pytest.raises(queue.Empty):  # the diagnostics timer went with the worker
        harness.diag.get(timeout=2.5)
    assert harness.set_parameters(NODE, cache_size=4) == [(True, "")]  # unconfigured again: changeable
    transition(harness, Transition.TRANSITION_CONFIGURE, "inactive")
    assert harness.wait_counter("frames_cached", 0) == 0  # a new worker: the old cache is gone
    transition(harness, Transition.TRANSITION_INACTIVE_SHUTDOWN, "finalized")
    assert len(log_lines(node, "shut down: model and worker freed")) == 1
    assert node.proc.poll() is None  # finalized, still up until SIGTERM (the fixture's teardown)
