"""The CUDA path (issue 14): exactness of every query execution on the GPU in fp32, bf16 and fp16,
and the predictor on CUDA against the CPU. Skipped without a GPU; run by scripts/gpu_check.sh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_model
from test_model_exact import bilinear, query_points
from test_query_plan import FORCE

from spd_core.model.spd_model import FrameFeatures
from spd_core.predictor import DepthPredictor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
# query vs bilinear(dense) in the same precision: fp32 to round-off; half precisions run the
# window and the dense convs with different accumulation orders
TOL = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 1e-2}


@pytest.mark.parametrize("precision", list(TOL))
@pytest.mark.parametrize(("encoder", "size"), [("convnextv2_atto", (416, 544)), ("convnextv2_tiny", (480, 640))])
@pytest.mark.parametrize("mode", list(FORCE))
def test_exact_on_cuda(encoder: str, size: tuple[int, int], precision: str, mode: str) -> None:
    model = random_model(encoder, size=(64, 96), seed=3).to(CUDA)
    h, w = size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(4)).to(CUDA)
    with torch.no_grad():
        feats = model.encode(x, precision)
        dense = model.decode_dense(feats, precision)
        uv = query_points(h, w, 2).to(CUDA)
        q, plan = model.execute(FrameFeatures(feats.l1, feats.local_s8, feats.size), uv, precision, costs=FORCE[mode])
    err = ((q - bilinear(dense, uv)).abs().max() / dense.abs().mean()).item()
    assert err <= TOL[precision], f"{encoder} {h}x{w} {precision} {plan.mode}: max relative error {err:.2e}"


def test_predictor_on_cuda_equals_cpu() -> None:
    model = random_model("convnextv2_atto", size=(64, 96), seed=5)
    cpu = DepthPredictor(model, 100.0, 64 * 96, "cpu", planner="windows")
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    uv = np.random.default_rng(1).uniform(0, 119, (64, 2)).astype(np.float32)
    want = cpu.query(cpu.encode(img, fx=200.0), uv)
    gpu = DepthPredictor(random_model("convnextv2_atto", size=(64, 96), seed=5), 100.0, 64 * 96, "cuda")
    assert gpu.calibrate() is not None and gpu.calibrate().unit == "ms"
    np.testing.assert_allclose(gpu.query(gpu.encode(img, fx=200.0), uv), want, rtol=1e-4)
