"""spd_node's start-up options end to end (one node, separate process, real rclpy / Fast DDS): the
fixed query grid, ``focal_scaling:=false``, ``precision:=bf16``, ``qos:=reliable`` with ``qos_depth``.

Every image this node encodes also gives a grid answer on ``depth_points`` (no ``id`` field), so the
tests send their queries with ids and pick answers by stamp and id.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from helpers import saved_model
from ros_harness import NodeProcess, RosHarness, connected, fresh_domain_id

from spd_core.camera import back_project
from spd_core.eval.metrics import grid_pixels
from spd_core.predictor import DepthPredictor

H, W = 120, 160
K = (200.0, 210.0, 80.0, 60.0)  # fx, fy, cx, cy
GRID = (4, 3)  # grid_cols, grid_rows
QOS_DEPTH = 3
STAMPS = itertools.count(1)
IDS = itertools.count(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RosHarness, dict[str, DepthPredictor]]]:
    """The node, and predictors: as the node is set up (bf16, unscaled), in fp32, and focal-scaled."""
    path = tmp_path_factory.mktemp("options") / "model.pt"
    model, ckpt = saved_model(path, seed=41, train_focal=100.0)
    predictors = {
        "node": DepthPredictor.from_model(model, ckpt, precision="bf16", focal_scaling=False, planner="windows"),
        "fp32": DepthPredictor.from_model(model, ckpt, focal_scaling=False, planner="windows"),
        "scaled": DepthPredictor.from_model(model, ckpt, precision="bf16", planner="windows"),
    }
    domain = fresh_domain_id()
    node = NodeProcess(
        path,
        domain,
        tmp_path_factory.mktemp("logs"),
        precision="bf16",
        planner="windows",
        focal_scaling=False,
        grid_cols=GRID[0],
        grid_rows=GRID[1],
        qos="reliable",
        qos_depth=QOS_DEPTH,
        stamp_tolerance=0.001,
        query_timeout=1.0,
        max_queries=100_000,
        inline_max_points=1_000_000,  # any query that finds the model free is answered on the callback thread
    )
    harness = RosHarness(domain)
    with connected(harness, node):
        yield harness, predictors


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def uv_points(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)], 1).astype(np.float32)


def new_stamps() -> float:
    """The start of a stamp range no other test uses, newer than every frame sent before."""
    return 100.0 * next(STAMPS)


def wait_answer(harness: RosHarness, match: Callable[[dict], bool], timeout: float = 15.0) -> dict:
    """The next answer for which ``match`` holds; others (grid answers of earlier frames) are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        a = harness.next_answer(timeout=max(0.1, deadline - time.monotonic()))
        if match(a):
            return a


def ask(harness: RosHarness, stamp: float, uv: np.ndarray) -> dict:
    """Send ``uv`` as query_points at ``stamp`` with fresh ids; the answer to it."""
    ids = np.full(len(uv), next(IDS), np.uint32)
    harness.send_query_points(stamp, uv, ids)
    return wait_answer(harness, lambda a: "id" in a and a["n"] == len(uv) and (a["id"] == ids).all())


def use_camera_info(harness: RosHarness) -> None:
    """Send camera_info; a query sent after it is answered before the next image goes out (flush)."""
    harness.send_camera_info(*K, (H, W))
    ask(harness, 0.0, np.array([[1.0, 1.0]], np.float32))


def test_grid_is_answered_once_per_frame_at_the_grid_pixels(setup) -> None:
    """grid_cols x grid_rows: each encoded frame gives exactly one answer of nx*ny points at
    grid_pixels, with the frame's header, depth as the predictor's there."""
    harness, predictors = setup
    t0 = new_stamps()
    for i in range(2):
        img, stamp = image(60 + i), t0 + i
        harness.send_image(img, stamp)
        grids = []
        ask_answer = None
        harness.send_query_points(stamp, uv_points(2, i), np.full(2, 10_000 + i, np.uint32))
        while ask_answer is None:  # the frame's grid answer is published before the query's
            a = harness.next_answer()
            if "id" in a and (a["id"] == 10_000 + i).all():
                ask_answer = a
            elif "id" not in a and a["stamp"] == stamp:
                grids.append(a)
        assert ask_answer["stamp"] == stamp and np.isfinite(ask_answer["depth"]).all()
        assert len(grids) == 1, f"{len(grids)} grid answers for one frame"
        g = grids[0]
        expect_uv = grid_pixels(H, W, *GRID)
        assert g["n"] == GRID[0] * GRID[1] and g["frame_id"] == "cam"
        np.testing.assert_array_equal(np.stack([g["u"], g["v"]], 1), expect_uv)
        node = predictors["node"]
        np.testing.assert_allclose(g["depth"], node.query(node.encode(img), expect_uv), rtol=1e-2)


