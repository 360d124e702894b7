"""Real ROS 2 for tests: spd_node in its own process, a test node in this one, Fast DDS on localhost.

Every process gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and its own ``ROS_DOMAIN_ID``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spd_ros.launch_util import node_command, stop_node
from spd_ros.ros_env import local_ros_env

_DOMAINS = iter(range(1 + os.getpid() % 40, 233))


def fresh_domain_id() -> int:
    """A domain id of its own for each test module (and per pytest process)."""
    return next(_DOMAINS)


class NodeProcess:
    """spd_node started from its console script with config/spd.yaml (as the launch file does)."""

    def __init__(
        self,
        checkpoint: Path,
        domain_id: int,
        log_dir: Path,
        namespace: str = "",
        remaps: dict[str, str] | None = None,
        executable: str = "spd_node",
        **params,
    ) -> None:
        self.log = log_dir / f"spd_node_{domain_id}.log"
        self.cmd = node_command(
            checkpoint, namespace=namespace, device="cpu", extra_params=params, remaps=remaps, executable=executable
        )
        self.proc = subprocess.Popen(
            self.cmd, env=local_ros_env(domain_id), stdout=open(self.log, "w"), stderr=subprocess.STDOUT
        )

    @classmethod
    def from_command(cls, cmd: list[str], env: dict[str, str], log: Path) -> NodeProcess:
        """Any spd_node command line (e.g. a colcon-installed one) with its environment."""
        self = cls.__new__(cls)
        self.log, self.cmd = log, cmd
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        return self

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        return stop_node(self.proc, timeout=15)

    def output(self) -> str:
        return self.log.read_text()


class RosHarness:
    """A test node: publishers for spd_node's inputs, subscribers for its outputs.

    ``namespace`` and ``remaps`` (spd_node's topic name -> the name it was remapped to) mirror the
    node's command line, so the harness talks on the topics the node really uses; ``status_name``
    picks one node's status when several publish /diagnostics."""

    def __init__(
        self, domain_id: int, namespace: str = "", remaps: dict[str, str] | None = None, status_name: str | None = None
    ) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PolygonStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        os.environ.update(local_ros_env(domain_id))
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("spd_test", namespace="/" + namespace.strip("/"), context=self.ctx)
        self.remaps = dict(remaps or {})
        self.status_name = status_name  # read only this node's /diagnostics status (None: any node's)
        qos = QoSProfile(depth=100)
        types = {
            "image": Image,
            "image/compressed": CompressedImage,
            "camera_info": CameraInfo,
            "queries": PolygonStamped,
            "query_points": PointCloud2,
        }
        self.pub = {name: self.node.create_publisher(t, self.topic(name), qos) for name, t in types.items()}
        self.answers: queue.Queue = queue.Queue()
        self.diag: queue.Queue = queue.Queue()
        self.dense: queue.Queue = queue.Queue()
        self.markers: queue.Queue = queue.Queue()
        self.sub_points = self.node.create_subscription(
            PointCloud2, self.topic("depth_points"), lambda m: self.answers.put((time.monotonic(), m)), qos
        )
        self.node.create_subscription(Image, self.topic("depth"), self.dense.put, qos)
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: self.diag.put((time.monotonic(), m)), qos
        )
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def topic(self, name: str) -> str:
        """The topic spd_node's ``name`` is remapped to (relative names resolve in the namespace)."""
        return self.remaps.get(name, name)

    def wait_ready(
        self, proc: NodeProcess, topics: tuple[str, ...] = ("image", "queries"), timeout: float = 90
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"spd_node exited ({proc.proc.returncode}):\n{proc.output()}")
            if (
                all(self.pub[t].get_subscription_count() > 0 for t in topics)
                and self.sub_points.get_publisher_count() > 0
            ):
                time.sleep(0.5)  # the reverse direction matches too
                return
            time.sleep(0.1)
        raise TimeoutError(f"spd_node not discovered in {timeout} s:\n{proc.output()}")

    @staticmethod
    def header(stamp: float, frame_id: str = "cam"):
        """A header stamped ``stamp`` seconds."""
        from spd_ros.conversions import header_at

        return header_at(round(stamp * 1e9), frame_id)

    def publish(self, topic: str, msg) -> None:
        self.pub[topic].publish(msg)

    def send_image(self, image: np.ndarray, stamp: float, encoding: str = "rgb8") -> None:
        from spd_ros.conversions import rgb_image

        self.publish("image", rgb_image(self.header(stamp), image, encoding))

    def send_camera_info(self, fx: float, fy: float, cx: float, cy: float, size: tuple[int, int]) -> None:
        from sensor_msgs.msg import CameraInfo

        msg = CameraInfo(header=self.header(0.0), height=size[0], width=size[1])
        msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        self.publish("camera_info", msg)

    def send_queries(self, stamp: float, uv) -> None:
        from spd_ros.conversions import polygon_stamped

        self.publish("queries", polygon_stamped(self.header(stamp), uv))

    def send_query_points(self, stamp: float, uv: np.ndarray, ids: np.ndarray | None = None) -> None:
        from spd_ros.conversions import make_pointcloud2

        cols = {"u": uv[:, 0].astype(np.float32), "v": uv[:, 1].astype(np.float32)}
        if ids is not None:
            cols["id"] = ids
        self.publish("query_points", make_pointcloud2(self.header(stamp), cols))

    def next_answer(self, timeout: float = 15.0) -> dict:
        """The next depth_points message as {"stamp", "frame_id", "t", field arrays...}."""
        from spd_ros.conversions import pointcloud2_fields, stamp_ns

        t, msg = self.answers.get(timeout=timeout)
        out = pointcloud2_fields(msg, [f.name for f in msg.fields])
        out.update(stamp=stamp_ns(msg.header) / 1e9, frame_id=msg.header.frame_id, t=t, n=msg.width)
        return out

    def no_answer(self, wait: float) -> bool:
        try:
            self.answers.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def diagnostic_status(self, timeout: float = 5.0) -> Any:
        """The DiagnosticStatus of the first /diagnostics message received from now on."""
        start = time.monotonic()
        while True:
            t, msg = self.diag.get(timeout=max(0.1, timeout - (time.monotonic() - start)))
            if t >= start and msg.status and self.status_name in (None, msg.status[0].name):
                return msg.status[0]

    def diagnostics(self, timeout: float = 5.0) -> dict[str, str]:
        """Key/values of the first /diagnostics message received from now on."""
        return {kv.key: kv.value for kv in self.diagnostic_status(timeout).values}

    def wait_counter(self, key: str, at_least: int, timeout: float = 10.0) -> int:
        """Poll /diagnostics until counter ``key`` reaches ``at_least``; returns its value."""
        deadline, value = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            try:
                value = int(self.diagnostics(timeout=3.0).get(key, 0))
            except queue.Empty:
                continue
            if value >= at_least:
                return value
        raise AssertionError(f"diagnostics counter {key} = {value}, expected >= {at_least}")

    def subscription_qos(self, name: str, node_name: str = "spd_node"):
        """The QoS of ``node_name``'s one subscription to spd_node's topic ``name``, as the ROS graph
        (DDS discovery) shows it: reliability and durability (history depth is not in discovery)."""
        topic = self.node.resolve_topic_name(self.topic(name))
        infos = [i for i in self.node.get_subscriptions_info_by_topic(topic) if i.node_name == node_name]
        assert len(infos) == 1, f"{len(infos)} subscriptions of {node_name} to {topic}"
        return infos[0].qos_profile

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        """Call service ``name`` once and wait for its response (TimeoutError when none comes)."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"{name} not available")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done():
                raise TimeoutError(f"{name} did not answer")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_name: str, timeout: float = 10.0, **values) -> list[tuple[bool, str]]:
        """Set parameters of ``node_name`` (fully qualified) through its set_parameters service;
        (successful, reason) per parameter."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return [(r.successful, r.reason) for r in self.call(SetParameters, f"{node_name}/set_parameters", req).results]

    def get_parameters(self, node_name: str, *names: str) -> dict[str, Any]:
        """Current values of parameters ``names`` of ``node_name`` (fully qualified), through its
        get_parameters service."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        values = self.call(
            GetParameters, f"{node_name}/get_parameters", GetParameters.Request(names=list(names))
        ).values
        return {name: parameter_value_to_python(v) for name, v in zip(names, values, strict=True)}

    def change_state(self, node_name: str, transition_id: int, timeout: float = 60.0) -> bool:
        """Trigger lifecycle transition ``transition_id`` (lifecycle_msgs/msg/Transition) through
        ``<node>/change_state``; the service's ``success``."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        req = ChangeState.Request(transition=Transition(id=transition_id))
        return self.call(ChangeState, f"{node_name}/change_state", req, timeout).success

    def lifecycle_state(self, node_name: str, timeout: float = 10.0) -> str:
        """The node's lifecycle state label (``<node>/get_state``), e.g. 'unconfigured'."""
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"{node_name}/get_state", GetState.Request(), timeout).current_state.label

    def subscribe_markers(self):
        """Subscribe ``depth_markers``; MarkerArray messages arrive on ``self.markers``."""
        from rclpy.qos import QoSProfile
        from visualization_msgs.msg import MarkerArray

        return self.node.create_subscription(
            MarkerArray, self.topic("depth_markers"), self.markers.put, QoSProfile(depth=100)
        )

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


ALL_INPUTS = ("image", "queries", "query_points", "camera_info")


@contextlib.contextmanager
def connected(
    harness: RosHarness, node: NodeProcess, topics: tuple[str, ...] = ALL_INPUTS, logged: tuple[str, ...] = ()
) -> Iterator[None]:
    """``harness`` and ``node`` matched on ``topics`` inside; on leaving, the harness is closed and the
    node stopped (Ctrl-C), which must exit 0 without a traceback, having printed each of ``logged``."""
    try:
        harness.wait_ready(node, topics)
        yield
    finally:
        harness.close()
        rc = node.stop()
        out = node.output()
        assert rc == 0 and "Traceback" not in out and all(text in out for text in logged), out
