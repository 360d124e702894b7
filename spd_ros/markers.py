"""Answered points as a visualization_msgs/MarkerArray for RViz (``publish_markers``).

One SPHERE_LIST marker holds one sphere (a point and its colour) per answered point: measured
here, building it costs ~6 µs a point against ~50 µs for one SPHERE marker per point (0.2 s for
4096 points, on the worker thread), and RViz draws a list in one batch.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from spd_core.eval.colors import depth_colors

NAMESPACE = "spd_depth"
SIZE_PER_M = 0.015  # sphere diameter per metre of the points' median depth (about constant on screen)
MIN_SIZE = 0.01  # m


def depth_markers(header, xyz: np.ndarray, depth: np.ndarray, max_depth: float) -> MarkerArray:
    """One SPHERE_LIST marker (``NAMESPACE``, id 0: each answer replaces the last) with one point per
    answered point that has a finite 3D position, coloured by depth on [0, max_depth], in the image's
    frame (``header``); a DELETE of it when no point has one."""
    keep = np.isfinite(xyz).all(1) & np.isfinite(depth)
    if not keep.any():
        return MarkerArray(markers=[Marker(header=header, ns=NAMESPACE, id=0, action=Marker.DELETE)])
    d = depth[keep]
    size = max(MIN_SIZE, SIZE_PER_M * float(np.median(d)))
    marker = Marker(
        header=header,
        ns=NAMESPACE,
        id=0,
        type=Marker.SPHERE_LIST,
        action=Marker.ADD,
        scale=Vector3(x=size, y=size, z=size),
        points=[Point(x=x, y=y, z=z) for x, y, z in xyz[keep].tolist()],
        colors=[ColorRGBA(r=r, g=g, b=b, a=1.0) for r, g, b in depth_colors(d, 0.0, max_depth).tolist()],
    )
    marker.pose.orientation.w = 1.0
    return MarkerArray(markers=[marker])
