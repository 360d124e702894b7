"""Checkpoints: bit-exact round trip, one clear error for every kind of bad file."""

from __future__ import annotations

import pickle
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


NAN, INF = float("nan"), float("inf")
# (field, bad value, a word the one-line error must contain); "a.b" is raw["a"]["b"]
BAD_FIELDS = [
    *(("train_focal", v, "train_focal") for v in (NAN, INF, -INF, 0.0, -259.4, "259.4", True, None, [259.4])),
    *(("input_size", v, "input_size") for v in ([0, 0], [-64, 96], [64], [64, 96, 3], [60, 96], [64.0, 96.0])),
    *(("input_size", v, "input_size") for v in ([True, 96], "64x96", None)),
    *(("max_depth", v, "max_depth") for v in (NAN, INF, 0.0, -1.0, "10", False)),
    *(("model_config.encoder", v, "encoder") for v in ("convnextv2_nope", "resnet50", 3, None)),
    *(("model_config.fpn_dim", v, "fpn_dim") for v in ("64", -64, 0, 64.0, True)),
    ("model_config.local_dim", 0, "local_dim"),
    ("model_config.head_dim", "32", "head_dim"),
    ("model_config.align_corners", "no", "align_corners"),
    ("model_config.drop_path_rate", NAN, "drop_path_rate"),
    ("model_config", "convnextv2_atto", "model config"),
    ("state_dict", "weights", "state_dict"),
    ("state_dict", {}, "state_dict"),
    ("state_dict", [1, 2], "state_dict"),
    ("metadata", "notes", "metadata"),
]


def _set_field(raw: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        raw = raw[key]
    raw[leaf] = value


@pytest.mark.parametrize(("name", "value", "word"), BAD_FIELDS, ids=[f"{n}={v!r}" for n, v, _ in BAD_FIELDS])
def test_each_bad_field_is_one_line_naming_it(ckpt_path: Path, name: str, value: object, word: str) -> None:
    raw = torch.load(ckpt_path, weights_only=True)
    _set_field(raw, name, value)
    torch.save(raw, ckpt_path)
    with pytest.raises(CheckpointError) as e:
        load_model(ckpt_path)
    msg = str(e.value)
    assert "\n" not in msg and word in msg and "expected" in msg and str(ckpt_path) in msg, msg


@pytest.mark.parametrize("name", ["train_focal", "input_size", "model_config"])
def test_missing_required_field(ckpt_path: Path, name: str) -> None:
    raw = torch.load(ckpt_path, weights_only=True)
    del raw[name]
    torch.save(raw, ckpt_path)
    with pytest.raises(CheckpointError, match=f"field '{name}' is missing"):
        load_checkpoint(ckpt_path)


def test_max_depth_is_optional(ckpt_path: Path) -> None:
    raw = torch.load(ckpt_path, weights_only=True)
    del raw["max_depth"]
    torch.save(raw, ckpt_path)
    assert load_checkpoint(ckpt_path).max_depth == 10.0


def _damage_weights(raw: dict, how: str) -> str:
    sd = raw["state_dict"]
    key = "dense_head.weight"
    if how == "missing":
        del sd[key]
    elif how == "unexpected":
        sd["extra.weight"] = torch.zeros(3)
    elif how == "shape":
        sd[key] = torch.zeros(1, 5, 1, 1)
    elif how == "nan":
        sd[key] = torch.full_like(sd[key], float("nan"))
    else:  # a value that is no tensor
        sd[key] = sd[key].tolist()
    return {"missing": "1 missing", "unexpected": "1 unexpected", "shape": "[1, 5, 1, 1] vs [1, 32, 1, 1]"}.get(
        how, key
    )


@pytest.mark.parametrize("how", ["missing", "unexpected", "shape", "nan", "list"])
def test_weights_that_do_not_fit_are_one_line(ckpt_path: Path, how: str) -> None:
    raw = torch.load(ckpt_path, weights_only=True)
    word = _damage_weights(raw, how)
    torch.save(raw, ckpt_path)
    with pytest.raises(CheckpointError) as e:
        load_model(ckpt_path)
    msg = str(e.value)
    assert "\n" not in msg and word in msg and str(ckpt_path) in msg, msg


@pytest.mark.parametrize("kind", ["text", "plain_pickle", "pickled_list", "torch_list", "flipped", "directory"])
def test_files_that_are_no_checkpoint(ckpt_path: Path, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.pt"
    if kind == "text":
        path.write_text("model: convnextv2_atto\nfocal: 259.4\n")
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"format": "spd_ros.checkpoint", "version": 1}))
    elif kind == "pickled_list":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    elif kind == "torch_list":
        torch.save([1, 2, 3], path)
    elif kind == "flipped":  # one byte of the zip's end-of-central-directory record flipped
        data = bytearray(ckpt_path.read_bytes())
        data[data.rfind(b"PK\x05\x06")] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.mkdir()
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and len(msg) < 300, msg
    assert any(w in msg for w in ("corrupt", "not an spd_ros checkpoint", "not found")), msg


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
