"""spd_core: the ROS-free core of spd_ros.

Sub-packages, each importing only from those below it (``python -m spd_core._layering``):

- ``device``, ``preprocess``, ``camera``: devices and precision, image normalisation and pixel
  mapping, pinhole geometry;
- ``model``: encoder + FPN, the exact local path, checkpoints;
- ``data``: NYU Depth V2, RGB-D rosbag2, synthetic scenes;
- ``export``: ONNX export (``spd-export``) and the exported model run by onnxruntime;
- ``backends``: where DepthPredictor's network runs (torch, torch.compile, onnxruntime);
- ``predictor``: ``DepthPredictor``, the one inference path;
- ``eval``: metrics, dataset and bag evaluation, figures;
- ``train``: config, trainer, losses, ``spd-train``;
- ``bench``: MACs and timing against the plan, ``spd-bench``.
"""

from spd_core.model import FrameFeatures, ModelConfig, SPDModel
from spd_core.predictor import DepthPredictor

__all__ = ["DepthPredictor", "FrameFeatures", "ModelConfig", "SPDModel"]
