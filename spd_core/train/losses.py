"""Training loss: dense scale-invariant log loss (SILog, Eigen et al. 2014; BTS variant).

    loss = scale · sqrt( mean(g²) − λ · mean(g)² ),   g = log(pred) − log(gt)

over the valid pixels of the whole batch (gt in (min_depth, max_depth]); λ = 0.85 (plan §9.3)
and scale = 10 as in BTS. Invalid pixels (gt = 0) never contribute to the value or the gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from spd_core.eval.metrics import MAX_DEPTH, MIN_DEPTH

DEFAULT_LAMBDA = 0.85


def valid_depth_mask(gt: torch.Tensor, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH) -> torch.Tensor:
    """Boolean mask of finite ground truth in (min_depth, max_depth]; same shape as ``gt``."""
    return torch.isfinite(gt) & (gt > min_depth) & (gt <= max_depth)


def silog_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    lam: float = DEFAULT_LAMBDA,
    scale: float = 10.0,
    min_depth: float = MIN_DEPTH,
    max_depth: float = MAX_DEPTH,
    mask: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Dense SILog between metric depth ``pred`` and ``gt`` (same shape, e.g. [B,1,H,W]).

    ``mask`` (optional, bool, same shape) further restricts the valid pixels. Returns a scalar;
    zero (still attached to ``pred``'s graph) when no pixel is valid.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    valid = valid_depth_mask(gt, min_depth, max_depth)
    if mask is not None:
        valid = valid & mask.bool()
    if not bool(valid.any()):
        return pred.sum() * 0.0
    p = pred.float()[valid].clamp_min(min_depth)
    g = torch.log(p) - torch.log(gt.float()[valid])
    var = (g * g).mean() - lam * g.mean() ** 2
    return scale * torch.sqrt(var.clamp_min(eps))


class SILogLoss(nn.Module):
    """Module form of :func:`silog_loss` with λ, scale and the valid depth range configured once."""

    def __init__(
        self,
        lam: float = DEFAULT_LAMBDA,
        scale: float = 10.0,
        min_depth: float = MIN_DEPTH,
        max_depth: float = MAX_DEPTH,
    ) -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"SILog lambda {lam} must be in [0, 1] (0.85 is the usual value)")
        self.lam, self.scale, self.min_depth, self.max_depth = lam, scale, min_depth, max_depth

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return silog_loss(pred, gt, self.lam, self.scale, self.min_depth, self.max_depth, mask)
