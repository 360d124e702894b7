"""Camera geometry without ROS: intrinsics plausibility, rescaling to another image size."""

import math

import numpy as np
import pytest

from spd_core.camera import back_project, check_intrinsics, rescale_intrinsics

K = (500.0, 510.0, 319.5, 239.5)


def test_plausible_intrinsics_pass() -> None:
    check_intrinsics(K, 640, 480)
    check_intrinsics((0.05 * 640, 50 * 640, 0.0, 0.0), 640, 480)  # the ends of the range


@pytest.mark.parametrize(
    ("k", "size", "message"),
    [
        ((1e300, 510.0, 319.5, 239.5), (640, 480), "fx=1e+300 px is implausible"),
        ((500.0, 1e-300, 319.5, 239.5), (640, 480), "fy=1e-300 px is implausible"),
        ((0.0, 0.0, 0.0, 0.0), (640, 480), "focal length fx=0 px"),
        ((500.0, 510.0, math.nan, 239.5), (640, 480), "cx=nan is not finite"),
        ((500.0, 510.0, 319.5, math.inf), (640, 480), "cy=inf is not finite"),
        (K, (0, 480), "size 0x480 is empty"),
    ],
)
def test_implausible_intrinsics_give_one_line_naming_the_field(k, size, message) -> None:
    with pytest.raises(ValueError, match=r"^camera_info") as e:
        check_intrinsics(k, *size)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_rescaled_intrinsics_project_the_same_rays() -> None:
    """A camera_info for 640x480 used on the same camera's 320x240 stream: a pixel centre of the
    small image back-projects onto the ray of the same scene point in the large one."""
    small = rescale_intrinsics(K, (480, 640), (240, 320))
    assert small[0] == pytest.approx(250.0) and small[1] == pytest.approx(255.0)
    uv_small = np.array([[10.0, 20.0], [159.5, 119.5]])
    uv_large = (uv_small + 0.5) * 2 - 0.5  # the same scene points in the 640x480 image
    z = np.array([2.0, 3.0])
    np.testing.assert_allclose(back_project(uv_small, z, *small), back_project(uv_large, z, *K), rtol=1e-6)


def test_another_aspect_ratio_is_refused() -> None:
    with pytest.raises(ValueError, match="camera_info is for 640x640"):
        rescale_intrinsics(K, (640, 640), (120, 160))
    assert rescale_intrinsics(K, (480, 640), (481, 640))  # within the tolerance (one row)
