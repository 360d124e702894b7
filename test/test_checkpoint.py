"""Checkpoints: bit-exact round trip, one clear error for every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import random_model

from spd_core import ModelConfig, SPDModel
from spd_core.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    make_checkpoint,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def model() -> SPDModel:
    return random_model("convnextv2_atto", seed=3)


@pytest.fixture
def ckpt_path(model: SPDModel, tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    meta = {"data": "synthetic", "metrics": {"abs_rel": 0.12}, "epoch": 3}
    save_checkpoint(path, make_checkpoint(model, train_focal=259.4, input_size=(64, 96), max_depth=8.0, metadata=meta))
    return path


def test_round_trip_is_bit_exact(model: SPDModel, ckpt_path: Path) -> None:
    loaded, ckpt = load_model(ckpt_path)
    assert ckpt.config == model.config
    assert (ckpt.train_focal, ckpt.input_size, ckpt.max_depth) == (259.4, (64, 96), 8.0)
    assert ckpt.metadata["metrics"]["abs_rel"] == 0.12
    ref = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k
    x, uv = torch.randn(1, 3, 64, 96), torch.rand(1, 20, 2) * 60
    with torch.no_grad():
        assert torch.equal(model.query(model.encode(x), uv), loaded.query(loaded.encode(x), uv))
    assert not loaded.training


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file(ckpt_path: Path, damage: str) -> None:
    data = ckpt_path.read_bytes()
    bad = {"garbage": b"\x00not a checkpoint" * 50, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    ckpt_path.write_bytes(bad)
    with pytest.raises(CheckpointError, match="corrupt") as e:
        load_checkpoint(ckpt_path)
    assert "\n" not in str(e.value)


def test_not_an_spd_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not an spd_ros checkpoint"):
        load_checkpoint(path)


def test_version_mismatch(ckpt_path: Path) -> None:
    raw = torch.load(ckpt_path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, ckpt_path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(ckpt_path)


def test_weights_of_another_model(ckpt_path: Path) -> None:
    raw = torch.load(ckpt_path, weights_only=True)
    raw["model_config"]["encoder"] = "convnextv2_femto"
    torch.save(raw, ckpt_path)
    with pytest.raises(CheckpointError, match="do not fit model convnextv2_femto"):
        load_model(ckpt_path)


def test_bad_field(ckpt_path: Path) -> None:
    raw = torch.load(ckpt_path, weights_only=True)
    raw["model_config"]["n_layers"] = 3
    torch.save(raw, ckpt_path)
    with pytest.raises(CheckpointError, match="n_layers"):
        load_checkpoint(ckpt_path)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_runs_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "spd_ros.checkpoint", "x": Payload()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_encoder_weights_from_local_file(tmp_path: Path) -> None:
    """Offline pretrained path: a local timm state dict goes through pretrained_cfg_overlay."""
    import timm

    torch.manual_seed(11)
    src = timm.create_model("convnextv2_atto", pretrained=False)
    path = tmp_path / "convnextv2_atto.pth"
    torch.save(src.state_dict(), path)
    model = SPDModel(ModelConfig(encoder="convnextv2_atto"), encoder_weights=str(path))
    ref = src.state_dict()
    enc = model.encoder.state_dict()
    assert len(enc) > 50
    for k, v in enc.items():
        name = k.replace("stem_", "stem.", 1).replace("stages_", "stages.", 1)  # FeatureListNet names
        assert torch.equal(v, ref[name]), k
    with pytest.raises(FileNotFoundError, match="not found"):
        SPDModel(ModelConfig(encoder="convnextv2_atto"), encoder_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="convnextv2"):
        SPDModel(ModelConfig(encoder="resnet50"))
