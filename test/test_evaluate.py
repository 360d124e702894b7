"""spd-eval: both protocols through DepthPredictor, outputs, figures, CLI errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import random_model

from spd_core.data import SyntheticRGBD, render_scene
from spd_core.eval.evaluate import evaluate_image, main
from spd_core.eval.figures import colorize, depth_panel
from spd_core.eval.metrics import METRIC_NAMES, compute_errors, valid_mask
from spd_core.model.checkpoint import make_checkpoint, save_checkpoint
from spd_core.predictor import DepthPredictor

MODEL_SIZE = (64, 96)
VAL_SPEC = {"type": "synthetic", "n": 4, "seed": 3, "size": [96, 128]}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread (robust on a shared, busy CPU); restored for other test files."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory: pytest.TempPathFactory):
    model = random_model(size=MODEL_SIZE)
    focal = float(SyntheticRGBD(1, seed=0, size=(96, 128))[0]["focal"]) * MODEL_SIZE[1] / 128
    ckpt = make_checkpoint(model, train_focal=focal, input_size=MODEL_SIZE, metadata={"data": {"val": VAL_SPEC}})
    path = tmp_path_factory.mktemp("eval") / "model.pt"
    save_checkpoint(path, ckpt)
    return path


@pytest.mark.parametrize("eigen", [True, False])
def test_sparse_protocol_equals_dense_at_the_same_pixels(ckpt_path, eigen: bool) -> None:
    """Images at 96×128, model at 64×96: the query path and the resized dense map still agree."""
    predictor = DepthPredictor.from_checkpoint(str(ckpt_path), device="cpu")
    data = SyntheticRGBD(3, seed=5, size=(96, 128))
    for i in range(len(data)):
        sample = data[i]
        res, out = evaluate_image(predictor, sample, i, k=128, seed=0, use_eigen_crop=eigen)
        u, v = out.uv[:, 0], out.uv[:, 1]
        gt = sample["depth"]
        assert res.n_query == 128 and valid_mask(gt, eigen)[v, u].all()
        assert np.std(np.log(out.pred)) > 0.1  # a map that varies: agreement is not trivial
        np.testing.assert_allclose(out.query_depth, out.pred[v, u], rtol=2e-5)
        restricted = compute_errors(out.pred[v, u], gt[v, u])
        for name in METRIC_NAMES:
            assert res.sparse[name] == pytest.approx(restricted[name], rel=1e-5, abs=1e-6), name
        dense = compute_errors(out.pred[out.mask], gt[out.mask])
        assert res.dense == pytest.approx(dense)


def test_eval_cli_writes_table_csv_json_and_figures(ckpt_path, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    rc = main([str(ckpt_path), "--out", str(out), "--k", "32", "--figures", "1", "--no-progress", "--device", "cpu"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "abs_rel" in stdout and "\ndense " in stdout and "\nsparse " in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == VAL_SPEC["n"] and summary["k"] == 32 and summary["dataset"] == VAL_SPEC
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == VAL_SPEC["n"] and all(int(r["n_query"]) == 32 for r in rows)
    for proto in ("dense", "sparse"):
        for name in METRIC_NAMES:
            col = [float(r[f"{proto}_{name}"]) for r in rows]
            assert math.isfinite(summary[proto][name])
            assert summary[proto][name] == pytest.approx(np.mean(col), rel=1e-9), (proto, name)
            assert f"{summary[proto][name]:.4f}" in stdout
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    worst = max(rows, key=lambda r: float(r["dense_abs_rel"]))
    best = min(rows, key=lambda r: float(r["dense_abs_rel"]))
    assert figs == sorted([f"best1_{int(best['index']):05d}.png", f"worst1_{int(worst['index']):05d}.png"])
    assert (out / "figures" / figs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_cli_explicit_dataset(ckpt_path, tmp_path, capsys) -> None:
    out = tmp_path / "e2"
    rc = main(
        [
            str(ckpt_path),
            "--dataset",
            "synthetic",
            "--data",
            "n=2",
            "seed=9",
            "size=[64,96]",
            "--out",
            str(out),
            "--figures",
            "0",
            "--no-progress",
            "--eigen-crop",
            "on",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 2 and summary["eigen_crop"] is True and summary["dataset"]["size"] == [64, 96]


def test_eval_cli_on_nyu_layout_uses_eigen_crop(ckpt_path, tmp_path, capsys) -> None:
    """A two-image NYU (BTS layout) test split at 480×640: Eigen crop on by default, mm PNG depth."""
    from PIL import Image

    root = tmp_path / "nyu"
    (root / "room").mkdir(parents=True)
    lines, gts = [], []
    for i in range(2):
        s = render_scene(40 + i, (480, 640))
        Image.fromarray(s["image"]).save(root / "room" / f"rgb_{i:05d}.png")
        mm = np.round(s["depth"] * 1000).astype(np.uint16)
        Image.fromarray(mm).save(root / "room" / f"sync_depth_{i:05d}.png")
        gts.append(mm.astype(np.float32) / 1000)
        lines.append(f"room/rgb_{i:05d}.png room/sync_depth_{i:05d}.png 518.8579")
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "e"
    rc = main(
        [
            str(ckpt_path),
            "--dataset",
            "nyu",
            "--data",
            f"data_root={root}",
            f"filelist={tmp_path / 'test.txt'}",
            "--out",
            str(out),
            "--figures",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eigen_crop"] is True and summary["n_images"] == 2
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    for r, gt in zip(rows, gts, strict=True):
        assert int(r["n_valid"]) == valid_mask(gt, use_eigen_crop=True).sum() < valid_mask(gt, False).sum()
        assert r["name"].startswith("room/rgb_")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_eval_cli_errors(ckpt_path, tmp_path, capsys) -> None:
    assert main([str(tmp_path / "missing.pt")]) == 2
    assert "not found" in _one_line_error(capsys)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert main([str(bad)]) == 2
    assert "corrupt" in _one_line_error(capsys)
    nyu = ["--dataset", "nyu", "--data", f"data_root={tmp_path / 'nyu'}", f"filelist={tmp_path / 'l.txt'}"]
    assert main([str(ckpt_path), *nyu]) == 2
    assert "data_root" in _one_line_error(capsys)
    assert main([str(ckpt_path), "--dataset", "rosbag", "--data", f"path={tmp_path / 'no_bag'}"]) == 2
    assert "no_bag" in _one_line_error(capsys)
    assert main([str(ckpt_path), "--dataset", "synthetic", "--data", "bogus=1"]) == 2
    assert "bogus" in _one_line_error(capsys)
    assert main([str(ckpt_path), "--data", "n=3"]) == 2
    assert "--dataset" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "spd-eval" in capsys.readouterr().out


def test_figure_helpers() -> None:
    depth = np.array([[0.0, 1.0], [np.nan, 3.0]], np.float32)
    rgb = colorize(depth, 1.0, 3.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert (rgb[0, 0] == 0).all() and (rgb[1, 0] == 0).all() and rgb[0, 1].any() and rgb[1, 1].any()
    assert not np.array_equal(rgb[0, 1], rgb[1, 1])
    panel = depth_panel(np.zeros((2, 2, 3), np.uint8), depth, depth)
    assert panel.shape == (2, 6, 3) and np.array_equal(panel[:, 2:4], panel[:, 4:6])
