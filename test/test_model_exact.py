"""DESIGN §1 contract: query(feats, uv) == bilinear sample of decode_dense(feats) at uv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_model

from spd_core import SPDModel
from spd_core.model.spd_model import FrameFeatures

REL_TOL = 1e-4


def bilinear(depth: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Reference: sample [B,1,H,W] at uv [B,K,2] (pixel centres at integers) -> [B,K]."""
    h, w = depth.shape[-2:]
    grid = torch.stack([uv[..., 0] / (w - 1) * 2 - 1, uv[..., 1] / (h - 1) * 2 - 1], -1)[:, :, None]
    return F.grid_sample(depth, grid, mode="bilinear", align_corners=True)[:, 0, :, 0]


def query_points(h: int, w: int, b: int, n_random: int = 200, seed: int = 0) -> torch.Tensor:
    """Corners, every border (integer and sub-pixel), interior integers, random sub-pixel: [B,K,2]."""
    g = torch.Generator().manual_seed(seed)
    fixed = [
        (0, 0),
        (w - 1, 0),
        (0, h - 1),
        (w - 1, h - 1),  # corners
        (w - 1.5, h - 1.25),
        (0.25, h - 1),
        (w - 1, 0.75),
        (0.5, 0.5),  # sub-pixel at borders
        (1, 1),
        (w - 2, h - 2),
        (7, 3),
        (w // 2, h // 2),
        (w // 2 + 0.5, h // 2 - 0.5),
    ]
    edges = []
    for t in torch.linspace(0, 1, 9).tolist():
        edges += [(t * (w - 1), 0), (t * (w - 1), h - 1), (0, t * (h - 1)), (w - 1, t * (h - 1))]
    pts = torch.tensor(fixed + edges, dtype=torch.float32)
    rnd = torch.rand(b, n_random, 2, generator=g) * torch.tensor([w - 1, h - 1])
    ints = torch.stack([torch.randint(0, w, (b, 50), generator=g), torch.randint(0, h, (b, 50), generator=g)], -1)
    return torch.cat([pts[None].expand(b, -1, -1), rnd, ints.float()], 1)


def assert_exact(model: SPDModel, h: int, w: int, b: int = 2, seed: int = 0) -> None:
    x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        feats = model.encode(x)
        dense = model.decode_dense(feats)
        uv = query_points(h, w, b, seed=seed)
        q = model.query(feats, uv)
    log_std = dense.log().std().item()
    assert log_std > 0.1, f"depth too flat for a meaningful test (log std {log_std:.3f})"
    err = ((q - bilinear(dense, uv)).abs().max() / dense.abs().mean()).item()
    assert err <= REL_TOL, f"{model.config.encoder} {h}x{w}: max relative error {err:.2e}"


@pytest.fixture(scope="module")
def atto() -> SPDModel:
    return random_model("convnextv2_atto", size=(64, 96), seed=1)


@pytest.mark.parametrize("size", [(64, 96), (416, 544), (480, 640)])
def test_query_equals_dense_atto(atto: SPDModel, size: tuple[int, int]) -> None:
    assert_exact(atto, *size)


@pytest.mark.parametrize("align_corners", [True, False])
def test_query_equals_dense_both_upsampling_conventions(align_corners: bool) -> None:
    model = random_model("convnextv2_atto", size=(96, 64), seed=2, align_corners=align_corners)
    assert_exact(model, 96, 64, seed=3)  # portrait, non-square: rows and columns not confused
    assert_exact(model, 32, 32, seed=4)  # smallest input: every window hangs over every border


def test_query_equals_dense_tiny() -> None:
    assert_exact(random_model("convnextv2_tiny", size=(64, 96), seed=5), 64, 96, b=2, seed=5)


def test_query_is_the_bilinear_sample_of_neighbouring_pixels(atto: SPDModel) -> None:
    """At a sub-pixel point the answer is the weighted mean of the 4 integer-pixel answers."""
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = atto.encode(x)
        corners = atto.query(feats, torch.tensor([[[10.0, 20.0], [11.0, 20.0], [10.0, 21.0], [11.0, 21.0]]]))[0]
        mid = atto.query(feats, torch.tensor([[[10.25, 20.75]]]))[0, 0]
    expect = (corners[0] * 0.75 + corners[1] * 0.25) * 0.25 + (corners[2] * 0.75 + corners[3] * 0.25) * 0.75
    assert torch.isclose(mid, expect, rtol=1e-5)
    assert corners.std() > 0  # neighbouring pixels really differ


def test_outside_and_non_finite_queries_are_nan(atto: SPDModel) -> None:
    h, w = 64, 96
    with torch.no_grad():
        feats = atto.encode(torch.randn(1, 3, h, w))
        uv = torch.tensor(
            [
                [
                    [-0.01, 5],
                    [w - 1 + 1e-3, 5],
                    [5, -1],
                    [5, h],
                    [float("nan"), 3],
                    [3, float("inf")],
                    [0, 0],
                    [w - 1, h - 1],
                ]
            ]
        )
        q = atto.query(feats, uv)[0]
    assert torch.isnan(q[:6]).all()
    assert torch.isfinite(q[6:]).all() and (q[6:] > 0).all()


def test_empty_query_and_chunking(atto: SPDModel) -> None:
    with torch.no_grad():
        feats = atto.encode(torch.randn(2, 3, 64, 96))
        assert atto.query(feats, torch.zeros(2, 0, 2)).shape == (2, 0)
        uv = query_points(64, 96, 2, n_random=37)
        whole = atto.query(feats, uv)
        chunked = atto.query(feats, uv, chunk=7)  # chunk boundaries cross the batch boundary
    torch.testing.assert_close(whole, chunked, rtol=1e-6, atol=0)


def test_any_memory_layout_of_the_frame_maps(atto: SPDModel) -> None:
    """encode keeps l1 and local_s8 channels_last (windows are whole-C-vector gathers from them);
    the same maps in NCHW layout, as hand-built or exported features may be, give the same answers."""
    with torch.no_grad():
        feats = atto.encode(torch.randn(2, 3, 64, 96))
        assert all(t.is_contiguous(memory_format=torch.channels_last) for t in (feats.l1, feats.local_s8))
        nchw = FrameFeatures(feats.l1.contiguous(), feats.local_s8.contiguous(), feats.size)
        assert not nchw.l1.is_contiguous(memory_format=torch.channels_last)
        uv = query_points(64, 96, 2, n_random=40)
        torch.testing.assert_close(atto.query(nchw, uv), atto.query(feats, uv), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(atto.decode_dense(nchw), atto.decode_dense(feats), rtol=1e-5, atol=1e-6)


def test_batch_elements_do_not_mix(atto: SPDModel) -> None:
    """Query of element 1 in a batch == query of that image alone."""
    x = torch.randn(2, 3, 64, 96)
    uv = query_points(64, 96, 2, n_random=20)
    with torch.no_grad():
        both = atto.query(atto.encode(x), uv)
        alone = atto.query(atto.encode(x[1:]), uv[1:])
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_bad_inputs_raise_clear_errors(atto: SPDModel) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        atto.encode(torch.randn(1, 3, 60, 96))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        atto.encode(torch.randn(3, 64, 96))
    feats = atto.encode(torch.randn(1, 3, 64, 96))
    with pytest.raises(ValueError, match="uv must be"):
        atto.query(feats, torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="precision"):
        atto.query(feats, torch.zeros(1, 4, 2), precision="fp8")
