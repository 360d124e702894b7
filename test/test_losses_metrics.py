"""SILog loss and the NYU metrics against hand computations on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spd_core.eval.metrics import (
    METRIC_NAMES,
    compute_errors,
    dense_metrics,
    eigen_crop,
    format_table,
    mean_metrics,
    query_rng,
    sample_query_pixels,
    valid_mask,
)
from spd_core.train.losses import SILogLoss, silog_loss

LN2, LN15 = math.log(2.0), math.log(1.5)


def test_compute_errors_hand_values() -> None:
    m = compute_errors(np.array([1.0, 2.0, 4.0, 3.0]), np.array([2.0, 2.0, 2.0, 2.0]))
    e = [-LN2, 0.0, LN2, LN15]  # ln p − ln gt
    mean_e, mean_e2 = sum(e) / 4, sum(x * x for x in e) / 4
    expected = {
        "abs_rel": (0.5 + 0 + 1 + 0.5) / 4,
        "sq_rel": (1 / 2 + 0 + 4 / 2 + 1 / 2) / 4,
        "rmse": math.sqrt((1 + 0 + 4 + 1) / 4),
        "rmse_log": math.sqrt(mean_e2),
        "log10": (2 * math.log10(2) + math.log10(1.5)) / 4,
        "silog": 100 * math.sqrt(mean_e2 - mean_e**2),
        "d1": 1 / 4,  # ratios 2, 1, 2, 1.5
        "d2": 2 / 4,  # 1.5 < 1.5625
        "d3": 2 / 4,  # 2 > 1.953
    }
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, rel=1e-12), k


def test_predictions_clamped_and_empty_is_nan() -> None:
    m = compute_errors(np.array([20.0, 0.0, np.nan]), np.array([5.0, 0.5, 0.5]))
    # 20 -> 10, 0 -> 1e-3, NaN -> 1e-3
    assert m["abs_rel"] == pytest.approx((5 / 5 + 2 * (0.5 - 1e-3) / 0.5) / 3)
    assert m["d3"] == 0.0
    assert all(math.isnan(v) for v in compute_errors(np.zeros(0), np.zeros(0)).values())


def test_valid_mask_eigen_crop_and_depth_range() -> None:
    assert eigen_crop(480, 640) == (45, 471, 41, 601)
    gt = np.ones((480, 640), np.float32)
    gt[100, 100] = 0.0  # invalid (no depth)
    gt[101, 100] = 10.5  # beyond max depth
    gt[102, 100] = 10.0  # max depth is valid
    gt[103, 100] = 1e-3  # min depth is not (open interval)
    mask = valid_mask(gt)
    assert mask.sum() == 426 * 560 - 3
    assert mask[45, 41] and mask[470, 600] and mask[102, 100]
    assert not (mask[44, 300] or mask[471, 300] or mask[200, 40] or mask[200, 601])
    assert valid_mask(gt, use_eigen_crop=False).sum() == 480 * 640 - 3
    # Other sizes: the same fractions of the image.
    assert eigen_crop(96, 128) == (9, 94, 8, 120)


def test_dense_metrics_ignore_pixels_outside_mask() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 8.0, (480, 640)).astype(np.float32)
    gt[200:210, 300:310] = 0.0
    pred = gt.copy()
    pred[:45] = 100.0  # outside the crop
    pred[200:210, 300:310] = 5.0  # where gt is invalid
    m = dense_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-7) and m["d1"] == 1.0
    pred[300, 300] = 2 * gt[300, 300]  # one wrong pixel inside: abs_rel = 1 / n_valid
    n = valid_mask(gt).sum()
    assert dense_metrics(pred, gt)["abs_rel"] == pytest.approx(1.0 / n, rel=1e-5)
    assert dense_metrics(pred, gt, use_eigen_crop=False)["abs_rel"] > 0.1  # rows 0:45 count now


def test_sample_query_pixels_valid_distinct_seeded() -> None:
    mask = np.zeros((40, 50), bool)
    mask[5:30, 10:20] = True
    uv = sample_query_pixels(mask, 128, query_rng(3, 7))
    assert uv.shape == (128, 2)
    assert mask[uv[:, 1], uv[:, 0]].all()
    assert len({tuple(p) for p in uv}) == 128
    np.testing.assert_array_equal(uv, sample_query_pixels(mask, 128, query_rng(3, 7)))
    assert not np.array_equal(uv, sample_query_pixels(mask, 128, query_rng(3, 8)))
    small = np.zeros((4, 4), bool)
    small[1, 2] = True
    np.testing.assert_array_equal(sample_query_pixels(small, 128, query_rng(0, 0)), [[2, 1]])


def test_mean_metrics_and_table() -> None:
    a = dict.fromkeys(METRIC_NAMES, 1.0)
    b = dict.fromkeys(METRIC_NAMES, 3.0)
    c = dict.fromkeys(METRIC_NAMES, math.nan)
    assert mean_metrics([a, b, c]) == dict.fromkeys(METRIC_NAMES, 2.0)
    table = format_table({"dense": mean_metrics([a, b])})
    assert "abs_rel" in table and "2.0000" in table


def test_silog_loss_hand_value_and_invalid_pixels() -> None:
    gt = torch.tensor([[[[2.0, 2.0], [2.0, 0.0]]], [[[4.0, 1.0], [20.0, 1.0]]]])  # 0 and 20 are invalid
    pred = torch.tensor([[[[1.0, 2.0], [4.0, 7.0]]], [[[4.0, 2.0], [3.0, 0.5]]]], requires_grad=True)
    g = [-LN2, 0.0, LN2, 0.0, LN2, -LN2]  # ln p − ln gt over the 6 valid pixels
    mean_g, mean_g2 = sum(g) / 6, sum(x * x for x in g) / 6
    loss = silog_loss(pred, gt, lam=0.85)
    assert loss.item() == pytest.approx(10 * math.sqrt(mean_g2 - 0.85 * mean_g**2), rel=1e-6)
    loss.backward()
    assert pred.grad[0, 0, 1, 1] == 0 and pred.grad[1, 0, 1, 0] == 0
    assert pred.grad[0, 0, 0, 0] != 0
    # Values at invalid pixels do not matter; λ is configurable; an extra mask restricts further.
    other = pred.detach().clone()
    other[0, 0, 1, 1], other[1, 0, 1, 0] = 123.0, 1e-9
    assert silog_loss(other, gt).item() == pytest.approx(loss.item(), rel=1e-7)
    assert SILogLoss(lam=0.5)(pred, gt).item() == pytest.approx(10 * math.sqrt(mean_g2 - 0.5 * mean_g**2), rel=1e-6)
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[1] = False
    g0 = [-LN2, 0.0, LN2]
    assert silog_loss(pred, gt, mask=mask).item() == pytest.approx(
        10 * math.sqrt(sum(x * x for x in g0) / 3 - 0.85 * (sum(g0) / 3) ** 2), rel=1e-6
    )


def test_silog_loss_scale_invariance_and_empty() -> None:
    gt = torch.rand(2, 1, 8, 8) * 5 + 0.5
    pred = torch.rand(2, 1, 8, 8) * 5 + 0.5
    full = silog_loss(pred, gt, lam=1.0)
    assert silog_loss(pred * 3.0, gt, lam=1.0).item() == pytest.approx(full.item(), rel=1e-4)
    # λ < 1 keeps part of the scale error: pred = 3·gt gives g = ln 3 everywhere.
    assert silog_loss(gt * 3.0, gt, lam=0.85).item() == pytest.approx(10 * math.sqrt(0.15) * math.log(3), rel=1e-5)
    empty = silog_loss(pred.requires_grad_(), torch.zeros_like(gt))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="lambda"):
        SILogLoss(lam=1.5)
