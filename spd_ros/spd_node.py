"""spd_node: camera images and query pixels in, metric depth and 3D points out (DESIGN §4).

Subscribes ``image`` (or ``image/compressed``), ``camera_info``, ``queries`` (PolygonStamped, x=u
y=v) and ``query_points`` (PointCloud2 with float32 u, v and optional id); publishes
``depth_points`` (PointCloud2 x,y,z,u,v,depth[,id], one point per query, in order), ``depth``
(32FC1, with ``publish_dense``), ``depth_markers`` (MarkerArray, with ``publish_markers``) and
``/diagnostics``. The model runs in one worker thread (:mod:`spd_ros.worker`); callbacks convert
and enqueue, and answer a small query themselves when the model is free (``inline_max_points``).
The pipeline is shared with the managed node (:mod:`spd_ros.lifecycle_node`) in
:mod:`spd_ros.node_common`; this one starts answering as soon as it is constructed.
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from spd_ros.node_common import DepthNodeMixin, run


class SpdNode(DepthNodeMixin, Node):
    """The plain node: checkpoint loaded and answering from construction until destroyed."""

    def __init__(self) -> None:
        super().__init__("spd_node")
        p = self._init_common()
        predictor = self._build(p)
        self.worker.start()
        self.get_logger().info(
            f"spd_node ready: {p.checkpoint} on {predictor.device} ({predictor.backend.name}, {p.precision}), "
            f"pixel budget {predictor.pixel_budget}, "
            f"listening on {'image/compressed' if p.compressed else 'image'}"
        )

    def destroy_node(self) -> None:
        self._release_logging(self._teardown())
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run(SpdNode, args)


if __name__ == "__main__":
    sys.exit(main())
