"""ros2 launch spd_ros spd.launch.py checkpoint:=/path/model.pt [device:=cuda] [namespace:=cam]
[image:=/camera/color/image_raw] [camera_info:=/camera/color/camera_info] [queries:=/keypoints]"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("spd_ros"), "config", "spd.yaml")
    args = {
        "checkpoint": ("", "spd_ros checkpoint (.pt)"),
        "device": ("auto", "auto | cpu | cuda | cuda:N"),
        "params_file": (default_params, "node parameters (YAML)"),
        "namespace": ("", "namespace of the node and its topics"),
        "image": ("image", "input image topic"),
        "camera_info": ("camera_info", "input CameraInfo topic"),
        "queries": ("queries", "input PolygonStamped query topic"),
        "query_points": ("query_points", "input PointCloud2 query topic"),
        "depth_points": ("depth_points", "output PointCloud2 topic"),
    }
    cfg = {name: LaunchConfiguration(name) for name in args}
    node = Node(
        package="spd_ros",
        executable="spd_node",
        name="spd_node",
        namespace=cfg["namespace"],
        parameters=[cfg["params_file"], {"checkpoint": cfg["checkpoint"], "device": cfg["device"]}],
        remappings=[(t, cfg[t]) for t in ("image", "camera_info", "queries", "query_points", "depth_points")]
        + [("image/compressed", [cfg["image"], "/compressed"])],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription(
        [DeclareLaunchArgument(n, default_value=d, description=t) for n, (d, t) in args.items()] + [node]
    )
