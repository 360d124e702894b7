"""spd_node with real camera shapes (issue 13): 16:9 and 848×480 cameras, frames whose size changes.

Node and test in separate processes over real rclpy / Fast DDS. Every answer must equal
``DepthPredictor`` on the same frame (same aspect-preserving geometry), and the node's diagnostics
must show the network input it chose for the camera.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import saved_model
from ros_harness import NodeProcess, RosHarness, connected, fresh_domain_id

from spd_core.camera import back_project
from spd_core.predictor import DepthPredictor

BUDGET = 96 * 160  # the node's pixel_budget parameter (the checkpoint trained at 64x96)
# (H, W) -> (fx, fy, cx, cy): a RealSense-like 1280x720 colour camera and an 848x480 one
STAMPS = itertools.count(100)  # frame stamps only grow: an older stamp than the newest frame is never waited for
CAMERAS = {(720, 1280): (910.0, 905.0, 641.5, 358.0), (480, 848): (421.0, 420.0, 425.2, 241.7)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RosHarness, DepthPredictor]]:
    path = tmp_path_factory.mktemp("cams") / "model.pt"
    model, ckpt = saved_model(path, seed=31, train_focal=100.0)
    predictor = DepthPredictor.from_model(model, ckpt, pixel_budget=BUDGET)
    domain = fresh_domain_id()
    node = NodeProcess(
        path,
        domain,
        tmp_path_factory.mktemp("logs"),
        pixel_budget=BUDGET,
        stamp_tolerance=0.001,
        qos="reliable",
        query_timeout=5.0,
    )
    harness = RosHarness(domain)
    with connected(harness, node):
        yield harness, predictor


def image(size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def pixels(size: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """Random sub-pixel positions plus the four corners and the edge midpoints."""
    h, w = size
    rng = np.random.default_rng(seed)
    uv = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], 1)
    edges = [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, 0], [0, (h - 1) / 2]]
    return np.concatenate([uv, edges]).astype(np.float32)


def send_camera_info(harness: RosHarness, k: tuple[float, float, float, float], size: tuple[int, int]) -> None:
    harness.send_camera_info(*k, size)
    harness.send_queries(0.0, [(1, 1)])  # flush: camera_info is processed before the next image
    harness.next_answer()


def wait_diagnostics(harness: RosHarness, size: tuple[int, int]) -> dict[str, str]:
    want = "x".join(map(str, size))
    for _ in range(10):
        d = harness.diagnostics()
        if d.get("image_size_last") == want:
            return d
    raise AssertionError(f"diagnostics never showed image_size_last={want}: {d}")


@pytest.mark.parametrize("size", list(CAMERAS))
def test_camera_shape_is_encoded_at_its_aspect(setup, size: tuple[int, int]) -> None:
    """Answers == DepthPredictor (1e-5); network input keeps the camera's aspect; pinhole points."""
    harness, predictor = setup
    k = CAMERAS[size]
    send_camera_info(harness, k, size)
    stamp = float(next(STAMPS))
    img, uv = image(size, size[1]), pixels(size, 60, size[0])
    harness.send_image(img, stamp)
    harness.send_query_points(stamp, uv)
    a = harness.next_answer()
    assert a["stamp"] == stamp and a["n"] == len(uv) and np.isfinite(a["depth"]).all(), harness.diagnostics()
    expect = predictor.query(predictor.encode(img, fx=k[0]), uv)
    assert np.isfinite(expect).all()
    np.testing.assert_allclose(a["depth"], expect, rtol=1e-5)
    np.testing.assert_allclose(np.stack([a["x"], a["y"], a["z"]], 1), back_project(uv, a["depth"], *k), rtol=1e-5)
    # the tensor the encoder saw: the camera's aspect, padded by less than one block of 32 per axis
    diag = wait_diagnostics(harness, size)
    ih, iw = (int(v) for v in diag["network_input_last"].split("x"))
    # the planner's choice is counted per answered message
    assert sum(int(diag.get(f"plan_{m}", 0)) for m in ("windows", "tiles", "dense", "lookup")) >= 1, diag
    g = predictor.geometry(size)
    assert (ih, iw) == g.input_size and ih % 32 == iw % 32 == 0
    (h, w), s = size, g.scale
    assert 0 <= ih - h * s < 32 + 1 and 0 <= iw - w * s < 32 + 1 and (h * s) * (w * s) <= BUDGET
    assert abs(iw / ih - w / h) < (w / h) * 32 / min(ih, iw)  # the squash the old fixed input made was 1.36x


def test_frames_of_changing_size_are_answered_in_their_own_pixels(setup) -> None:
    """16:9 frames of five sizes, each query stamped for its frame, some asked again after later frames
    arrived: every answer equals DepthPredictor on its own frame with the camera_info rescaled to it."""
    harness, predictor = setup
    k0, size0 = (910.0, 905.0, 641.5, 358.0), (720, 1280)
    send_camera_info(harness, k0, size0)
    sizes = [(90, 160), (720, 1280), (36, 64), (360, 640), (180, 320)]
    frames = {}
    stamps = [float(next(STAMPS)) for _ in sizes]
    for i, (size, stamp) in enumerate(zip(sizes, stamps, strict=True)):
        img, uv = image(size, 50 + i), pixels(size, 12, 60 + i)
        fx = k0[0] * size[1] / size0[1]
        frames[stamp] = (uv, predictor.query(predictor.encode(img, fx=fx), uv), fx * k0[1] / k0[0])
        harness.send_image(img, stamp)
        harness.send_query_points(stamp, uv)
        a = harness.next_answer()
        assert a["stamp"] == stamp and np.isfinite(a["depth"]).all(), harness.diagnostics()
        np.testing.assert_allclose(a["depth"], frames[stamp][1], rtol=1e-5)
    for stamp in (stamps[1], stamps[0], stamps[3]):  # older frames, after frames of other sizes
        uv, expect, _ = frames[stamp]
        harness.send_query_points(stamp, uv)
        a = harness.next_answer()
        assert a["stamp"] == stamp and a["n"] == len(uv)
        np.testing.assert_allclose(a["depth"], expect, rtol=1e-5)
        fy = frames[stamp][2]
        np.testing.assert_allclose(a["y"] * fy / a["z"], uv[:, 1] - ((k0[3] + 0.5) * fy / k0[1] - 0.5), atol=1e-3)


def test_no_markers_unless_enabled(setup) -> None:
    """publish_markers defaults to false: no depth_markers publisher at all, nothing on the topic
    while answers flow (the enabled case: test_lifecycle_node)."""
    harness, _ = setup
    stamp = float(next(STAMPS))
    harness.send_image(image((120, 160), 20), stamp)
    harness.subscribe_markers()
    for _ in range(3):
        harness.send_queries(stamp, [(20, 30)])
        assert np.isfinite(harness.next_answer()["depth"]).all()
    assert harness.node.count_publishers("/depth_markers") == 0
    assert harness.markers.empty()
