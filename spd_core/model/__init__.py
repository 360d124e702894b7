"""The network: ConvNeXt V2 encoder + DPT-style FPN (``fpn``), the exact local path run dense or
on query windows (``local_path``), the DPT-D64 reference decoder, and versioned checkpoints."""

from spd_core.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_model, save_checkpoint
from spd_core.model.spd_model import FrameFeatures, ModelConfig, SPDModel

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "FrameFeatures",
    "ModelConfig",
    "SPDModel",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
