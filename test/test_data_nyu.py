"""NYU Depth V2 in the BTS layout: a tiny tree with both file-list styles, made here with Pillow."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import EvalTransform
from PIL import Image

from spd_core.data import DataError, NYUDepthV2

H, W = 48, 64


def _tree(root: Path) -> dict:
    """sync/<scene>/rgb_*.jpg + sync_depth_*.png (train style) and official_splits/test/<scene>/ (test style)."""
    rng = np.random.default_rng(0)
    out = {}
    for base, scene in ((root / "sync" / "kitchen_0028b", "kitchen"), (root / "official_splits/test/bathroom", "bath")):
        base.mkdir(parents=True)
        depth_mm = rng.integers(500, 9000, (H, W)).astype(np.uint16)
        depth_mm[:5] = 0  # invalid rows
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[:, : W // 2] = (200, 30, 30)  # flat halves survive JPEG well enough to check orientation / colour
        rgb[:, W // 2 :] = (20, 40, 220)
        Image.fromarray(rgb).save(base / "rgb_00045.jpg", quality=95)
        Image.fromarray(depth_mm).save(base / "sync_depth_00045.png")
        out[scene] = (rgb, depth_mm)
    train = root / "nyudepthv2_train_files_with_gt.txt"
    train.write_text(
        "/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n"
        "/kitchen_0028b/rgb_00046.jpg None 518.8579\n"
        "/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 500.0\n"
    )
    test = root / "nyudepthv2_test_files_with_gt.txt"
    test.write_text("bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n\n")
    out["train"], out["test"] = train, test
    return out


def test_train_and_test_list_styles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = _tree(tmp_path)
    with caplog.at_level(logging.INFO, logger="spd_core.data.nyu"):
        train = NYUDepthV2(tmp_path / "sync", t["train"])
    assert len(train) == 2 and "skipped 1 lines without depth" in caplog.text  # the None line
    test = NYUDepthV2(tmp_path / "official_splits/test", t["test"])
    assert len(test) == 1
    for ds, key in ((train, "kitchen"), (test, "bath")):
        rgb, depth_mm = t[key]
        s = ds[0]
        assert s["image"].dtype == np.uint8 and s["image"].shape == (H, W, 3)
        assert np.abs(s["image"].astype(int) - rgb).mean() < 4
        assert s["depth"].dtype == np.float32 and s["depth"].shape == (H, W)
        np.testing.assert_allclose(s["depth"], depth_mm / 1000.0, rtol=1e-6)  # mm -> m
        assert (s["depth"][:5] == 0).all() and (s["depth"][5:] > 0).all()  # 0 stays invalid
        assert s["focal"] == 518.8579
    assert train[1]["focal"] == 500.0  # focal per line
    assert train[0]["name"] == "kitchen_0028b/rgb_00045.jpg" and test[0]["name"] == "bathroom/rgb_00045.jpg"


def test_gt_root_depth_scale_and_transform(tmp_path: Path) -> None:
    t = _tree(tmp_path)
    gt = tmp_path / "gt"
    (tmp_path / "sync").rename(gt)
    (tmp_path / "rgb_only" / "kitchen_0028b").mkdir(parents=True)
    (gt / "kitchen_0028b" / "rgb_00045.jpg").rename(tmp_path / "rgb_only/kitchen_0028b/rgb_00045.jpg")
    ds = NYUDepthV2(tmp_path / "rgb_only", t["train"], gt_root=gt, depth_scale=256.0, transform=EvalTransform())
    s = ds[0]
    assert s["image"].shape == (3, H, W) and s["depth"].shape == (1, H, W)
    np.testing.assert_allclose(s["depth"][0].numpy(), t["kitchen"][1] / 256.0, rtol=1e-6)


def test_errors_name_the_file(tmp_path: Path) -> None:
    t = _tree(tmp_path)
    root = tmp_path / "sync"
    with pytest.raises(DataError, match=r"nope\.txt not found"):
        NYUDepthV2(root, tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"data_root .*missing is not a directory"):
        NYUDepthV2(tmp_path / "missing", t["train"])
    bad = tmp_path / "bad.txt"
    bad.write_text(
        "/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n"
        "/kitchen_0028b/rgb_00099.jpg /kitchen_0028b/sync_depth_00099.png 518.8579\n"
    )
    ds = NYUDepthV2(root, bad)  # the first entry exists: construction is fine
    with pytest.raises(DataError, match=r"kitchen_0028b/rgb_00099\.jpg not found") as e:
        ds[1]
    assert "\n" not in str(e.value)
    bad.write_text("bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n")
    with pytest.raises(DataError, match=r"sync/bathroom/rgb_00045\.jpg not found"):
        NYUDepthV2(root, bad)  # wrong data_root for this list: caught at construction
    for text, err in (
        ("just_one_column.jpg\n", "expected 'rgb depth focal'"),
        ("a.jpg b.png f518\n", "not a number"),
        ("a.jpg None 518.8\n", "no samples with depth"),
    ):
        bad.write_text(text)
        with pytest.raises(DataError, match=err):
            NYUDepthV2(root, bad)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "kitchen_0028b/sync_depth_00045.png")  # 8-bit depth
    with pytest.raises(DataError, match="has mode L; need a 16-bit PNG"):
        NYUDepthV2(root, t["train"])[0]
    (root / "kitchen_0028b/sync_depth_00045.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"cannot read .*sync_depth_00045\.png"):
        NYUDepthV2(root, t["train"])[0]
