"""spd-train: config, schedule, a real short training run, exact resume, DDP, CLI errors."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spd_core.config import ConfigError, load_config
from spd_core.eval.evaluate import main as eval_main
from spd_core.model.checkpoint import load_checkpoint
from spd_core.train.cli import main as train_main
from spd_core.train.state import lr_factor
from spd_core.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
SYNTH_YAML = str(ROOT / "config" / "train_synthetic.yaml")
NYU_YAML = str(ROOT / "config" / "train_nyu.yaml")

# Tiny runs: atto encoder, 64×96 scenes, 32×64 crops, no workers, no progress bars.
TINY = [
    "model.encoder=convnextv2_atto",
    "data.train={type: synthetic, n: 8, seed: 0, size: [64, 96]}",
    "data.val=null",
    "data.input_size=[64,96]",
    "data.crop=[32,64]",
    "data.batch_size=2",
    "data.num_workers=0",
    "optim.lr=1e-3",
    "optim.warmup_steps=2",
    "train.epochs=3",
    "train.device=cpu",
    "train.progress=false",
    "train.tensorboard=false",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests run one intra-op thread: on a shared, busy CPU two spinning OpenMP threads
    slow these small convolutions down many times; restored afterwards for other test files."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_config_file_overrides_and_types() -> None:
    cfg = load_config(SYNTH_YAML, ["optim.lr=2e-4", "data.train.n=5", "train.amp=off", "optim.grad_clip=null"])
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)  # YAML reads "2e-4" as a string
    assert cfg.data.train == {"type": "synthetic", "n": 5, "seed": 0, "size": [96, 128]}
    assert cfg.train.amp == "off" and cfg.optim.grad_clip is None
    nyu = load_config(NYU_YAML)  # the plan's recipe (§7.4)
    assert nyu.optim.lr == 1e-4 and nyu.optim.lr * nyu.optim.encoder_lr_mult == pytest.approx(1e-5)
    assert nyu.loss.silog_lambda == 0.85 and nyu.data.crop == [416, 544] and nyu.model["encoder"] == "convnextv2_tiny"
    assert nyu.data.train["type"] == "nyu" and nyu.data.val["type"] == "nyu"
    bad = {
        "optim.lrr=1": "optim.lrr",
        "data.batch_size=abc": "data.batch_size",
        "data.train={type: kitti}": "kitti",
        "data.train.bogus=1": "bogus",
        "data.crop=[30,64]": "multiples of 32",
        "model.encoder_dim=3": "model",
        "train.amp=fp8": "train.amp",
        "loss.silog_lambda=2": "silog_lambda",
        "nonsense": "key=value",
    }
    for override, match in bad.items():
        with pytest.raises(ConfigError, match=match):
            load_config(SYNTH_YAML, [override])


def test_warmup_poly_schedule() -> None:
    f = [lr_factor(s, total=100, warmup=10, warmup_start=0.1, power=0.9, end=0.01) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[5] == pytest.approx(0.55) and f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5**0.9) and f[100] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))


def test_trainer_uses_a_local_pretrained_encoder_at_a_tenth_of_the_lr(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(5)
    src = timm.create_model("convnextv2_atto", pretrained=False)
    path = tmp_path / "atto.pth"
    torch.save(src.state_dict(), path)
    overrides = [
        *TINY,
        f"encoder_weights={path}",
        "optim.lr=1e-4",
        "optim.encoder_lr_mult=0.1",
        f"train.output_dir={tmp_path / 'o'}",
    ]
    trainer = Trainer(load_config(None, overrides))
    enc = trainer.model.encoder.state_dict()
    assert torch.equal(enc["stem_0.weight"], src.state_dict()["stem.0.weight"])
    enc_group, dec_group = trainer.optimizer.param_groups
    assert {id(p) for p in enc_group["params"]} == {id(p) for p in trainer.model.encoder.parameters()}
    assert enc_group["lr"] == pytest.approx(0.1 * dec_group["lr"])
    assert dec_group["initial_lr"] == 1e-4 and enc_group["initial_lr"] == pytest.approx(1e-5)


def test_bf16_autocast_on_cpu_trains(tmp_path: Path) -> None:
    trainer = Trainer(load_config(None, [*TINY, "train.amp=bf16", "train.max_steps=2", f"train.output_dir={tmp_path}"]))
    assert trainer.precision == "bf16" and not trainer.scaler.is_enabled()
    before = trainer.model.dense_head.weight.detach().clone()
    losses = trainer.fit()["losses"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not torch.equal(before, trainer.model.dense_head.weight)
    assert load_checkpoint(tmp_path / "last.pt").metadata["precision"] == "bf16"


def test_resume_follows_the_uninterrupted_trajectory(tmp_path: Path) -> None:
    """6 steps straight == 3 steps + resume from last.pt + 3 steps (crosses an epoch boundary)."""
    straight = Trainer(load_config(None, [*TINY, "train.max_steps=6", f"train.output_dir={tmp_path / 'a'}"])).fit()
    first = Trainer(load_config(None, [*TINY, "train.max_steps=3", f"train.output_dir={tmp_path / 'b'}"])).fit()
    ckpt = load_checkpoint(first["last"])
    st = ckpt.metadata["train_state"]
    assert (st["step"], st["epoch"], st["step_in_epoch"]) == (3, 0, 3)
    resumed_trainer = Trainer(
        load_config(
            None, [*TINY, "train.max_steps=6", f"train.output_dir={tmp_path / 'c'}", f"train.resume={first['last']}"]
        )
    )
    assert resumed_trainer.step == 3
    resumed = resumed_trainer.fit()
    assert len(straight["losses"]) == len(resumed["losses"]) == 6
    np.testing.assert_allclose(resumed["losses"][3:], straight["losses"][3:], rtol=1e-6, atol=1e-6)
    assert len(set(straight["losses"])) == 6  # the losses really change from step to step
    a = load_checkpoint(straight["last"]).state_dict
    c = load_checkpoint(resumed["last"]).state_dict
    assert max((a[k].float() - c[k].float()).abs().max().item() for k in a) < 1e-6
    # Resuming without the optimizer/scheduler state would not follow the trajectory.
    fresh = Trainer(load_config(None, [*TINY, "train.max_steps=6", f"train.output_dir={tmp_path / 'd'}"]))
    fresh.model.load_state_dict(ckpt.state_dict)
    fresh.step = fresh.step_in_epoch = 3
    assert not np.allclose(fresh.fit()["losses"], straight["losses"][3:], rtol=1e-4)


def test_short_training_lowers_val_silog_and_checkpoint_evaluates(tmp_path: Path, capsys) -> None:
    """A real CLI run (atto, 64×96, CPU, 50 steps). A random-init encoder needs a few hundred steps
    to beat the mean room layout on held-out scenes (see the report), so the validation set here is
    the 8 training scenes without augmentation: the check is that the whole pipeline learns."""
    out = tmp_path / "run"
    scenes = "{type: synthetic, n: 8, seed: 0, size: [64, 96]}"
    rc = train_main(
        [
            "--config",
            SYNTH_YAML,
            f"train.output_dir={out}",
            "train.device=cpu",
            "train.progress=false",
            f"data.train={scenes}",
            f"data.val={scenes}",
            "data.input_size=[64,96]",
            "data.crop=[64,96]",
            "data.batch_size=4",
            "data.flip=false",
            "data.rotate_deg=0",
            "data.color_jitter=false",
            "train.epochs=25",
            "train.val_at_start=true",
            "train.val_every_epochs=25",
            "optim.lr=1e-3",
            "optim.encoder_lr_mult=0.5",
            "optim.warmup_steps=3",
            "optim.poly_power=0.5",
        ]
    )
    assert rc == 0
    stdout = capsys.readouterr().out
    assert f"checkpoint: {out / 'last.pt'} (best: {out / 'best.pt'})" in stdout and "silog" in stdout
    raw = torch.load(out / "best.pt", map_location="cpu", weights_only=True)  # loads without running code
    ckpt = load_checkpoint(out / "best.pt")
    assert raw["metadata"]["train_state"]["step"] == 25 * 2
    history = ckpt.metadata["val_history"]
    before, after = history[0]["dense"]["silog"], history[-1]["dense"]["silog"]
    print(f"val dense SILog before {before:.2f} after {after:.2f}")
    assert after < 0.7 * before
    assert history[-1]["sparse"]["silog"] < 0.7 * history[0]["sparse"]["silog"]
    assert ckpt.input_size == (64, 96) and ckpt.config.encoder == "convnextv2_atto"
    from spd_core.data import SyntheticRGBD

    assert ckpt.train_focal == pytest.approx(float(SyntheticRGBD(1, size=(64, 96))[0]["focal"]))
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert {"train/silog", "train/lr_decoder", "val_dense/silog", "val_sparse/d1"} <= set(events.Tags()["scalars"])
    assert "val/sample_0" in events.Tags()["images"]
    lr_enc, lr_dec = events.Scalars("train/lr_encoder")[0].value, events.Scalars("train/lr_decoder")[0].value
    assert lr_enc == pytest.approx(0.5 * lr_dec, rel=1e-5)
    # spd-eval on the checkpoint (its recorded val set) reproduces the validation numbers.
    rc = eval_main([str(out / "best.pt"), "--out", str(tmp_path / "eval"), "--figures", "1", "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["dense"]["silog"] == pytest.approx(after, rel=1e-4)
    assert summary["sparse"]["silog"] == pytest.approx(history[-1]["sparse"]["silog"], rel=1e-4)


def test_train_and_eval_from_a_rosbag(tmp_path: Path, capsys) -> None:
    """The rosbag dataset type end to end: a real rosbag2 (sqlite3) of synthetic RGB-D frames."""
    from spd_core.data import write_synthetic_bag

    bag = write_synthetic_bag(tmp_path / "bag", n_frames=4, seed=2, size=(64, 96))
    topics = "depth_topic: /camera/aligned_depth_to_color/image_raw, info_topic: /camera/color/camera_info"
    spec = f"{{type: rosbag, path: {bag}, color_topic: /camera/color/image_raw, {topics}}}"
    tiny = [o for o in TINY if not o.startswith("data.train=")]
    out = tmp_path / "run"
    assert (
        train_main([*tiny, f"data.train={spec}", f"data.val={spec}", "train.max_steps=2", f"train.output_dir={out}"])
        == 0
    )
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.train_focal == pytest.approx(518.8579 * 96 / 640, rel=1e-4)  # from the bag's CameraInfo
    assert ckpt.metadata["data"]["train"]["type"] == "rosbag" and ckpt.metadata["metrics"]["dense"]
    capsys.readouterr()
    rc = eval_main(
        [
            str(out / "last.pt"),
            "--dataset",
            "rosbag",
            "--data",
            f"path={bag}",
            "info_topic=/camera/color/camera_info",
            "--out",
            str(tmp_path / "e"),
            "--figures",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["n_images"] == 4
    assert summary["dense"]["silog"] == pytest.approx(ckpt.metadata["metrics"]["dense"]["silog"], rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_write_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "spd_core.train.cli",
        *TINY,
        "train.max_steps=3",
        f"train.output_dir={out}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint:") == 1  # rank 0 reports, rank 1 stays quiet
    ckpt = load_checkpoint(out / "last.pt")
    st = ckpt.metadata["train_state"]
    assert st["world_size"] == 2 and st["step"] == 3 and ckpt.input_size == (64, 96)
    # 8 images / (2 ranks × batch 2) = 2 steps per epoch: step 3 is the first of epoch 1.
    assert (st["epoch"], st["step_in_epoch"]) == (1, 1)
    model = ckpt.build_model()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_train_cli_errors(tmp_path: Path, capsys) -> None:
    assert train_main(["--config", SYNTH_YAML, "optim.lrr=1"]) == 2
    assert "optim.lrr" in _one_line_error(capsys)
    assert train_main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in _one_line_error(capsys)
    nyu = [f"data.train={{type: nyu, data_root: {tmp_path / 'nyu'}, filelist: {tmp_path / 'f.txt'}}}"]
    assert train_main([*TINY, *nyu, f"train.output_dir={tmp_path / 'o'}"]) == 2
    assert "data_root" in _one_line_error(capsys)
    assert train_main([*TINY, f"train.output_dir={tmp_path / 'o'}", "--resume", str(tmp_path / "x.pt")]) == 2
    assert "x.pt" in _one_line_error(capsys)
    assert train_main([*TINY, "train.amp=fp16", f"train.output_dir={tmp_path / 'o'}"]) == 2
    assert "fp16" in _one_line_error(capsys)
    assert train_main([*TINY, "data.batch_size=64", f"train.output_dir={tmp_path / 'o'}"]) == 2
    assert "batch" in _one_line_error(capsys)
    assert train_main([*TINY, f"encoder_weights={tmp_path / 'w.pth'}", f"train.output_dir={tmp_path / 'o'}"]) == 2
    assert "w.pth" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as e:
        train_main(["--help"])
    assert e.value.code == 0 and "spd-train" in capsys.readouterr().out


def test_a_second_run_into_the_same_dir_is_refused_unless_resumed_or_overwritten(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    val = "data.val={type: synthetic, n: 2, seed: 1, size: [64, 96]}"
    assert train_main([*TINY, val, "train.max_steps=1", f"train.output_dir={out}"]) == 0
    before = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt")}
    capsys.readouterr()
    assert train_main([*TINY, val, "train.max_steps=1", f"train.output_dir={out}"]) == 2
    err = _one_line_error(capsys)
    assert "earlier run (last.pt, best.pt)" in err and "--overwrite" in err and "--resume" in err
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing replaced
    # --resume of that run continues it in place
    assert (
        train_main([*TINY, val, "train.max_steps=2", "--output-dir", str(out), "--resume", str(out / "last.pt")]) == 0
    )
    assert load_checkpoint(out / "last.pt").metadata["train_state"]["step"] == 2
    capsys.readouterr()
    assert train_main([*TINY, "--output-dir", str(out), "--resume", str(out / "last.pt"), "--overwrite"]) == 2
    assert "drop one" in _one_line_error(capsys)
    # --overwrite replaces it: the earlier best.pt is gone (this run has no validation to write one)
    assert train_main([*TINY, "train.max_steps=1", f"train.output_dir={out}", "--overwrite"]) == 0
    assert not (out / "best.pt").exists()
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.metadata["train_state"]["step"] == 1 and ckpt.metadata["data"]["val"] is None


def test_output_dir_that_is_a_file_is_refused_before_training(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    assert train_main([*TINY, f"train.output_dir={afile}"]) == 2
    assert "is a file" in _one_line_error(capsys)
    assert train_main([*TINY, f"train.output_dir={afile / 'run'}"]) == 2
    assert "cannot create" in _one_line_error(capsys)
    assert afile.read_text() == "keep me" and sorted(tmp_path.iterdir()) == [afile]


@pytest.mark.parametrize("lr", [".inf", "inf", "nan", "-.inf", "0", "-1e-3"])
def test_non_finite_or_non_positive_lr_is_refused(tmp_path: Path, capsys, lr: str) -> None:
    out = tmp_path / "run"
    assert train_main([*TINY, f"optim.lr={lr}", f"train.output_dir={out}"]) == 2
    err = _one_line_error(capsys)
    assert "optim.lr" in err and ("finite" in err or "> 0" in err), err
    assert not out.exists()


def test_a_diverging_run_stops_with_one_line_and_writes_no_best(tmp_path: Path, capsys) -> None:
    """lr 1e30: the first step blows the weights up, the second step's loss is NaN/inf."""
    out = tmp_path / "run"
    val = "data.val={type: synthetic, n: 2, seed: 1, size: [64, 96]}"
    assert train_main([*TINY, val, "optim.lr=1e30", "optim.warmup_steps=0", f"train.output_dir={out}"]) == 1
    err = _one_line_error(capsys)
    assert err.startswith("spd-train: error: training diverged at step 2:") and "optim.lr" in err, err
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()
