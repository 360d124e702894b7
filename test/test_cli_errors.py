"""Every CLI turns bad arguments and damaged inputs into one line on stderr and exit 2, and creates
nothing: run as real processes (``python -m``, from the repository root), as a user meets them."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from helpers import saved_model

from spd_core.bench.cli import main as bench_main
from spd_core.data import DataError, RosbagRGBD, write_synthetic_bag
from spd_core.eval.evaluate import main as eval_main
from spd_core.train.cli import main as train_main
from spd_ros.bag_eval import main as bag_eval_main
from spd_ros.bench_node import main as bench_node_main
from spd_ros.demo import main as demo_main

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 96)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRAME_ID = b"camera_color_optical_frame"  # the first one in the file is in frame 0's colour Image


def run_all(cases: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Run ``python -m MODULE ARGS...`` for every case at once; (exit code, stderr) per case."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in cases.items()
    }
    return {name: (p.wait(timeout=180), p.stderr.read()) for name, p in procs.items()}


def assert_one_error_line(prog: str, rc: int, stderr: str) -> str:
    """Exit 2, exactly one ``PROG: error:`` line (the last one), no traceback; returns the line."""
    lines = stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith(f"{prog}: error:")]
    assert rc == 2 and len(errors) == 1 and lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    saved_model(path, SIZE, train_focal=100.0)
    return path


@pytest.fixture(scope="module")
def mcap_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_bag(tmp_path_factory.mktemp("bags") / "ok", 5, seed=3, size=SIZE, storage="mcap")


MAINS = {
    "spd-demo": demo_main,
    "spd-eval": eval_main,
    "spd-bag-eval": bag_eval_main,
    "spd-bench": bench_main,
    "spd-bench-node": bench_node_main,
    "spd-train": train_main,
}
BAD_ARGUMENTS = {  # prog -> arguments after its fixed ones; the error line must name the first of them
    "spd-demo": [["--size", "abc"], ["--frames", "-3"], ["--size", "0x320"], ["--input-size", "100x128"]],
    "spd-demo ": [["--rate", "nan"], ["--epochs", "0"], ["--keypoints", "1.5"], ["--bag-hz", "-inf"]],
    "spd-eval": [["--k", "0"], ["--input-size", "30", "64"], ["--max-images", "-1"], ["--figures", "x"]],
    "spd-bag-eval": [["-k", "0"], ["--rate", "0"], ["--tolerance", "inf"], ["--max-frames", "0"]],
    "spd-bench": [["--threads", "0"], ["--chunk", "-1"], ["--warmup", "-2"]],
    "spd-bench-node": [["--queries", "0"], ["--threads", "-1"], ["--encoder", "convnextv2_nope"]],
    "spd-train": [["optim.lr=.inf"], ["optim.lr=nan"], ["optim.lr=0"], ["--bogus"]],
}


def _fixed_arguments(prog: str, out: Path, checkpoint: Path) -> list[str]:
    return {
        "spd-demo": ["--out", str(out)],
        "spd-eval": [str(checkpoint), "--out", str(out)],
        "spd-bag-eval": [str(out.parent / "bag"), "--checkpoint", str(checkpoint), "--out", str(out)],
        "spd-bench": ["--quick", "--out", str(out)],
        "spd-bench-node": ["--out", str(out)],
        "spd-train": [f"train.output_dir={out}"],
    }[prog]


def cli_error(prog: str, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``prog``'s main in this process: exit 2 (returned or from argparse), one stderr line."""
    try:
        rc = MAINS[prog](argv)
    except SystemExit as e:
        rc = e.code
    return assert_one_error_line(prog, rc, capsys.readouterr().err)


CASES = [(prog, bad) for prog, cases in BAD_ARGUMENTS.items() for bad in cases]


