"""spd_node parameters: declared up front with descriptions and ranges; defaults in config/spd.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data, qos_profile_system_default

from spd_core.data.images import MAX_PIXELS
from spd_core.preprocess import MIN_IMAGE_SIDE
from spd_ros.worker import WorkerSettings

# changeable while running: parameter -> the WorkerSettings field it sets
RUNTIME = {
    "stamp_tolerance": "stamp_tolerance_s",
    "query_timeout": "query_timeout_s",
    "max_queries": "max_queries",
    "publish_dense": "publish_dense",
    "inline_max_points": "inline_max_points",
}
NODE_RUNTIME = ("publish_markers",)  # changeable while running, applied by the node itself
QOS = {"sensor_data": qos_profile_sensor_data, "system_default": qos_profile_system_default, "reliable": None}


@dataclass
class NodeParams:
    checkpoint: str = ""
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "torch"
    onnx_dir: str = ""
    onnx_providers: str = ""
    pixel_budget: int = 0
    cache_size: int = 8
    queue_size: int = 64
    stamp_tolerance: float = WorkerSettings.stamp_tolerance_s
    query_timeout: float = WorkerSettings.query_timeout_s
    max_queries: int = WorkerSettings.max_queries
    inline_max_points: int = WorkerSettings.inline_max_points
    grid_cols: int = 0
    grid_rows: int = 0
    publish_dense: bool = WorkerSettings.publish_dense
    focal_scaling: bool = True
    planner: str = "measured"
    compressed: bool = False
    qos: str = "sensor_data"
    qos_depth: int = 5
    max_image_pixels: int = MAX_PIXELS
    publish_markers: bool = False
    marker_max_depth: float = 10.0


def _ints(lo: int, hi: int, step: int = 1) -> IntegerRange:
    return IntegerRange(from_value=lo, to_value=hi, step=step)


def _floats(lo: float, hi: float) -> FloatingPointRange:
    return FloatingPointRange(from_value=lo, to_value=hi, step=0.0)


DESCRIPTIONS = {
    "checkpoint": ("spd_ros checkpoint (.pt) written by spd-train; required", None),
    "device": ("auto | cpu | cuda | cuda:N", None),
    "precision": ("fp32 | fp16 (CUDA; onnxruntime: the fp16 export) | bf16 (torch only)", None),
    "backend": ("torch | torch.compile | onnxruntime (runs the spd-export files in onnx_dir)", None),
    "onnx_dir": ("directory spd-export wrote; empty = <checkpoint stem>_onnx/ beside the checkpoint", None),
    "onnx_providers": (
        "onnxruntime execution providers, best first (e.g. tensorrt,cuda,cpu); empty = by device",
        None,
    ),
    "pixel_budget": (
        "pixels the network sees: each image is scaled by one factor (aspect kept) to about this "
        "many, then padded to multiples of 32; 0 = the checkpoint's training area",
        _ints(0, 16777216),
    ),
    "cache_size": ("encoded frames kept for stamp-matched queries", _ints(1, 256)),
    "queue_size": ("query messages waiting for their frame; the oldest is dropped when full", _ints(1, 10000)),
    "stamp_tolerance": ("s: a query matches a frame whose stamp is this close", _floats(0.0, 10.0)),
    "query_timeout": ("s: how long a query waits for a frame not encoded yet", _floats(0.0, 60.0)),
    "max_queries": ("points per query message; larger messages are rejected", _ints(1, 1000000)),
    "inline_max_points": (
        "queries up to this size are answered on the callback thread when the model is "
        "free (no thread hand-off); 0 = always by the worker",
        _ints(0, 1000000),
    ),
    "grid_cols": ("fixed query grid answered on every frame: columns (0 = off)", _ints(0, 1024)),
    "grid_rows": ("fixed query grid answered on every frame: rows (0 = off)", _ints(0, 1024)),
    "publish_dense": ("also publish the dense 32FC1 depth map on 'depth' (when subscribed)", None),
    "focal_scaling": ("scale metric depth by the camera's focal length (needs camera_info)", None),
    "planner": (
        "exact execution per query message: measured (costs timed at start-up) | macs | windows "
        "(always per-query windows); see README 'Query planner'",
        None,
    ),
    "compressed": ("subscribe to image/compressed (CompressedImage) instead of image", None),
    "qos": ("subscription QoS: sensor_data | reliable | system_default", None),
    "qos_depth": ("subscription queue depth", _ints(1, 1000)),
    "max_image_pixels": (
        "largest image (height x width) decoded; larger ones, and compressed ones declaring more, are "
        "rejected before decoding",
        _ints(MIN_IMAGE_SIDE**2, 2**31 - 1),
    ),
    "publish_markers": (
        "also publish the answered points as a visualization_msgs/MarkerArray on 'depth_markers' "
        "(RViz; only while subscribed)",
        None,
    ),
    "marker_max_depth": ("m: the far end of the markers' colour scale (0 m = red, this = blue)", _floats(0.1, 1000.0)),
}


def declare(node: Node, configurable: bool = False) -> NodeParams:
    """Declare every parameter with its description and range; return their values.

    Parameters that are not run-time ones are read-only, unless ``configurable`` (the lifecycle
    node reads them at each configure and refuses changes itself while configured)."""
    defaults = NodeParams()
    for name, (text, rng) in DESCRIPTIONS.items():
        fixed = name not in RUNTIME and name not in NODE_RUNTIME and not configurable
        desc = ParameterDescriptor(description=text, read_only=fixed)
        if isinstance(rng, IntegerRange):
            desc.integer_range = [rng]
        elif isinstance(rng, FloatingPointRange):
            desc.floating_point_range = [rng]
        node.declare_parameter(name, getattr(defaults, name), desc)
    return read(node)


def read(node: Node) -> NodeParams:
    """The current values of the declared parameters."""
    return NodeParams(**{name: node.get_parameter(name).value for name in DESCRIPTIONS})


def qos_profile(name: str, depth: int) -> QoSProfile:
    if name not in QOS:
        raise ValueError(f"qos {name!r} is not one of {', '.join(QOS)}")
    if name == "reliable":
        return QoSProfile(depth=depth)
    base = QOS[name]
    return QoSProfile(history=base.history, depth=depth, reliability=base.reliability, durability=base.durability)


def worker_settings(p: NodeParams) -> WorkerSettings:
    """The worker's settings from the declared parameters (the one place they are copied)."""
    return WorkerSettings(
        **{field: getattr(p, name) for name, field in RUNTIME.items()}, grid=(p.grid_cols, p.grid_rows)
    )
