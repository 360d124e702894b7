"""spd_node parameters: declared up front with descriptions and ranges; defaults in config/spd.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data, qos_profile_system_default

from spd_ros.worker import WorkerSettings

# changeable while running: parameter -> the WorkerSettings field it sets
RUNTIME = {
    "stamp_tolerance": "stamp_tolerance_s",
    "query_timeout": "query_timeout_s",
    "max_queries": "max_queries",
    "publish_dense": "publish_dense",
    "inline_max_points": "inline_max_points",
}
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
    compressed: bool = False
    qos: str = "sensor_data"
    qos_depth: int = 5


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
    "compressed": ("subscribe to image/compressed (CompressedImage) instead of image", None),
    "qos": ("subscription QoS: sensor_data | reliable | system_default", None),
    "qos_depth": ("subscription queue depth", _ints(1, 1000)),
}


def declare(node: Node) -> NodeParams:
    """Declare every parameter with its description and range; return their values."""
    defaults = NodeParams()
    values = {}
    for name, (text, rng) in DESCRIPTIONS.items():
        desc = ParameterDescriptor(description=text, read_only=name not in RUNTIME)
        if isinstance(rng, IntegerRange):
            desc.integer_range = [rng]
        elif isinstance(rng, FloatingPointRange):
            desc.floating_point_range = [rng]
        values[name] = node.declare_parameter(name, getattr(defaults, name), desc).value
    return NodeParams(**values)


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