@pytest.mark.parametrize(("prog", "bad"), CASES, ids=[f"{p.strip()} {' '.join(b)}" for p, b in CASES])
def test_bad_arguments_are_one_line_and_create_nothing(
    prog: str, bad: list[str], tmp_path: Path, checkpoint: Path, capsys
) -> None:
    prog, out = prog.strip(), tmp_path / "out"
    line = cli_error(prog, [*_fixed_arguments(prog, out, checkpoint), *bad], capsys)
    assert bad[0].split("=")[0] in line, line
    assert not out.exists()


def test_demo_bad_arguments_as_processes_create_no_folder(tmp_path: Path) -> None:
    """The issue's two cases, as a user runs them: before, a traceback after creating the folder."""
    out = tmp_path / "demo"
    res = run_all({a: ["spd_ros.demo", "--out", str(out), a, v] for a, v in (("--size", "abc"), ("--frames", "-3"))})
    for flag, (rc, stderr) in res.items():
        assert f"argument {flag}:" in assert_one_error_line("spd-demo", rc, stderr)
    assert not out.exists()


def test_bad_checkpoint_field_and_an_earlier_run_are_one_line(tmp_path: Path) -> None:
    """As processes: spd-eval on a checkpoint with a NaN focal; spd-train into a directory holding a run."""
    nan_focal = tmp_path / "nan_focal.pt"
    torch.save(
        {"format": "spd_ros.checkpoint", "version": 1, "train_focal": float("nan"), "input_size": [64, 96]}, nan_focal
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"the best weights of last week")
    tiny = ["model.encoder=convnextv2_atto", "train.device=cpu", "train.progress=false", f"train.output_dir={run_dir}"]
    cases = {
        "spd-eval": ["spd_core.eval.evaluate", str(nan_focal), "--out", str(tmp_path / "e")],
        "spd-train": ["spd_core.train.cli", *tiny],
    }
    res = run_all(cases)
    assert "train_focal = nan" in assert_one_error_line("spd-eval", *res["spd-eval"])
    line = assert_one_error_line("spd-train", *res["spd-train"])
    assert "earlier run (best.pt)" in line and "--overwrite" in line
    assert (run_dir / "best.pt").read_bytes() == b"the best weights of last week"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan_focal.pt", "run"]


