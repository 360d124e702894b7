"""Training (its config: spd_core.config): resumable state, the Trainer (AdamW, poly LR, AMP, DDP), SILog loss."""

from spd_core.train.losses import SILogLoss, silog_loss

__all__ = ["SILogLoss", "silog_loss"]
