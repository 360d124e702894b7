"""A worker error at the node: /diagnostics at level ERROR naming it, and a line on /rosout.

No message from outside makes the worker fail (the callbacks check every input before it reaches
the worker), so spd_node runs in this process: the real node class on a real rclpy context over
Fast DDS, its worker handed a job the callbacks would have refused (an image of 1x1 pixel). A test
node in another context listens on /diagnostics and /rosout as any monitor would.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import saved_model
from ros_harness import RosHarness, fresh_domain_id

from spd_ros.launch_util import node_command


@pytest.fixture
def in_process(tmp_path) -> Iterator[tuple[RosHarness, object, queue.Queue]]:
    """(test node, spd_node in this process, /rosout messages)."""
    import rclpy
    from rcl_interfaces.msg import Log
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile

    from spd_ros.spd_node import SpdNode

    path = tmp_path / "model.pt"
    saved_model(path)
    harness = RosHarness(fresh_domain_id())  # sets this process's ROS domain and localhost discovery
    logs: queue.Queue = queue.Queue()
    harness.node.create_subscription(Log, "/rosout", logs.put, QoSProfile(depth=1000))
    cmd = node_command(path, device="cpu")
    rclpy.init(args=["spd_node", *cmd[cmd.index("--ros-args") :]])  # the default context, as spd_node's main
    node = executor = None
    try:
        node = SpdNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        deadline = time.monotonic() + 60
        while harness.pub["image"].get_subscription_count() == 0 or harness.sub_points.get_publisher_count() == 0:
            assert time.monotonic() < deadline, "spd_node (in process) not discovered"
            time.sleep(0.1)
        time.sleep(0.5)  # the reverse direction matches too
        yield harness, node, logs
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        harness.close()


def status_until(harness: RosHarness, level: bytes, timeout: float = 10.0):
    """The first /diagnostics status at ``level`` within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = harness.diagnostic_status()
        if status.level == level:
            return status
    raise AssertionError(f"no diagnostics at level {level!r} within {timeout} s; last: {status}")


def test_worker_error_reaches_diagnostics_and_rosout(in_process) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus
    from rcl_interfaces.msg import Log

    from spd_ros.worker import ImageJob

    harness, node, logs = in_process
    rng = np.random.default_rng(0)
    harness.send_image(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), 1.0)
    harness.send_queries(1.0, [(5, 5)])
    assert np.isfinite(harness.next_answer()["depth"]).all()
    status_until(harness, DiagnosticStatus.OK)
    node.worker.submit_image(ImageJob(2_000_000_000, harness.header(2.0), np.zeros((1, 1, 3), np.uint8), None))
    status = status_until(harness, DiagnosticStatus.ERROR)
    values = {kv.key: kv.value for kv in status.values}
    assert status.message.startswith("error: ") and "too small" in status.message, status
    assert values["worker_errors"] == "1", values
    deadline, lines = time.monotonic() + 10, []
    while time.monotonic() < deadline and not any("too small" in m.msg for m in lines):
        try:
            lines.append(logs.get(timeout=0.5))
        except queue.Empty:
            continue
    errors = [m for m in lines if m.level == Log.ERROR and m.name == "spd_node" and "too small" in m.msg]
    assert len(errors) == 1 and errors[0].msg.startswith("spd_node worker: "), [(m.level, m.msg) for m in lines]
    # a frame encoded again clears the error
    harness.send_image(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), 3.0)
    harness.send_queries(3.0, [(5, 5)])
    assert np.isfinite(harness.next_answer()["depth"]).all()
    assert status_until(harness, DiagnosticStatus.OK).message == "ok"
