"""The client side of ``spd-bench-node``: publishers of one image and of queries, the answers read
through a wait set of its own, and spd_node's /diagnostics windows (:mod:`spd_ros.bench_node`)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

START_TIMEOUT_S = 90.0  # node start-up includes building the model
ANSWER_TIMEOUT_S = 10.0
STAMP_NS = 1_700_000_000_123_000_000  # the one image's stamp
DIAG_WAIT_S = 1.2  # spd_node publishes /diagnostics once a second: wait for the window in progress


@dataclass
class NodeWindow:
    """One /diagnostics message of spd_node: the queries it answered in [start, end) (wall clock)."""

    start: float
    end: float
    messages: int
    points: int
    latency_p50_ms: float  # receipt -> answer ready


def image_msg(image: np.ndarray) -> Any:
    """The benchmark's one image (uint8 RGB) as an rgb8 Image stamped ``STAMP_NS``."""
    from spd_ros.conversions import header_at, rgb_image

    return rgb_image(header_at(STAMP_NS, "camera_optical"), image)


def query_msg(uv: np.ndarray) -> Any:
    """Query pixels ``uv`` [K,2] as a PolygonStamped with the image's stamp."""
    from spd_ros.conversions import header_at, polygon_stamped

    return polygon_stamped(header_at(STAMP_NS), uv)


class RoundTrip:
    """Publishers, and the answers' subscription read through a wait set of its own on the calling
    thread: no executor and no thread hand-off, so a round trip carries as little of this client's
    own cost as rclpy allows."""

    def __init__(self, node: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PolygonStamped
        from rclpy.impl.implementation_singleton import rclpy_implementation
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.pub_image = node.create_publisher(Image, "image", reliable)
        self.pub_query = node.create_publisher(PolygonStamped, "queries", reliable)
        self.sub = node.create_subscription(PointCloud2, "depth_points", lambda _: None, reliable)
        history = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)  # read once per K
        self.diag = node.create_subscription(DiagnosticArray, "/diagnostics", lambda _: None, history)
        self._last: tuple[float, tuple[int, int]] | None = None  # last window: end, (messages, points)
        self.sent: list[tuple[float, float]] = []  # (wall-clock time published, round trip ms) of each answer
        self._wait_set = rclpy_implementation.WaitSet(1, 0, 0, 0, 0, 0, node.context.handle)

    def _take(self, timeout_s: float) -> tuple[float, Any] | None:
        """The next answer within ``timeout_s``: (arrival time, message), else None."""
        deadline = time.perf_counter() + timeout_s
        while True:
            info = self.sub.handle.take_message(self.sub.msg_type, self.sub.raw)
            if info is not None:
                return time.perf_counter(), info[0]
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self._wait_set.clear_entities()
            self._wait_set.add_subscription(self.sub.handle)
            self._wait_set.wait(int(left * 1e9))

    def node_windows(self) -> list[NodeWindow]:
        """The node's /diagnostics windows with queries since the last call, after waiting for the
        one in progress."""
        from spd_ros.conversions import stamp_ns

        time.sleep(DIAG_WAIT_S)
        out = []
        while (info := self.diag.handle.take_message(self.diag.msg_type, False)) is not None:
            msg = info[0]
            end = stamp_ns(msg.header) / 1e9
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                counts = (int(values.get("query_messages", 0)), int(values.get("queries_answered", 0)))
                if self._last is not None and counts[0] > self._last[1][0] and "latency_ms_p50" in values:
                    (start, before) = self._last
                    out.append(
                        NodeWindow(
                            start, end, counts[0] - before[0], counts[1] - before[1], float(values["latency_ms_p50"])
                        )
                    )
                self._last = (end, counts)
        return out

    def wait_ready(self, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"spd_node exited with code {proc.returncode} at start-up")
            if (
                self.pub_image.get_subscription_count() > 0
                and self.pub_query.get_subscription_count() > 0
                and self.node.count_publishers("depth_points") > 0
            ):
                time.sleep(0.5)  # let depth_points -> us match as well
                others = self.node.count_publishers("depth_points") - 1
                if others > 0:  # their answers would be taken for ours
                    domain = os.environ.get("ROS_DOMAIN_ID")
                    raise RuntimeError(
                        f"{others} other node(s) publish depth_points on ROS domain {domain}; "
                        "stop them or set SPD_BENCH_DOMAIN_ID to a free domain"
                    )
                return
            time.sleep(0.1)
        raise RuntimeError(f"spd_node did not subscribe to image/queries within {START_TIMEOUT_S:.0f} s")

    def wait_for_frame(self, image_msg: Any, uv: np.ndarray) -> None:
        """Publish the image until a query with its stamp gets a finite answer (frame encoded)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self.pub_image.publish(image_msg)
            for _ in range(5):
                r = self.ask(uv)
                if r is not None and np.isfinite(r[1]).all():
                    return
                time.sleep(0.2)
        raise RuntimeError(f"spd_node answered no query for the published image within {START_TIMEOUT_S:.0f} s")

    def ask(self, uv: np.ndarray) -> tuple[float, np.ndarray] | None:
        """Publish one query, wait for its answer: (round trip ms, depth [K]) or None on timeout."""
        from spd_ros.conversions import pointcloud2_fields

        while self._take(0.0) is not None:  # a late answer to an earlier query
            pass
        msg = query_msg(uv)  # built before the clock starts: the caller's cost, not the node's
        t0 = time.perf_counter()
        self.pub_query.publish(msg)
        answer = self._take(ANSWER_TIMEOUT_S)
        if answer is None:
            return None
        rtt = (answer[0] - t0) * 1e3
        self.sent.append((time.time() - rtt / 1e3, rtt))  # /diagnostics stamps are wall-clock (ROS time)
        return rtt, pointcloud2_fields(answer[1], ("depth",))["depth"]
