"""Training-side properties of the model: gradients and mixed precision."""

from __future__ import annotations

import pytest
import torch
from helpers import random_model

from spd_core import SPDModel


@pytest.fixture(scope="module")
def model() -> SPDModel:
    return random_model("convnextv2_atto", seed=4)


def test_gradients_reach_every_parameter_through_decode_dense(model: SPDModel) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    depth = model(torch.randn(2, 3, 64, 96))
    assert depth.shape == (2, 1, 64, 96) and (depth > 0).all()
    target = torch.rand_like(depth) + 1.0
    ((depth.log() - target.log()) ** 2).mean().backward()
    model.eval()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
    decoder = [*model.fpn.named_parameters(), *model.local.named_parameters(), *model.dense_head.named_parameters()]
    for name, p in decoder:
        assert p.grad.abs().sum() > 0, f"zero gradient at decoder parameter {name}"
    for stage in ("stem_0", "stages_0", "stages_1", "stages_2", "stages_3"):
        g = sum(p.grad.abs().sum() for n, p in model.encoder.named_parameters() if n.startswith(stage))
        assert g > 0, f"zero gradient in encoder {stage}"


def test_bf16_autocast_on_cpu_stays_close_to_fp32(model: SPDModel) -> None:
    x, uv = torch.randn(1, 3, 64, 96), torch.rand(1, 50, 2) * torch.tensor([95.0, 63.0])
    with torch.no_grad():
        ref = model.query(model.encode(x), uv)
        feats = model.encode(x, precision="bf16")
        assert feats.local_s8.dtype == torch.bfloat16
        low = model.query(feats, uv, precision="bf16")
        dense = model.decode_dense(feats, precision="bf16")
    assert low.dtype == torch.float32 and dense.dtype == torch.float32
    assert ((low - ref).abs() / ref).median() < 0.05
    assert not torch.equal(low, ref)  # autocast really ran in bf16


def test_fp16_on_cpu_is_refused(model: SPDModel) -> None:
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        model.encode(torch.randn(1, 3, 64, 96), precision="fp16")
