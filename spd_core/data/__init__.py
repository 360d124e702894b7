"""Datasets of spd_core: NYU Depth V2 (BTS layout), RGB-D rosbag2 recordings, synthetic scenes.

A sample is a dict: "image" uint8 [H,W,3] RGB, "depth" float32 [H,W] metres (0 = invalid, never
NaN), "focal" float (fx in px at this size), "name" str; optionally "K" float64 [3,3], "stamp_ns" int.
``TrainTransform`` turns it into collate-friendly tensors (evaluation reads raw samples through
``DepthPredictor``).
"""

from spd_core.data.common import DataError, FrameError, Sample
from spd_core.data.nyu import NYUDepthV2
from spd_core.data.rosbag import RosbagRGBD
from spd_core.data.rosbag_write import write_synthetic_bag
from spd_core.data.synthetic import SyntheticRGBD, render_scene
from spd_core.data.transforms import TrainTransform

__all__ = [
    "DataError",
    "FrameError",
    "NYUDepthV2",
    "RosbagRGBD",
    "Sample",
    "SyntheticRGBD",
    "TrainTransform",
    "render_scene",
    "write_synthetic_bag",
]