def test_focal_scaling_off_gives_unscaled_depth(setup) -> None:
    """focal_scaling:=false with a camera_info: depth as the predictor's without focal scaling (not
    the scaled one), points back-projected with the camera_info."""
    harness, predictors = setup
    use_camera_info(harness)
    t0 = new_stamps()
    img, uv = image(70), uv_points(20, 7)
    harness.send_image(img, t0)
    a = ask(harness, t0, uv)
    assert a["stamp"] == t0
    node, scaled = predictors["node"], predictors["scaled"]
    np.testing.assert_allclose(a["depth"], node.query(node.encode(img, fx=K[0]), uv), rtol=1e-2)
    scale = scaled.depth_scale(scaled.geometry((H, W)), K[0])
    assert abs(scale - 1) > 0.1  # with focal scaling on, this camera's depth would differ by this factor
    np.testing.assert_allclose(scaled.query(scaled.encode(img, fx=K[0]), uv), a["depth"] * scale, rtol=1e-2)
    xyz = back_project(uv, a["depth"], *K)
    np.testing.assert_allclose(np.stack([a["x"], a["y"], a["z"]], 1), xyz, rtol=1e-5, atol=1e-6)


def test_bf16_answers_are_the_bf16_predictors(setup) -> None:
    """precision:=bf16: answers agree with DepthPredictor in bf16 far closer than with fp32 (which
    differs by more than the bf16 rounding)."""
    harness, predictors = setup
    t0 = new_stamps()
    img, uv = image(80), uv_points(60, 8)
    harness.send_image(img, t0)
    a = ask(harness, t0, uv)
    node, fp32 = predictors["node"], predictors["fp32"]
    bf16_expect, fp32_expect = node.query(node.encode(img), uv), fp32.query(fp32.encode(img), uv)
    err_bf16 = np.abs(a["depth"] / bf16_expect - 1)
    err_fp32 = np.abs(a["depth"] / fp32_expect - 1)
    assert err_bf16.max() < 1e-2, err_bf16.max()
    assert err_fp32.mean() > 1e-3 and err_bf16.mean() < err_fp32.mean() / 5, (err_bf16.mean(), err_fp32.mean())


def _blocked_burst(harness: RosHarness, stamp: float, k: int, n: int) -> tuple[bool, np.ndarray]:
    """Keep the node's executor busy with one inline query of ``k`` points while ``n`` images and
    ``n`` query messages are published: (whether the burst was out before that query was answered,
    on the callback thread; the ids of the burst's queries)."""
    from rclpy.duration import Duration

    inline = int(harness.diagnostics().get("query_messages_inline", 0))
    harness.send_query_points(stamp, uv_points(k, 1), np.full(k, next(IDS), np.uint32))
    time.sleep(0.2)  # the node has taken it and is answering it on its only executor thread
    ids = np.array([next(IDS) for _ in range(n)], np.uint32)
    for i in range(n):
        harness.send_image(image(90 + i), stamp + 1 + i)
        harness.send_query_points(stamp, uv_points(2, i), np.full(2, ids[i], np.uint32))
    blocked = harness.answers.empty()  # the big query not answered yet
    for topic in ("image", "query_points"):  # reliable: every message of the burst reached the node
        assert harness.pub[topic].wait_for_all_acked(Duration(seconds=30)), topic
    wait_answer(harness, lambda a: "id" in a and a["n"] == k, timeout=120)
    blocked &= int(harness.diagnostics().get("query_messages_inline", 0)) == inline + 1
    return blocked, ids


def test_reliable_qos_and_its_depth(setup) -> None:
    """qos:=reliable: the node's subscriptions are reliable (as the graph shows them). qos_depth:=3:
    of 8 images that reach the node while its executor is busy, it takes the last 3 (a reader
    history of 3); of 8 query messages, all (queries keep max(qos_depth, queue_size))."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    harness, _ = setup
    for topic in ("image", "camera_info", "queries", "query_points"):
        qos = harness.subscription_qos(topic)
        assert qos.reliability == ReliabilityPolicy.RELIABLE, topic
        assert qos.durability == DurabilityPolicy.VOLATILE, topic
    t0 = new_stamps()
    harness.send_image(image(89), t0)
    ask(harness, t0, uv_points(1, 0))  # frame t0 encoded and cached, the model free
    n = 8
    for k in (2000, 8000, 32000):  # a bigger blocking query on a machine that answered it too soon
        received = int(harness.diagnostics()["images_received"])
        blocked, ids = _blocked_burst(harness, t0, k, n)
        answered: set[int] = set()
        while not answered >= set(ids.tolist()):  # raises queue.Empty when one is missing
            a = harness.next_answer()
            answered |= {int(a["id"][0])} if "id" in a else set()
        assert answered == set(ids.tolist())  # every query message of the burst, beyond qos_depth
        if blocked:
            break
    else:
        pytest.fail("the node's executor was never busy for the whole burst")
    for _ in range(3):  # the node has taken what it will take within a second
        diag = harness.diagnostics()
        if int(diag["images_received"]) >= received + QOS_DEPTH:
            break
    assert int(harness.diagnostics()["images_received"]) == received + QOS_DEPTH, diag
