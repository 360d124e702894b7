"""Answered points as a visualization_msgs/MarkerArray for RViz (``publish_markers``)."""

from __future__ import annotations

import numpy as np
from visualization_msgs.msg import Marker, MarkerArray

from spd_core.eval.colors import depth_colors

NAMESPACE = "spd_depth"
SIZE_PER_M = 0.015  # sphere diameter per metre of depth: about the same size on screen near and far
MIN_SIZE = 0.01  # m


def depth_markers(header, xyz: np.ndarray, depth: np.ndarray, max_depth: float) -> MarkerArray:
    """A DELETEALL (the previous answer's spheres go), then one SPHERE per answered point with a
    finite 3D position, in the image's frame (``header``), coloured by depth on [0, max_depth]."""
    clear = Marker(header=header, ns=NAMESPACE, action=Marker.DELETEALL)
    keep = np.flatnonzero(np.isfinite(xyz).all(1) & np.isfinite(depth))
    colors = depth_colors(depth[keep], 0.0, max_depth)
    markers = [clear]
    for i, (idx, rgb) in enumerate(zip(keep, colors, strict=True)):
        m = Marker(header=header, ns=NAMESPACE, id=i, type=Marker.SPHERE, action=Marker.ADD)
        m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(c) for c in xyz[idx])
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = max(MIN_SIZE, SIZE_PER_M * float(depth[idx]))
        m.color.r, m.color.g, m.color.b = (float(c) for c in rgb)
        m.color.a = 1.0
        markers.append(m)
    return MarkerArray(markers=markers)
