"""Live replay of a bag into spd_node: raw CDR publish at real time, queries, depth_points back.

Used by ``spd-bag-eval --live``. The colour images (Image or CompressedImage) and camera_info of
the bag are published unchanged (raw bytes), each evaluated frame is followed by one
PolygonStamped query with the frame's stamp, and the answers are matched back by stamp and
scored by :func:`spd_core.eval.bag.score_frame`, exactly as offline.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from spd_core.data.rosbag import bag_messages, stamp_ns
from spd_core.eval.bag import BagQueries, FrameScore, score_frame
from spd_core.eval.bag_report import percentiles
from spd_ros.launch_util import stop_node

log = logging.getLogger(__name__)

DISCOVERY_TIMEOUT_S = 60.0  # node start-up includes loading the model


class _Collector:
    """Thread-safe record of publish and answer times per query stamp."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}
        self.answers: dict[int, tuple[float, np.ndarray]] = {}

    def on_points(self, msg: Any) -> None:
        from spd_ros.conversions import pointcloud2_fields

        t = time.perf_counter()
        stamp = stamp_ns(msg.header)
        depth = pointcloud2_fields(msg, ("depth",))["depth"]
        with self.lock:
            if stamp in self.sent and stamp not in self.answers:
                self.answers[stamp] = (t, depth)


def start_node(args: argparse.Namespace, env: dict[str, str]) -> subprocess.Popen:
    """spd_node in a child process with the checkpoint (and params file) of ``args``."""
    from spd_ros.launch_util import node_command

    if args.checkpoint is None:
        raise ValueError("--start-node needs --checkpoint")
    cmd = node_command(
        checkpoint=args.checkpoint,
        params_file=args.params_file,
        namespace=args.namespace,
        device=args.device,
        precision=args.precision,
    )
    log.info("starting %s", " ".join(map(str, cmd)))
    return subprocess.Popen(cmd, env=env)


def evaluate_live(args: argparse.Namespace, plans: list[BagQueries]) -> tuple[list[FrameScore], dict]:
    """Replay ``args.bag`` into spd_node, query each planned frame, score the answers."""
    import rclpy
    from geometry_msgs.msg import PolygonStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

    from spd_ros.conversions import header_at, polygon_stamped
    from spd_ros.ros_env import local_ros_env

    env = local_ros_env()
    proc = start_node(args, env) if args.start_node else None
    by_stamp = {p.stamp_ns: p for p in plans}
    col = _Collector()
    rclpy.init()
    node = rclpy.create_node("spd_bag_replay", namespace=args.namespace or None)
    try:
        with AnyReader([Path(args.bag)], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
            color = [c for c in reader.connections if c.topic == args.color_topic]
            info = [c for c in reader.connections if args.info_topic and c.topic == args.info_topic]
            compressed = bool(color) and color[0].msgtype.endswith("CompressedImage")
            reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            pub_img = node.create_publisher(
                CompressedImage if compressed else Image, "image/compressed" if compressed else "image", reliable
            )
            pub_info = node.create_publisher(CameraInfo, "camera_info", reliable)
            pub_q = node.create_publisher(PolygonStamped, "queries", reliable)
            node.create_subscription(PointCloud2, "depth_points", col.on_points, reliable)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            _wait_for_node(node, [pub_img, pub_q], proc)
            for _, _, raw, _ in bag_messages(reader, args.bag, info):  # pre-roll: intrinsics before the first image
                pub_info.publish(bytes(raw))
                time.sleep(0.2)
                break
            t_start, t_bag0 = time.perf_counter(), None
            for conn, t_bag, raw, msg in bag_messages(reader, args.bag, color + info):
                t_bag0 = t_bag if t_bag0 is None else t_bag0
                delay = t_start + (t_bag - t_bag0) / 1e9 / max(args.rate, 1e-6) - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if conn in info:
                    pub_info.publish(bytes(raw))
                    continue
                pub_img.publish(bytes(raw))
                stamp = stamp_ns(msg.header)
                plan = by_stamp.get(stamp)
                if plan is None:
                    continue
                q = polygon_stamped(header_at(stamp), plan.uv)
                with col.lock:
                    col.sent[stamp] = time.perf_counter()
                pub_q.publish(q)
            deadline = time.monotonic() + args.answer_timeout
            while time.monotonic() < deadline and len(col.answers) < len(col.sent):
                time.sleep(0.01)
            executor.shutdown(timeout_sec=1.0)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        if proc is not None:
            stop_node(proc)
    return _score(plans, col)


def _wait_for_node(node: Any, pubs: list, proc: subprocess.Popen | None) -> None:
    """Block until spd_node subscribes to our image and query topics (messages sent before are lost)."""
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"spd_node exited with code {proc.returncode} before it was ready")
        if all(p.get_subscription_count() > 0 for p in pubs) and node.count_publishers("depth_points") > 0:
            time.sleep(0.5)  # let the reverse direction (depth_points -> us) match as well
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"no spd_node subscribed to {pubs[0].topic_name} within {DISCOVERY_TIMEOUT_S:.0f} s; "
        "is it running in the same namespace and ROS_DOMAIN_ID?"
    )


def _score(plans: list[BagQueries], col: _Collector) -> tuple[list[FrameScore], dict]:
    results = []
    unanswered = 0
    for plan in plans:
        sent = col.sent.get(plan.stamp_ns)
        answer = col.answers.get(plan.stamp_ns)
        if answer is None or len(answer[1]) != len(plan.uv):
            unanswered += sent is not None
            pred = np.full(len(plan.uv), np.nan, np.float32)
            timings = {}
        else:
            pred = answer[1]
            timings = {"end_to_end_ms": (answer[0] - sent) * 1e3}
        results.append(score_frame(plan, pred, timings))
    stats = {
        "live": {
            "query_messages_sent": len(col.sent),
            "answered": len(col.answers),
            "unanswered": unanswered,
            "frames_not_replayed": len(plans) - len(col.sent),
            "end_to_end_ms": percentiles([r.timings_ms.get("end_to_end_ms", np.nan) for r in results]),
        }
    }
    return results, stats
