"""Evaluation: NYU metrics (dense and sparse protocol), dataset and rosbag evaluation, figures."""

from spd_core.eval.metrics import MAX_DEPTH, MIN_DEPTH, compute_errors, valid_mask

__all__ = ["MAX_DEPTH", "MIN_DEPTH", "compute_errors", "valid_mask"]
