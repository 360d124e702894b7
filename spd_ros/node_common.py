"""What spd_node and spd_lifecycle_node share (DESIGN §4): the checkpoint, the worker, the
subscriptions and their callbacks, the outputs and the diagnostics.

:class:`DepthNodeMixin` goes in front of an rclpy node class (plain or lifecycle). The plain node
builds the pipeline once in its constructor; the lifecycle node builds it at configure, answers
while active and takes it down at cleanup. :func:`run` is both executables' ``main``.
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
from collections.abc import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PolygonStamped
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from spd_core.camera import rescale_intrinsics
from spd_core.model.checkpoint import CheckpointError
from spd_core.predictor import DepthPredictor
from spd_ros import conversions
from spd_ros.markers import depth_markers
from spd_ros.params import RUNTIME, NodeParams, declare, qos_profile, worker_settings
from spd_ros.ros_env import apply_local_defaults, exit_with_parent
from spd_ros.worker import Answer, DepthWorker, ImageJob, QueryJob

THROTTLE_S = 5.0
RCLError = _rclpy.RCLError  # raised by rclpy.init for bad --ros-args
LIBRARY_LOGGERS = ("spd_core", "spd_ros")  # Python logging of the libraries, forwarded to /rosout


class StartupError(RuntimeError):
    """The pipeline cannot start (bad checkpoint or parameters); the message says what to do."""


class _RosoutHandler(logging.Handler):
    """Python ``logging`` records of the worker and spd_core -> the node's logger (/rosout)."""

    def __init__(self, node) -> None:
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


