"""The depth colour ramp (spd_core.eval.colors) and the MarkerArray built from an answer."""

from __future__ import annotations

import numpy as np
import pytest

from spd_core.eval.colors import INVALID, RAMP, depth_colors


def test_depth_colors_follow_the_ramp() -> None:
    depth = np.array([0.0, 2.5, 5.0, 7.5, 10.0, 1.25, -3.0, 25.0, np.nan, np.inf])
    rgb = depth_colors(depth, 0.0, 10.0)
    assert rgb.shape == (10, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[:5], RAMP)  # the anchors, evenly spaced over [0, 10] m
    np.testing.assert_allclose(rgb[5], (RAMP[0] + RAMP[1]) / 2)  # halfway between two anchors
    np.testing.assert_allclose(rgb[6], RAMP[0])  # below the scale: the near end
    np.testing.assert_allclose(rgb[7], RAMP[-1])  # beyond it: the far end
    np.testing.assert_allclose(rgb[8:], [INVALID, INVALID])
    ramp = depth_colors(np.linspace(0, 10, 101), 0.0, 10.0)
    assert (np.abs(np.diff(ramp, axis=0)).sum(1) > 0).all()  # every depth step changes the colour
    with pytest.raises(ValueError, match="vmax must be > vmin"):
        depth_colors(depth, 5.0, 5.0)


def test_depth_markers_one_sphere_per_finite_point() -> None:
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker

    from spd_ros.markers import depth_markers

    header = Header(frame_id="cam_optical")
    header.stamp.sec = 7
    xyz = np.array([[0.1, 0.2, 1.0], [np.nan, np.nan, np.nan], [-0.5, 0.1, 4.0], [0.0, 0.0, 9.0]], np.float32)
    depth = np.array([1.0, np.nan, 4.0, np.nan], np.float32)  # last: 3D point but no depth -> no sphere
    (marker,) = depth_markers(header, xyz, depth, max_depth=8.0).markers
    assert marker.type == Marker.SPHERE_LIST and marker.action == Marker.ADD and marker.id == 0
    assert marker.header.frame_id == "cam_optical" and marker.header.stamp.sec == 7
    pos = [[p.x, p.y, p.z] for p in marker.points]
    np.testing.assert_allclose(pos, xyz[[0, 2]], rtol=1e-6)
    rgb = [[c.r, c.g, c.b] for c in marker.colors]
    np.testing.assert_allclose(rgb, depth_colors(np.array([1.0, 4.0]), 0.0, 8.0), atol=1e-6)
    assert marker.scale.x > 0 and marker.pose.orientation.w == 1.0
    (gone,) = depth_markers(header, xyz[1:2], depth[1:2], 8.0).markers  # no answered point: the list goes
    assert gone.action == Marker.DELETE and gone.id == 0 and gone.ns == marker.ns
