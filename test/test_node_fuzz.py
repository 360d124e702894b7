"""spd_node under hostile traffic, over real rclpy / Fast DDS (nodes and test in separate processes).

Two nodes on one fresh domain: ``/raw`` subscribes to ``image``, ``/compressed`` to ``image/compressed``.
Each gets NODE_CASES mutated messages of each of its kinds from :mod:`test_fuzz`'s generators (seed
SEED), then must still be alive, have counted rejections and answer a valid frame and query exactly
as ``DepthPredictor`` does.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import saved_model
from ros_harness import NodeProcess, RosHarness, fresh_domain_id
from test_fuzz import KINDS, SEED

from spd_core.data.images import encode_compressed
from spd_core.predictor import DepthPredictor
from spd_ros.conversions import make_pointcloud2

NODE_CASES = 300
MAX_QUERIES = 4096  # the node's default, as in test_fuzz
H, W = 48, 64
NODES = {  # namespace -> (image topic, message kinds published)
    "raw": ("image", ("raw_image", "pointcloud2", "polygon")),
    "compressed": ("image/compressed", ("jpeg", "png", "pointcloud2", "polygon")),
}
TOPIC = {"raw_image": "image", "jpeg": "image/compressed", "png": "image/compressed"}
TOPIC.update(pointcloud2="query_points", polygon="queries")


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("fuzz") / "model.pt"
    return (*saved_model(path, seed=13, train_focal=100.0), path)


@pytest.fixture(scope="module")
def nodes(model_and_ckpt, tmp_path_factory) -> Iterator[dict[str, tuple[RosHarness, NodeProcess]]]:
    domain = fresh_domain_id()
    procs = {
        ns: NodeProcess(
            model_and_ckpt[2], domain, tmp_path_factory.mktemp(f"logs_{ns}"), ns, compressed=ns == "compressed"
        )
        for ns in NODES
    }
    out = {}
    try:
        for ns in procs:
            out[ns] = RosHarness(domain, ns, status_name=f"/{ns}/spd_node: depth")
        for ns, proc in procs.items():
            out[ns].wait_ready(proc, (NODES[ns][0], "queries", "query_points"))
        yield {ns: (out[ns], procs[ns]) for ns in NODES}
    finally:
        for harness in out.values():
            harness.close()
        for proc in procs.values():
            rc, text = proc.stop(), proc.output()
            assert rc == 0 and "Traceback" not in text and "worker joined" in text, text[-3000:]


def _valid_answer(harness: RosHarness, predictor: DepthPredictor, ns: str, stamp: float) -> None:
    """A valid frame and query at ``stamp``: answered as DepthPredictor answers on that frame."""
    img = np.random.default_rng(int(stamp)).integers(0, 256, (H, W, 3), dtype=np.uint8)
    if ns == "compressed":
        from sensor_msgs.msg import CompressedImage

        harness.publish(
            "image/compressed",
            CompressedImage(header=harness.header(stamp), format="png", data=encode_compressed(img, "png")),
        )
    else:
        harness.send_image(img, stamp)
    uv = np.float32([[0, 0], [W - 1, H - 1], [10.5, 20.25], [33, 7]])
    harness.send_queries(stamp, uv)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # answers to fuzzed queries may still be on their way
        a = harness.next_answer(timeout=max(0.1, deadline - time.monotonic()))
        if a["stamp"] == stamp:
            break
    np.testing.assert_allclose(a["depth"], predictor.query(predictor.encode(img), uv), rtol=1e-5)


def _publish_fuzz(harness: RosHarness, kinds: tuple[str, ...], ns: str) -> None:
    makers = {kind: KINDS[kind][0]() for kind in kinds}
    rng = np.random.default_rng([SEED, 7, len(ns)])
    for case in range(NODE_CASES):
        for kind, make in makers.items():
            msg = make(rng)
            msg.header = harness.header(float(rng.choice([0.0, 1.0 + case, 1e9])))
            harness.publish(TOPIC[kind], msg)
        time.sleep(0.002)  # some pacing: most messages reach the callbacks rather than DDS overwriting them


def test_nodes_survive_fuzzed_messages(nodes, model_and_ckpt) -> None:
    model, ckpt, _ = model_and_ckpt
    predictor = DepthPredictor.from_model(model, ckpt)
    rss = {ns: proc.rss_mb() for ns, (_, proc) in nodes.items()}
    for ns, (harness, _) in nodes.items():
        _publish_fuzz(harness, NODES[ns][1], ns)
    for ns, (harness, proc) in nodes.items():
        assert proc.proc.poll() is None, proc.output()[-3000:]
        for key in ("rejected_image", "rejected_query_points", "rejected_too_many_queries"):
            harness.wait_counter(key, 1)
        _valid_answer(harness, predictor, ns, 2e9)
        values = harness.diagnostics()
        assert "worker_errors" not in values and "query_messages_failed" not in values, values
        assert proc.rss_mb() < rss[ns] + 1024, (ns, rss[ns], proc.rss_mb())
        assert "Traceback" not in proc.output()


def test_oversized_clouds_are_counted(nodes) -> None:
    """A cloud declaring 2**32-1 points in 8 bytes is rejected as too many before its data is read;
    a real one of a million points (8 MB) under sensor-data QoS is either received and rejected or
    lost in transport, and then counted as lost once the next message of its publisher arrives."""
    harness, _ = nodes["raw"]
    small = {"u": np.float32([1, 2]), "v": np.float32([3, 4])}
    before = harness.diagnostics()
    declared = make_pointcloud2(harness.header(0.0), small)
    declared.width = 2**32 - 1
    harness.publish("query_points", declared)
    harness.wait_counter("rejected_too_many_queries", int(before.get("rejected_too_many_queries", 0)) + 1)
    assert int(harness.diagnostics().get("rejected_query_points", 0)) == int(before.get("rejected_query_points", 0))
    n = 1_000_000
    for cols in (small, {"u": np.zeros(n, np.float32), "v": np.zeros(n, np.float32)}, small):
        harness.publish("query_points", make_pointcloud2(harness.header(0.0), cols))
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while _counted(harness.diagnostics()) < _counted(before) + 2 and time.monotonic() < deadline:
        pass
    assert _counted(harness.diagnostics()) >= _counted(before) + 2


def _counted(values: dict[str, str]) -> int:
    """Query clouds accounted for as too large or as lost in transport."""
    return int(values.get("rejected_too_many_queries", 0)) + int(values.get("lost_query_points", 0))


def _images_then_valid(harness: RosHarness, topic: str, msgs: list, predictor: DepthPredictor, ns: str) -> None:
    """Each message counted under rejected_image (none reaches the worker), the node answers after."""
    base = harness.diagnostics()
    for i, msg in enumerate(msgs):
        msg.header = harness.header(100.0 + i)
        harness.publish(topic, msg)
        time.sleep(0.05)  # within the image subscription's queue depth
    harness.wait_counter("rejected_image", int(base.get("rejected_image", 0)) + len(msgs))
    _valid_answer(harness, predictor, ns, 2.1e9)  # stamps: int32 seconds
    values = harness.diagnostics()
    assert int(values["rejected_image"]) == int(base.get("rejected_image", 0)) + len(msgs)
    assert "worker_errors" not in values, values


def test_issue_images_are_rejected_and_counted(nodes, model_and_ckpt) -> None:
    """The images of issue 13 that ended the node or reached the worker: PNGs declaring 20000x20000
    and 10000x10000, a PPM with a bad header, a GIF whose frame lies outside, a BMP bomb header, BMP /
    TIFF / GIF / WEBP files, 1x1, 1x50, 50x1 PNGs and raw images; RSS does not grow by the sizes declared."""
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage
    from test_conversions import HOSTILE, png_declaring

    from spd_ros.conversions import rgb_image

    predictor = DepthPredictor.from_model(*model_and_ckpt[:2])
    harness, proc = nodes["compressed"]
    rss = proc.rss_mb()
    files = [png_declaring(20000, 20000), png_declaring(10000, 10000), *HOSTILE.values()]
    rgb = np.zeros((8, 8, 3), np.uint8)
    for fmt in ("BMP", "TIFF", "GIF", "WEBP"):
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format=fmt)
        files.append(buf.getvalue())
    small = [np.zeros((h, w, 3), np.uint8) for h, w in ((1, 1), (1, 50), (50, 1))]
    files += [encode_compressed(im, "png") for im in small]
    _images_then_valid(
        harness, "image/compressed", [CompressedImage(format="png", data=f) for f in files], predictor, "compressed"
    )
    assert proc.rss_mb() < rss + 200, (rss, proc.rss_mb())
    harness, _ = nodes["raw"]
    _images_then_valid(harness, "image", [rgb_image(harness.header(0.0), im) for im in small], predictor, "raw")


@pytest.mark.parametrize(
    "layout",
    [
        {"point_step": 0},
        {"point_step": 4},  # v would lie in the next point
        {"names": ("u", "u")},
    ],
    ids=["point_step_0", "point_step_4", "two_fields_u"],
)
def test_issue_clouds_are_rejected(nodes, layout: dict) -> None:
    """Clouds that were answered with made-up pixels: no answer, counted under rejected_query_points."""
    harness, _ = nodes["raw"]
    names = layout.get("names", ("u", "v"))
    msg = make_pointcloud2(harness.header(0.0), {"a": np.float32([5, 6]), "b": np.float32([7, 8])})
    for f, name in zip(msg.fields, names, strict=True):
        f.name = name
    if "point_step" in layout:
        msg.point_step = layout["point_step"]
        msg.row_step = msg.width * msg.point_step
        msg.data = bytes(msg.row_step * msg.height) if msg.point_step else b""
    base = int(harness.diagnostics().get("rejected_query_points", 0))
    while not harness.answers.empty():
        harness.answers.get()
    harness.publish("query_points", msg)
    harness.wait_counter("rejected_query_points", base + 1)
    assert harness.no_answer(0.3)