def test_bad_checkpoint_field_in_bag_eval_is_one_line(mcap_bag: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"format": "spd_ros.checkpoint", "version": 1, "train_focal": 100.0, "input_size": [0, 0]}, bad)
    line = cli_error("spd-bag-eval", [str(mcap_bag), "--checkpoint", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert "input_size = [0, 0]" in line and not (tmp_path / "o").exists()


def _damaged(bag: Path, dst: Path, how: str) -> Path:
    """A copy of ``bag`` whose .mcap is damaged ``how``."""
    shutil.copytree(bag, dst)
    mcap = next(dst.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    i = data.find(FRAME_ID)
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bad_utf8":  # frame_id of the first Image: an invalid UTF-8 lead byte
        data[i] ^= 0x80
    elif how == "bad_string_length":  # the CDR length in front of that frame_id
        data[i - 4 : i] = struct.pack("<I", 0xFFFFFFF0)
    else:  # the length of the first Image's pixel array: 'rgb8' + pad, is_bigendian + pad, step, then it
        j = data.find(b"rgb8") + 12
        data[j : j + 4] = struct.pack("<I", 0x7FFFFFFF)
    mcap.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how", ["truncated", "bad_utf8", "bad_string_length", "bad_array_length"])
def test_bag_eval_on_a_damaged_mcap_is_one_line(
    mcap_bag: Path, checkpoint: Path, tmp_path: Path, how: str, capsys
) -> None:
    bag = _damaged(mcap_bag, tmp_path / "bag", how)
    out = tmp_path / "report"
    line = cli_error("spd-bag-eval", [str(bag), "--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert str(bag) in line and len(line) < 400, line
    assert not out.exists()


def test_bag_eval_on_a_damaged_mcap_as_a_process(mcap_bag: Path, checkpoint: Path, tmp_path: Path) -> None:
    bag = _damaged(mcap_bag, tmp_path / "bag", "bad_utf8")  # before: AnyReaderError traceback
    out = tmp_path / "report"
    rc, stderr = run_all({"x": ["spd_ros.bag_eval", str(bag), "--checkpoint", str(checkpoint), "--out", str(out)]})["x"]
    assert "is damaged" in assert_one_error_line("spd-bag-eval", rc, stderr)
    assert not out.exists()


def test_damaged_mcap_bytes_give_a_dataset_or_one_data_error(mcap_bag: Path, tmp_path: Path) -> None:
    """Seeded fuzz (seed 1313, 120 mutations of 1-4 flipped bytes in the mcap's records outside the
    pixel data): reading every frame either works or raises DataError, nothing else."""
    data = next(mcap_bag.glob("*.mcap")).read_bytes()
    first_pixels = data.find(b"rgb8") + 16
    spots = [*range(first_pixels), *range(len(data) - 2500, len(data))]  # headers, schemas, index, summary
    rng = random.Random(1313)
    dst = tmp_path / "fuzz"
    shutil.copytree(mcap_bag, dst)
    mcap = next(dst.glob("*.mcap"))
    outcomes = {"read": 0, "DataError": 0}
    for _ in range(120):
        b = bytearray(data)
        for pos in rng.sample(spots, rng.randint(1, 4)):
            b[pos] ^= rng.randint(1, 255)
        mcap.write_bytes(bytes(b))
        try:
            ds = RosbagRGBD(dst, info_topic="/camera/color/camera_info")
            for i in range(len(ds)):
                ds[i]
            outcomes["read"] += 1
        except DataError as e:
            assert "\n" not in str(e)
            outcomes["DataError"] += 1
    assert min(outcomes.values()) >= 10, outcomes  # both outcomes are common: the mutations reach the parser


def _png_bomb(side: int = 20000) -> bytes:
    """A small valid PNG that declares ``side`` x ``side`` grey pixels (one row of data)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(side + 1))) + chunk(b"IEND", b"")


def _bag_with_bad_frame(tmp_path: Path, payload: bytes | None) -> Path:
    """A PNG CompressedImage bag of 5 frames whose frame 2 is replaced in place by garbage of the
    same length (``payload`` None) or by ``payload`` followed by padding (it must fit)."""
    bag = write_synthetic_bag(tmp_path / "bag", 5, seed=4, size=SIZE, storage="mcap", compressed="png")
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    starts = [i for i in range(len(data)) if data.startswith(PNG_SIGNATURE, i)]
    assert len(starts) == 5  # uncompressed chunks: the PNGs are in the file as written
    end = data.find(b"IEND", starts[2]) + 8
    garbage = (bytes(range(256)) * ((end - starts[2]) // 256 + 1))[: end - starts[2]]
    new = payload if payload is not None else garbage
    assert len(new) <= end - starts[2]
    data[starts[2] : end] = new.ljust(end - starts[2], b"\0")
    mcap.write_bytes(bytes(data))
    return bag


def _bag_eval_skips_frame_2(bag: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    color = ["--color-topic", "/camera/color/image_raw/compressed"]
    rc = bag_eval_main([str(bag), *color, "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["frames_skipped"] == 1
    assert "frames skipped (image could not be decoded): 1" in capsys.readouterr().out
    assert [int(r.split(",")[0]) for r in (out / "frames.csv").read_text().splitlines()[1:]] == [0, 1, 3, 4]


def test_bag_eval_skips_and_counts_an_undecodable_colour_frame(checkpoint: Path, tmp_path: Path, capsys) -> None:
    _bag_eval_skips_frame_2(_bag_with_bad_frame(tmp_path, None), checkpoint, tmp_path, capsys)


def test_bag_eval_skips_and_counts_a_png_bomb_frame(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """A 20000x20000 PNG in ~1 KB: refused from its header (ImageFormatError), never decoded."""
    _bag_eval_skips_frame_2(_bag_with_bad_frame(tmp_path, _png_bomb()), checkpoint, tmp_path, capsys)
