"""Global path of SPD v15 (plan §5): DPT-style FPN fusion of L2..L4 into ``stride_8_map``.

Blocks are named after DPT (ResidualConvUnit, FeatureFusionBlock) and the plan
(``proj_l4``, ``refinenet4``, ``refinenet3``), so code and plan read side by side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn


class ProjectLN(nn.Sequential):
    """Reassembly: Conv1×1(C→D) followed by LayerNorm over channels. [B,C,h,w] -> [B,D,h,w]."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__(nn.Conv2d(in_dim, dim, kernel_size=1), LayerNorm2d(dim))


class ResidualConvUnit(nn.Module):
    """RCU(x) = x + conv2(GELU(conv1(GELU(x)))), both convs 3×3 D→D with zero padding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class FeatureFusionBlock(nn.Module):
    """DPT fusion: [x + RCU1(skip)] -> RCU2 -> bilinear to ``size`` (align_corners) -> Conv1×1.

    The topmost block (refinenet4) has no skip input and so no RCU1.
    """

    def __init__(self, dim: int, has_skip: bool) -> None:
        super().__init__()
        self.rcu1 = ResidualConvUnit(dim) if has_skip else None
        self.rcu2 = ResidualConvUnit(dim)
        self.out_conv = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.rcu1 is not None:
            if skip is None:
                raise ValueError("this FeatureFusionBlock fuses a skip input; pass skip=")
            x = x + self.rcu1(skip)
        x = self.rcu2(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTFPN(nn.Module):
    """L2 [B,C2,H/8,W/8], L3 [B,C3,H/16,W/16], L4 [B,C4,H/32,W/32] -> stride_8_map [B,D,H/8,W/8].

    The plan's §5.3 code computes ``f2`` but only reads its shape, so L2 would never reach
    ``stride_8_map`` ("multi-scale context from L2+L3+L4") and ``proj_l2`` would get no gradient.
    We add ``f2`` to refinenet3's output — the add of the next DPT fusion step, without its
    RCU — which keeps the plan's parameter count and MACs.
    """

    def __init__(self, in_dims: tuple[int, int, int], dim: int = 64) -> None:
        super().__init__()
        c2, c3, c4 = in_dims
        self.proj_l2 = ProjectLN(c2, dim)
        self.proj_l3 = ProjectLN(c3, dim)
        self.proj_l4 = ProjectLN(c4, dim)
        self.refinenet4 = FeatureFusionBlock(dim, has_skip=False)
        self.refinenet3 = FeatureFusionBlock(dim, has_skip=True)

    def forward(self, l2: torch.Tensor, l3: torch.Tensor, l4: torch.Tensor) -> torch.Tensor:
        f2, f3, f4 = self.proj_l2(l2), self.proj_l3(l3), self.proj_l4(l4)
        r4 = self.refinenet4(f4, size=f3.shape[-2:])
        return self.refinenet3(r4, size=f2.shape[-2:], skip=f3) + f2
