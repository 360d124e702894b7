"""Shared test helpers: real timm models with random weights whose depth really varies; a plain
tensor transform for datasets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spd_core import ModelConfig, SPDModel
from spd_core.data import DataError, Sample
from spd_core.data.transforms import to_tensors
from spd_core.model.checkpoint import Checkpoint, make_checkpoint, save_checkpoint


@torch.no_grad()
def vary_decoder(model: SPDModel, x: torch.Tensor, log_std: float = 0.5, seed: int = 0) -> SPDModel:
    """Re-draw the FPN and local-path weights (He-normal, random biases) and scale ``dense_head``
    so that log-depth on ``x`` has std ``log_std``: the default init gives a nearly flat map,
    on which an exactness test could not fail."""
    g = torch.Generator().manual_seed(seed)
    for mod in [*model.fpn.modules(), *model.local.modules()]:
        if isinstance(mod, nn.Conv2d):
            fan_in = mod.weight[0].numel()
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
    model.dense_head.weight.copy_(torch.randn(model.dense_head.weight.shape, generator=g))
    was_training = model.training
    model.eval()
    std = model.decode_dense(model.encode(x.to(model.device))).log().std()
    model.dense_head.weight.mul_(log_std / std)
    model.train(was_training)
    return model


def random_model(
    encoder: str = "convnextv2_atto", size: tuple[int, int] = (64, 96), seed: int = 0, log_std: float = 0.5, **cfg
) -> SPDModel:
    """A real timm ConvNeXt V2 SPDModel with random weights and varied depth (eval mode)."""
    torch.manual_seed(seed)
    model = SPDModel(ModelConfig(encoder=encoder, **cfg)).eval()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    return vary_decoder(model, x, log_std, seed)


def saved_model(
    path: Path, size: tuple[int, int] = (64, 96), seed: int = 0, **ckpt_fields: Any
) -> tuple[SPDModel, Checkpoint]:
    """A :func:`random_model` (convnextv2_atto) trained at ``size``, and its checkpoint with
    ``ckpt_fields`` (e.g. train_focal), written to ``path`` as spd-train would."""
    model = random_model("convnextv2_atto", size=size, seed=seed)
    ckpt = make_checkpoint(model, input_size=size, **ckpt_fields)
    save_checkpoint(path, ckpt)
    return model, ckpt


def colour_variants(rgb: np.ndarray, alpha: int = 9) -> dict[str, np.ndarray]:
    """``rgb`` (uint8 [H,W,3]) laid out as each colour encoding: rgb8, bgr8, rgba8, bgra8 (alpha
    ``alpha``); each decodes back to ``rgb``."""
    a = np.full((*rgb.shape[:2], 1), alpha, np.uint8)
    bgr = rgb[:, :, ::-1]
    return {"rgb8": rgb, "bgr8": bgr, "rgba8": np.concatenate([rgb, a], 2), "bgra8": np.concatenate([bgr, a], 2)}


class EvalTransform:
    """A dataset transform for tests (the product evaluates raw samples through DepthPredictor): no
    augmentation, ``to_tensors``; the image is resized to ``size`` = (h, w) (multiples of 32) when given,
    depth stays at the native resolution for the metrics; the focal stays that of the native image."""

    def __init__(self, size: tuple[int, int] | None = None) -> None:
        if size is not None and (len(size) != 2 or min(size) < 32 or size[0] % 32 or size[1] % 32):
            raise DataError(f"eval size must be (height, width), multiples of 32, got {size}")
        self.size = (int(size[0]), int(size[1])) if size is not None else None

    def __call__(self, s: Sample) -> dict:
        out = to_tensors(s["image"].astype(np.float32) / 255.0, s["depth"], s["focal"], s.get("name", ""))
        if self.size and tuple(out["image"].shape[-2:]) != self.size:
            out["image"] = F.interpolate(
                out["image"][None], size=self.size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        return out