class DepthNodeMixin:
    """The depth pipeline of an rclpy node: :meth:`_init_common` in the constructor, then
    :meth:`_build` (load and wire) / :meth:`_teardown` (free), as often as the node wants."""

    answering = True  # False (an inactive lifecycle node): images and queries are counted, not used
    worker: DepthWorker | None = None

    def _init_common(self, configurable: bool = False) -> NodeParams:
        """Forward library logging, declare the parameters (StartupError when a value is out of its range)."""
        self._rosout = _RosoutHandler(self)
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).addHandler(self._rosout)
        self.rejected: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()  # messages that came while not answering
        self.outputs: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}  # reason -> monotonic time of its last log line
        self._intrinsics: tuple[tuple[float, float, float, float], tuple[int, int]] | None = None  # K, (H, W)
        self._lock = threading.Lock()
        self._entities: list[tuple[Callable, object]] = []  # (destroy, entity) made by _build
        self.pub_markers = None
        try:
            p = declare(self, configurable)
        except (ParameterException, ValueError) as e:
            raise StartupError(f"bad parameter: {' '.join(str(e).split())}; see config/spd.yaml") from None
        self.marker_settings = [p.publish_markers, p.marker_max_depth]
        # ranges and read-only are checked by rclpy from the descriptors; accepted values are applied here
        self.add_post_set_parameters_callback(self._apply_parameters)
        return p

    # --- build and tear down ----------------------------------------------------------------------

    def _output_publisher(self, msg_type, topic: str, qos: QoSProfile):
        """A publisher of answers (the lifecycle node makes lifecycle publishers)."""
        return self._keep(self.destroy_publisher, self.create_publisher(msg_type, topic, qos))

    def _keep(self, destroy: Callable, entity):
        self._entities.append((destroy, entity))
        return entity

    def _build(self, p: NodeParams) -> DepthPredictor:
        """Load the checkpoint and wire worker, subscriptions, publishers and diagnostics timer;
        StartupError (nothing left behind) when the checkpoint or a parameter is bad."""
        self.params = p
        try:
            sub_qos = qos_profile(p.qos, p.qos_depth)
            # queries are not latest-wins: their DDS history holds as many messages as the worker's queue
            query_qos = qos_profile(p.qos, max(p.qos_depth, p.queue_size))
        except ValueError as e:
            raise StartupError(f"bad parameter: {e}; see config/spd.yaml") from None
        if not p.checkpoint:
            raise StartupError("parameter 'checkpoint' is empty; pass -p checkpoint:=/path/model.pt")
        try:
            predictor = DepthPredictor.from_checkpoint(
                p.checkpoint,
                p.device,
                p.precision,
                p.pixel_budget or None,
                p.focal_scaling,
                p.planner,
                p.backend,
                p.onnx_dir or None,
                [s for s in p.onnx_providers.split(",") if s.strip()] or None,
            )
        except (CheckpointError, ValueError) as e:
            raise StartupError(str(e)) from None
        if (costs := predictor.calibrate()) is not None:
            self.get_logger().info(f"query planner: {costs.describe()}")
        self.marker_settings = [p.publish_markers, p.marker_max_depth]
        self.worker = DepthWorker(
            predictor,
            self._publish_answer,
            p.cache_size,
            p.queue_size,
            worker_settings(p),
            self._publish_dense,
            self._dense_wanted,
        )
        if p.compressed:
            self._subscribe(CompressedImage, "image/compressed", self._on_image, sub_qos)
        else:
            self._subscribe(Image, "image", self._on_image, sub_qos)
        self._subscribe(CameraInfo, "camera_info", self._on_camera_info, sub_qos)
        self._subscribe(PolygonStamped, "queries", self._on_queries, query_qos)
        self._subscribe(PointCloud2, "query_points", self._on_query_points, query_qos)
        self.pub_points = self._output_publisher(PointCloud2, "depth_points", QoSProfile(depth=50))
        self.pub_depth = self._output_publisher(Image, "depth", QoSProfile(depth=2))
        if p.publish_markers:
            self._make_marker_publisher()
        self.pub_diag = self._keep(
            self.destroy_publisher, self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        )
        self._rate_base: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._keep(self.destroy_timer, self.create_timer(1.0, self._publish_diagnostics))
        return predictor

    def _make_marker_publisher(self) -> None:
        self.pub_markers = self._output_publisher(MarkerArray, "depth_markers", QoSProfile(depth=5))

    def _teardown(self) -> bool | None:
        """Stop the worker, free the model, destroy what :meth:`_build` made; whether the worker
        thread ended (None: there was none)."""
        if self.worker is None:
            return None
        joined = self.worker.stop()
        self.worker = None  # the predictor (the model) goes with it
        for destroy, entity in reversed(self._entities):
            destroy(entity)
        self._entities.clear()
        self.pub_markers = None
        return joined

    def _release_logging(self, joined: bool | None) -> None:
        """Last words (console only after Ctrl-C: /rosout is gone) and detach library logging."""
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).removeHandler(self._rosout)
        text = "spd_node stopped" + {True: " (worker joined)", False: " (worker still busy)", None: ""}[joined]
        if self.context.ok():
            self.get_logger().info(text)
        else:
            print(f"[INFO] [{self.get_name()}]: {text}", file=sys.stderr, flush=True)

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
            sub = self.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)
        except UnsupportedEventTypeError:
            sub = self.create_subscription(msg_type, topic, callback, qos)
        self._keep(self.destroy_subscription, sub)

    def _reject(self, reason: str, text: str) -> None:
        """Count a rejected message; log it, throttled per reason (one reason never hides another)."""
        self.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_logged.get(reason, -THROTTLE_S) >= THROTTLE_S:
            self._last_logged[reason] = now
            self.get_logger().warning(f"rejected {reason}: {text}")

    def _idle(self, topic: str) -> bool:
        """True (and counted as ``ignored_<topic>``) when a message comes while not answering."""
        if not self.answering:
            self.ignored[topic] += 1
        return not self.answering

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
        if self._idle("image"):
            return
        decode = conversions.compressed_to_numpy if isinstance(msg, CompressedImage) else conversions.image_to_numpy
        try:
            image = decode(msg, self.params.max_image_pixels)
            self.worker.predictor.geometry(image.shape[:2])  # encodable at this pixel budget
        except ValueError as e:  # ImageFormatError included
            return self._reject("image", str(e))
        self._submit_image(msg.header, image)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Kept while not answering too: the newest intrinsics are ready at activation."""
        try:
            intr = conversions.intrinsics(msg)
        except ValueError as e:
            return self._reject("camera_info", str(e))
        with self._lock:
            self._intrinsics = (intr, (msg.height, msg.width))

    def _on_query(self, convert, msg: PolygonStamped | PointCloud2, reason: str) -> None:
        """Convert a query message (``convert`` -> (uv, ids)) and enqueue it; one of more than
        ``max_queries`` points is rejected before its points are converted, a malformed one under ``reason``."""
        if self._idle(reason):
            return
        try:
            uv, ids = convert(msg, self.worker.settings.max_queries)
        except conversions.TooManyPoints as e:
            return self._reject("too_many_queries", str(e))
        except ValueError as e:
            return self._reject(reason, str(e))
        self.worker.submit_query(QueryJob(conversions.stamp_ns(msg.header), msg.header, uv, ids))

    def _on_queries(self, msg: PolygonStamped) -> None:
        self._on_query(conversions.polygon_query, msg, "queries")

    def _on_query_points(self, msg: PointCloud2) -> None:
        self._on_query(conversions.cloud_query, msg, "query_points")

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
        pub, (enabled, max_depth) = self.pub_markers, self.marker_settings
        if enabled and pub is not None and self.answering and pub.get_subscription_count() > 0:
            self._publish(pub, depth_markers(a.header, a.xyz, a.depth, max_depth))
            self.outputs["marker_arrays_published"] += 1

    def _dense_wanted(self) -> bool:
        """The dense map is decoded only while someone subscribes to ``depth``."""
        return self.pub_depth.get_subscription_count() > 0

    def _publish_dense(self, header, depth: np.ndarray) -> None:
        self._publish(self.pub_depth, conversions.depth_image(header, depth))

    def _publish(self, publisher, msg) -> None:
        """Publish from the worker thread; answers still in flight at Ctrl-C or at a lifecycle
        transition are dropped quietly (counted ``answers_dropped_inactive`` when inactive)."""
        if not self.answering:
            self.outputs["answers_dropped_inactive"] += 1
            return
        try:
            publisher.publish(msg)
        except Exception:
            if self.context.ok() and self.worker is not None:
                raise

    def _publish_diagnostics(self) -> None:
        w = self.worker
        counts = dict(w.counts)
        values = {**counts, **w.queue_lengths(), **self.outputs, "encode_ms_last": round(w.last_encode_ms, 2)}
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
        values.update({f"ignored_{k}": v for k, v in self.ignored.items()})
        level = DiagnosticStatus.ERROR if w.error else DiagnosticStatus.OK
        message = f"error: {w.error}" if w.error else "ok" if self.answering else "inactive"
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: depth", hardware_id="spd_ros", message=message
        )
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in sorted(values.items())]
        self.pub_diag.publish(DiagnosticArray(header=self._stamp_header(), status=[status]))

    def _stamp_header(self):
        from std_msgs.msg import Header

        return Header(stamp=self.get_clock().now().to_msg())

    def _apply_parameters(self, params) -> None:
        """Post-set: copy each accepted run-time parameter onto its worker or marker setting."""
        for prm in params:
            if prm.name in RUNTIME and self.worker is not None:
                setattr(self.worker.settings, RUNTIME[prm.name], prm.value)
            elif prm.name == "publish_markers":
                self.marker_settings[0] = prm.value
                if prm.value and self.pub_markers is None and self.worker is not None:
                    self._make_marker_publisher()


def run(node_class: type, args: list[str] | None = None) -> int:
    """``main`` of both executables: init (a malformed --ros-args: one line, exit 2), spin until
    Ctrl-C or SIGTERM (exit 0, worker joined), a StartupError from the constructor: one line, exit 2."""
    apply_local_defaults()
    exit_with_parent()  # orphaned by a parent that ended (ros2 launch on SIGTERM): shut down as on Ctrl-C
    try:
        rclpy.init(args=args)
    except RCLError as e:  # malformed --ros-args or an unreadable params file
        reason = str(e).split(", at ")[0]
        print(f"spd_node: error: {reason}; check the --ros-args and the params file", file=sys.stderr)
        return 2
    node = None
    try:
        node = node_class()
        rclpy.spin(node)
    except StartupError as e:
        print(f"spd_node: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # the signal handler shut the context down while the executor was making its wait set
        # (a known rclpy race): the same as an external shutdown
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
