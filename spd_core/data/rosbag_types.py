"""The rosbag2 message types the reader and the writer share, and the ROS 2 Jazzy typestore."""

from __future__ import annotations

from typing import Any

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POLYGON_STAMPED = "geometry_msgs/msg/PolygonStamped"


def typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)
