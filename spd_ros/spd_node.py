"""spd_node: camera images and query pixels in, metric depth and 3D points out (DESIGN §4).

Subscribes ``image`` (or ``image/compressed``), ``camera_info``, ``queries`` (PolygonStamped, x=u
y=v) and ``query_points`` (PointCloud2 with float32 u, v and optional id); publishes
``depth_points`` (PointCloud2 x,y,z,u,v,depth[,id], one point per query, in order), ``depth``
(32FC1, with ``publish_dense``) and ``/diagnostics``. The model runs in one worker thread
(:mod:`spd_ros.worker`); callbacks convert and enqueue, and answer a small query themselves when
the model is free (``inline_max_points``).
"""

from __future__ import annotations

import logging
import os
import sys

# libgomp's team spins ~10 ms after every parallel region by default (measured here: 9 ms of CPU
# per 50 ms idle), taking a core from the camera driver, the planner and DDS after each query.
# GOMP_SPINCOUNT=10000 keeps the team hot within a query and stops spinning after ~0.5 ms;
# sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes small queries ~40 % slower. Set before torch
# loads libgomp; an explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import threading
import time
from collections import Counter

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PolygonStamped
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from spd_core.camera import rescale_intrinsics
from spd_core.model.checkpoint import CheckpointError
from spd_core.predictor import DepthPredictor
from spd_ros import conversions
from spd_ros.params import RUNTIME, declare, qos_profile, worker_settings
from spd_ros.ros_env import apply_local_defaults
from spd_ros.worker import Answer, DepthWorker, ImageJob, QueryJob

THROTTLE_S = 5.0
RCLError = _rclpy.RCLError  # raised by rclpy.init for bad --ros-args


class StartupError(RuntimeError):
    """The node cannot start (bad checkpoint or parameters); the message says what to do."""


LIBRARY_LOGGERS = ("spd_core", "spd_ros")  # Python logging of the libraries, forwarded to /rosout


class _RosoutHandler(logging.Handler):
    """Python ``logging`` records of the worker and spd_core -> the node's logger (/rosout)."""

    def __init__(self, node: Node) -> None:
        super().__init__(logging.INFO)
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + (f" ({record.exc_info[1]!r})" if record.exc_info else "")
        logger = self.node.get_logger()
        if record.levelno >= logging.ERROR:
            logger.error(text)
        elif record.levelno >= logging.WARNING:
            logger.warning(text)
        else:
            logger.info(text)


