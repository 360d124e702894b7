"""spd_core: the ROS-free core of spd_ros — model, exact sparse decoding, checkpoints."""

from spd_core.model import FrameFeatures, ModelConfig, SPDModel

__all__ = ["FrameFeatures", "ModelConfig", "SPDModel"]
