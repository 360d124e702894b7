"""Full DPT dense decoder (D=64, four fusion levels) on the SPD encoder: the cost we avoid.

Plan §11.3 "Full DPT dense decoder (D=64) breakdown": LN projections of all four encoder
levels, ``refinenet4`` … ``refinenet1`` (FeatureFusionBlocks with RCUs) up to stride 2,
≈ 3,219M MACs at 416×544. Built from the very blocks of :mod:`spd_core.model.fpn`; only a minimal
head is added so that it outputs a depth map (Conv1×1(D→1) at stride 2, ×2 bilinear, exp),
whose MACs are reported separately. Used by ``spd-bench`` for comparison, never trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from spd_core.model.fpn import FeatureFusionBlock, ProjectLN
from spd_core.model.spd_model import DEPTH_PRIOR_M


class DPTReferenceDecoder(nn.Module):
    """L1..L4 [B,Ci,H/si,W/si] (si = 4, 8, 16, 32) -> metric depth [B,1,H,W]."""

    def __init__(self, in_dims: tuple[int, int, int, int], dim: int = 64) -> None:
        super().__init__()
        c1, c2, c3, c4 = in_dims
        self.proj_l1 = ProjectLN(c1, dim)
        self.proj_l2 = ProjectLN(c2, dim)
        self.proj_l3 = ProjectLN(c3, dim)
        self.proj_l4 = ProjectLN(c4, dim)
        self.refinenet4 = FeatureFusionBlock(dim, has_skip=False)
        self.refinenet3 = FeatureFusionBlock(dim, has_skip=True)
        self.refinenet2 = FeatureFusionBlock(dim, has_skip=True)
        self.refinenet1 = FeatureFusionBlock(dim, has_skip=True)
        self.head = nn.Conv2d(dim, 1, kernel_size=1)
        nn.init.constant_(self.head.bias, math.log(DEPTH_PRIOR_M))

    def features(self, l1: torch.Tensor, l2: torch.Tensor, l3: torch.Tensor, l4: torch.Tensor) -> torch.Tensor:
        """The plan's 3,219M-MAC part: projections + 4 refinenets -> [B,D,H/2,W/2]."""
        f1, f2, f3, f4 = self.proj_l1(l1), self.proj_l2(l2), self.proj_l3(l3), self.proj_l4(l4)
        h4, w4 = f1.shape[-2:]
        r4 = self.refinenet4(f4, size=f3.shape[-2:])
        r3 = self.refinenet3(r4, size=f2.shape[-2:], skip=f3)
        r2 = self.refinenet2(r3, size=f1.shape[-2:], skip=f2)
        return self.refinenet1(r2, size=(2 * h4, 2 * w4), skip=f1)

    def forward(self, l1: torch.Tensor, l2: torch.Tensor, l3: torch.Tensor, l4: torch.Tensor) -> torch.Tensor:
        x = self.head(self.features(l1, l2, l3, l4))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return x.float().exp()


def dpt_for(encoder: nn.Module, dim: int = 64) -> DPTReferenceDecoder:
    """A DPT reference decoder sized for a timm ``features_only`` encoder (channels from feature_info)."""
    c1, c2, c3, c4 = encoder.feature_info.channels()
    return DPTReferenceDecoder((c1, c2, c3, c4), dim)