class SpdNode(Node):
    def __init__(self) -> None:
        super().__init__("spd_node")
        self._rosout = _RosoutHandler(self)
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).addHandler(self._rosout)
        try:
            p = self.params = declare(self)
            sub_qos = qos_profile(p.qos, p.qos_depth)
        except (ParameterException, ValueError) as e:
            raise StartupError(f"bad parameter: {' '.join(str(e).split())}; see config/spd.yaml") from None
        if not p.checkpoint:
            raise StartupError("parameter 'checkpoint' is empty; pass -p checkpoint:=/path/model.pt")
        try:
            predictor = DepthPredictor.from_checkpoint(
                p.checkpoint,
                p.device,
                p.precision,
                p.pixel_budget or None,
                p.focal_scaling,
                p.backend,
                p.onnx_dir or None,
                [s for s in p.onnx_providers.split(",") if s.strip()] or None,
            )
        except (CheckpointError, ValueError) as e:
            raise StartupError(str(e)) from None
        self.rejected: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}  # reason -> monotonic time of its last log line
        self._intrinsics: tuple[tuple[float, float, float, float], tuple[int, int]] | None = None  # K, (H, W)
        self._lock = threading.Lock()
        settings = worker_settings(p)
        self.worker = DepthWorker(
            predictor,
            self._publish_answer,
            p.cache_size,
            p.queue_size,
            settings,
            self._publish_dense,
            self._dense_wanted,
        )
        # queries are not latest-wins: their DDS history holds as many messages as the worker's queue
        query_qos = qos_profile(p.qos, max(p.qos_depth, p.queue_size))
        if p.compressed:
            self._subscribe(CompressedImage, "image/compressed", self._on_image, sub_qos)
        else:
            self._subscribe(Image, "image", self._on_image, sub_qos)
        self._subscribe(CameraInfo, "camera_info", self._on_camera_info, sub_qos)
        self._subscribe(PolygonStamped, "queries", self._on_queries, query_qos)
        self._subscribe(PointCloud2, "query_points", self._on_query_points, query_qos)
        self.pub_points = self.create_publisher(PointCloud2, "depth_points", QoSProfile(depth=50))
        self.pub_depth = self.create_publisher(Image, "depth", QoSProfile(depth=2))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        # ranges and read-only are checked by rclpy from the descriptors; accepted values are applied here
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._rate_base: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self.create_timer(1.0, self._publish_diagnostics)
        self.worker.start()
        self.get_logger().info(
            f"spd_node ready: {p.checkpoint} on {predictor.device} ({predictor.backend.name}, {p.precision}), "
            f"pixel budget {predictor.pixel_budget}, "
            f"listening on {'image/compressed' if p.compressed else 'image'}"
        )

    # --- inputs -----------------------------------------------------------------------------------

    def _subscribe(self, msg_type, topic: str, callback, qos: QoSProfile) -> None:
        """A subscription whose messages lost in transport are counted (``lost_<topic>``) where the
        middleware reports them."""
        key = "lost_" + topic.replace("/", "_")

        def lost(info) -> None:
            # the cumulative total, not a sum of changes: the change field has been seen to carry
            # garbage (2**31) after large lost images; a total never goes down
            self.rejected[key] = max(self.rejected[key], int(info.total_count))

        try:
            events = SubscriptionEventCallbacks(message_lost=lost)
            self.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)
        except UnsupportedEventTypeError:
            self.create_subscription(msg_type, topic, callback, qos)

    def _reject(self, reason: str, text: str) -> None:
        """Count a rejected message; log it, throttled per reason (one reason never hides another)."""
        self.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_logged.get(reason, -THROTTLE_S) >= THROTTLE_S:
            self._last_logged[reason] = now
            self.get_logger().warning(f"rejected {reason}: {text}")

    def _submit_image(self, header, image: np.ndarray) -> None:
        intr = None
        with self._lock:
            known = self._intrinsics
        if known is not None:  # camera_info of another resolution is rescaled; another aspect rejected
            try:
                intr = rescale_intrinsics(known[0], known[1], image.shape[:2])
            except ValueError as e:
                self._reject("camera_info", str(e))
        self.worker.submit_image(ImageJob(conversions.stamp_ns(header), header, image, intr))

    def _on_image(self, msg: Image | CompressedImage) -> None:
        decode = conversions.compressed_to_numpy if isinstance(msg, CompressedImage) else conversions.image_to_numpy
        try:
            image = decode(msg)
        except conversions.ImageFormatError as e:
            return self._reject("image", str(e))
        self._submit_image(msg.header, image)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            intr = conversions.intrinsics(msg)
        except ValueError as e:
            return self._reject("camera_info", str(e))
        with self._lock:
            self._intrinsics = (intr, (msg.height, msg.width))

    def _too_many(self, n: int) -> bool:
        """Reject (and count) a query message of more than ``max_queries`` points."""
        limit = self.worker.settings.max_queries
        if n > limit:
            self._reject("too_many_queries", f"{n} points > max_queries={limit}")
        return n > limit

    def _submit_query(self, header, uv: np.ndarray, ids: np.ndarray | None) -> None:
        if not self._too_many(len(uv)):
            self.worker.submit_query(QueryJob(conversions.stamp_ns(header), header, uv, ids))

    def _on_queries(self, msg: PolygonStamped) -> None:
        points = msg.polygon.points
        if self._too_many(len(points)):  # before converting them one by one
            return
        uv = np.array([(p.x, p.y) for p in points], np.float32).reshape(-1, 2)
        self._submit_query(msg.header, uv, None)

    def _on_query_points(self, msg: PointCloud2) -> None:
        names = ("u", "v", "id") if any(f.name == "id" for f in msg.fields) else ("u", "v")
        try:
            cols = conversions.pointcloud2_fields(msg, names)
        except ValueError as e:
            return self._reject("query_points", str(e))
        uv = np.stack([cols["u"], cols["v"]], 1).astype(np.float32)
        self._submit_query(msg.header, uv, cols.get("id"))

    # --- outputs ----------------------------------------------------------------------------------

    def _publish_answer(self, a: Answer) -> None:
        cols = {
            "x": a.xyz[:, 0],
            "y": a.xyz[:, 1],
            "z": a.xyz[:, 2],
            "u": a.uv[:, 0].astype(np.float32),
            "v": a.uv[:, 1].astype(np.float32),
            "depth": a.depth.astype(np.float32),
        }
        if a.ids is not None:
            cols["id"] = a.ids
        self._publish(self.pub_points, conversions.make_pointcloud2(a.header, cols))

    def _dense_wanted(self) -> bool:
        """The dense map is decoded only while someone subscribes to ``depth``."""
        return self.pub_depth.get_subscription_count() > 0

    def _publish_dense(self, header, depth: np.ndarray) -> None:
        self._publish(self.pub_depth, conversions.depth_image(header, depth))

    def _publish(self, publisher, msg) -> None:
        """Publish from the worker thread; answers still in flight at Ctrl-C are dropped quietly."""
        try:
            publisher.publish(msg)
        except Exception:
            if self.context.ok():
                raise

    def _publish_diagnostics(self) -> None:
        w = self.worker
        counts = dict(w.counts)
        values = {**counts, **w.queue_lengths(), "encode_ms_last": round(w.last_encode_ms, 2)}
        if (g := w.last_geometry) is not None:  # the newest frame: camera size -> network input (padded)
            values.update(
                image_size_last="x".join(map(str, g.image_size)), network_input_last="x".join(map(str, g.input_size))
            )
        now, (t0, before) = time.monotonic(), self._rate_base
        for key in ("images_received", "frames_encoded", "query_messages", "queries_answered"):
            values[f"{key}_per_s"] = round((counts.get(key, 0) - before.get(key, 0)) / max(now - t0, 1e-3), 2)
        self._rate_base = (now, counts)
        lat = w.take_latencies()
        if lat:
            p50, p95, pmax = np.percentile(np.array(lat) * 1e3, [50, 95, 100])
            values.update(latency_ms_p50=round(p50, 2), latency_ms_p95=round(p95, 2), latency_ms_max=round(pmax, 2))
        values.update({k if k.startswith("lost_") else f"rejected_{k}": v for k, v in self.rejected.items()})
        level = DiagnosticStatus.ERROR if w.error else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: depth",
            hardware_id="spd_ros",
            message=f"error: {w.error}" if w.error else "ok",
        )
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in sorted(values.items())]
        self.pub_diag.publish(DiagnosticArray(header=self._stamp_header(), status=[status]))

    def _stamp_header(self):
        from std_msgs.msg import Header

        return Header(stamp=self.get_clock().now().to_msg())

    def _apply_parameters(self, params) -> None:
        """Post-set: copy each accepted run-time parameter onto its worker setting."""
        for prm in params:
            if prm.name in RUNTIME:
                setattr(self.worker.settings, RUNTIME[prm.name], prm.value)

    def destroy_node(self) -> None:
        joined = self.worker.stop()
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).removeHandler(self._rosout)
        text = "spd_node stopped (worker joined)" if joined else "spd_node stopped (worker still busy)"
        if self.context.ok():
            self.get_logger().info(text)
        else:  # after Ctrl-C /rosout is gone: say it on the console only
            print(f"[INFO] [{self.get_name()}]: {text}", file=sys.stderr, flush=True)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    apply_local_defaults()
    try:
        rclpy.init(args=args)
    except RCLError as e:  # malformed --ros-args or an unreadable params file
        reason = str(e).split(", at ")[0]
        print(f"spd_node: error: {reason}; check the --ros-args and the params file", file=sys.stderr)
        return 2
    node = None
    try:
        node = SpdNode()
        rclpy.spin(node)
    except StartupError as e:
        print(f"spd_node: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
