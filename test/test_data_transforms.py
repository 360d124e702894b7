"""Train / eval transforms: shapes, the BTS recipe's geometry, reproducible and per-worker randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import EvalTransform

from spd_core.data import DataError, TrainTransform, render_scene
from spd_core.data.transforms import rotate
from spd_core.preprocess import IMAGENET_MEAN, IMAGENET_STD

SIZE = (64, 80)
CROP = (48, 64)


def _rgb(out: dict) -> np.ndarray:
    """Un-normalised RGB [h,w,3] in [0,1] of a transform output."""
    img = out["image"].numpy().transpose(1, 2, 0)
    return img * np.array(IMAGENET_STD, np.float32) + np.array(IMAGENET_MEAN, np.float32)


def _plain(**kw) -> TrainTransform:
    return TrainTransform(**{"crop": CROP, "rotate_deg": 0.0, "flip": False, "color_jitter": False, **kw})


def test_output_shapes_dtypes_and_focal() -> None:
    s = render_scene(7, SIZE)
    for out in (TrainTransform(crop=CROP, seed=0)(s), EvalTransform()(s)):
        h, w = out["image"].shape[-2:]
        assert out["image"].dtype == torch.float32 and out["image"].shape == (3, h, w)
        assert out["depth"].dtype == torch.float32 and out["depth"].shape == (1, h, w)
        assert out["focal"].dtype == torch.float32 and out["focal"].shape == () and out["name"] == s["name"]
        assert float(out["focal"]) == pytest.approx(s["focal"])  # crops / flips / rotations keep the focal
    assert TrainTransform(crop=CROP, seed=0)(s)["image"].shape == (3, *CROP)
    batch = torch.utils.data.default_collate([EvalTransform()(s), EvalTransform()(render_scene(8, SIZE))])
    assert batch["image"].shape == (2, 3, *SIZE) and batch["focal"].shape == (2,) and len(batch["name"]) == 2


def test_eval_transform_normalises_and_resizes_image_only() -> None:
    s = render_scene(9, SIZE)
    out = EvalTransform()(s)
    np.testing.assert_allclose(_rgb(out), s["image"] / 255.0, atol=1e-6)  # ImageNet mean / std, nothing else
    assert torch.equal(out["depth"][0], torch.from_numpy(s["depth"]))
    small = EvalTransform((32, 64))(s)
    assert small["image"].shape == (3, 32, 64) and small["depth"].shape == (1, *SIZE)
    with pytest.raises(DataError, match="multiples of 32"):
        EvalTransform((50, 64))


def test_crop_is_a_window_within_bounds() -> None:
    s = render_scene(3, SIZE)
    d = s["depth"]
    seen = set()
    for seed in range(12):
        out = _plain(seed=seed)(s)["depth"][0].numpy()
        hits = [
            (y, x)
            for y in range(SIZE[0] - CROP[0] + 1)
            for x in range(SIZE[1] - CROP[1] + 1)
            if np.array_equal(d[y : y + CROP[0], x : x + CROP[1]], out)
        ]
        assert hits, f"seed {seed}: the crop is no window of the input"
        seen.add(hits[0])
    assert len(seen) > 3  # the offset is random
    full = _plain(crop=SIZE, seed=0)(s)  # crop == image size: the only window is the image itself
    assert torch.equal(full["depth"][0], torch.from_numpy(d))
    np.testing.assert_allclose(_rgb(full), s["image"] / 255.0, atol=1e-6)
    with pytest.raises(DataError, match="smaller than the crop"):
        TrainTransform(crop=(SIZE[0] + 1, SIZE[1]))(s)


def test_flip_moves_image_and_depth_together() -> None:
    s = render_scene(8, SIZE)
    plain = _plain(crop=SIZE)(s)
    outs = [_plain(crop=SIZE, flip=True, seed=i)(s) for i in range(10)]
    flipped = [o for o in outs if not torch.equal(o["depth"], plain["depth"])]
    assert 0 < len(flipped) < len(outs)  # a coin per sample
    for o in flipped:
        assert torch.equal(o["depth"], plain["depth"].flip(-1)) and torch.equal(o["image"], plain["image"].flip(-1))


def test_rotation_uses_nearest_for_depth_and_keeps_image_aligned() -> None:
    s = render_scene(5, SIZE)
    out = TrainTransform(crop=CROP, rotate_deg=10.0, flip=False, color_jitter=False, seed=1)(s)
    assert set(np.unique(out["depth"].numpy())) <= set(np.unique(s["depth"])) | {0.0}  # no invented depths
    # blocky random field: the same angle and centre for image and depth means they still agree
    rng = np.random.default_rng(0)
    field = np.kron(rng.integers(1, 255, (8, 10)), np.ones((8, 8))).astype(np.uint8)
    img, dep = rotate(np.repeat(field[:, :, None], 3, 2), field.astype(np.float32), 7.0)
    assert not np.array_equal(dep, field)
    assert set(np.unique(dep)) <= set(np.unique(field).astype(np.float32)) | {0.0}
    inside = dep > 0
    agree = np.abs(img[:, :, 0].astype(float) - dep) < 3
    assert agree[inside].mean() > 0.8
    _, opposite = rotate(img, field.astype(np.float32), -7.0)
    assert (np.abs(img[:, :, 0].astype(float) - opposite) < 3)[inside & (opposite > 0)].mean() < 0.7


def test_photometric_jitter_changes_colours_not_geometry() -> None:
    s = render_scene(4, SIZE)
    base = _plain(crop=SIZE)(s)
    jit = TrainTransform(crop=SIZE, rotate_deg=0.0, flip=False, seed=3)(s)
    assert torch.equal(jit["depth"], base["depth"])
    rgb = _rgb(jit)
    assert not np.allclose(rgb, _rgb(base), atol=1e-3)
    assert rgb.min() >= -1e-6 and rgb.max() <= 1 + 1e-6  # clipped to [0, 1] before normalising


def test_reproducible_with_a_seed_and_with_an_assigned_generator() -> None:
    s = render_scene(6, SIZE)
    a, b, c = (TrainTransform(crop=CROP, seed=k)(s) for k in (11, 11, 12))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    assert not torch.equal(a["image"], c["image"])
    t = TrainTransform(crop=CROP)
    t.rng = np.random.default_rng(np.random.SeedSequence([0, 2, 5]))  # what EpochSeededDataset does
    first = t(s)
    t.rng = np.random.default_rng(np.random.SeedSequence([0, 2, 5]))
    assert torch.equal(first["image"], t(s)["image"])


class _Same(torch.utils.data.Dataset):
    """The same sample at every index, so only the transform's randomness tells items apart."""

    def __init__(self, transform: TrainTransform) -> None:
        self.sample, self.transform = render_scene(1, (40, 48)), transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return self.transform(self.sample)


def test_dataloader_workers_get_distinct_streams() -> None:
    ds = _Same(TrainTransform(crop=(32, 32), seed=0))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)  # worker w gets items w, w + 2
    first = [b["image"] for b in loader]
    assert not torch.equal(first[0], first[1])  # item 0 (worker 0) vs item 1 (worker 1)
    torch.manual_seed(0)
    again = [b["image"] for b in loader]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))  # reproducible with the torch seed
