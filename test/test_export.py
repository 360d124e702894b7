"""ONNX export and the onnxruntime backend: same answers as eager torch, metadata, clear errors.

One atto checkpoint is exported once per precision for the module: fp16 by the ``spd-export``
command line (default exporter: torch.export / dynamo) in a second process, fp32 meanwhile in this
one by the TorchScript exporter, the fallback of ``--exporter auto`` (a dynamo export costs ~30 s
of CPU per precision here; both exporters give the same graphs' answers). Everything after that
runs the real files in onnxruntime (CPU execution provider), the node test included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import random_model
from ros_harness import NodeProcess, RosHarness, fresh_domain_id

from spd_core.eval.evaluate import main as eval_main
from spd_core.export.cli import main as export_main
from spd_core.export.meta import OnnxModelError, default_onnx_dir, file_name, file_sha256, weights_sha256
from spd_core.export.onnx import export_onnx
from spd_core.model.checkpoint import make_checkpoint, save_checkpoint
from spd_core.predictor import DepthPredictor
from spd_ros.launch_util import node_command
from spd_ros.ros_env import local_ros_env

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # max relative error against eager fp32 torch
# original image sizes -> network inputs 64x96 (exact fit, no padding) and 96x96 (scaled, padded)
SIZES = [(64, 96), (120, 100)]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """(model, ckpt, checkpoint path, export dir, spd-export's output) with fp32 and fp16 files."""
    model = random_model("convnextv2_atto", size=(64, 96), seed=41)
    ckpt = make_checkpoint(model, train_focal=100.0, input_size=(64, 96), max_depth=8.0)
    path = tmp_path_factory.mktemp("export") / "model.pt"
    save_checkpoint(path, ckpt)
    out = default_onnx_dir(path)
    cli = subprocess.Popen(  # fp16 through the command line, while fp32 exports here
        [sys.executable, "-m", "spd_core.export.cli", str(path), "--precision", "fp16", "--verify", "64x96"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert export_onnx(model, ckpt, out, "fp32", exporter="torchscript")["exporter"]["query"] == "torchscript"
        text, _ = cli.communicate(timeout=300)
    finally:
        cli.kill()
    assert cli.returncode == 0, text
    return model, ckpt, path, out, text


@pytest.fixture(scope="module")
def torch_predictor(exported) -> DepthPredictor:
    model, ckpt, *_ = exported
    return DepthPredictor.from_model(model, ckpt)


def image(size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def probe(size: tuple[int, int], k: int, seed: int = 0) -> np.ndarray:
    """k original-image pixels: corners, edge midpoints, sub-pixel positions a fraction inside each
    border, then random sub-pixel positions."""
    h, w = size
    edges = [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, 0], [0, (h - 1) / 2]]
    edges += [[0.3, 0.6], [w - 1.2, h - 1.7], [w - 1.5, 0.25], [0.75, h - 1.1]]
    rng = np.random.default_rng(seed)
    n = max(k - len(edges), 0) if k >= len(edges) else k
    uv = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], 1)
    return np.concatenate([edges, uv] if k >= len(edges) else [uv]).astype(np.float32)


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.abs(b))) if a.size else 0.0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_answers_equal_torch(exported, torch_predictor: DepthPredictor, precision: str) -> None:
    """At two network input sizes, K = 0, 1 and 64 (corners, borders, sub-pixel) and the dense map:
    onnxruntime on the exported files equals eager fp32 torch (1e-4 fp32, 1e-2 fp16); off-image
    queries are NaN in both."""
    model, ckpt, _, out, _ = exported
    ort = DepthPredictor.from_model(model, ckpt, precision=precision, backend="onnxruntime", onnx_dir=out)
    assert ort.backend.name == "onnxruntime" and ort.backend.runtime.providers == ["CPUExecutionProvider"]
    inputs = set()
    for i, size in enumerate(SIZES):
        img = image(size, i)
        ref, got = torch_predictor.encode(img, fx=90.0), ort.encode(img, fx=90.0)
        inputs.add(got.geometry.input_size)
        assert got.features.l1.dtype == got.features.local_s8.dtype == DTYPES[precision]
        for k in (0, 1, 64):
            uv = probe(size, k, seed=k + i)
            a, b = ort.query(got, uv), torch_predictor.query(ref, uv)
            assert a.shape == b.shape == (k,) and np.isfinite(b).all()
            assert max_rel(a, b) <= TOLERANCE[precision], (size, k)
        off = np.array([[-1.0, 0.0], [0.0, size[0] + 0.5], [np.nan, 1.0]], np.float32)
        assert np.isnan(ort.query(got, off)).all() and np.isnan(torch_predictor.query(ref, off)).all()
        dense = ort.dense(got)
        assert dense.shape == size and max_rel(dense, torch_predictor.dense(ref)) <= TOLERANCE[precision]
    assert inputs == {(64, 96), (96, 96)}


def test_graphs_take_any_k_and_size_in_plain_onnx_ops(exported) -> None:
    """The query graph itself answers K = 0 (no wrapper shortcut); every node is a standard ONNX op
    of opset >= 17 (the window gathers: Gather or GatherND), and H, W, K are dynamic axes."""
    model, ckpt, _, out, _ = exported
    ort = DepthPredictor.from_model(model, ckpt, backend="onnxruntime", onnx_dir=out)
    session = ort.backend.runtime.sessions["query"]
    frame = ort.encode(image((64, 96), 0))
    nhwc = {name: getattr(frame.features, name).permute(0, 2, 3, 1).numpy() for name in ("l1", "local_s8")}
    feeds = {**nhwc, "uv": np.zeros((1, 0, 2), np.float32)}
    assert session.run(None, feeds)[0].shape == (1, 0)
    for part in ("encode", "query", "dense"):
        proto = onnx.load(out / file_name("fp32", part))
        assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
        assert min(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
        dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
        assert all(sum(map(bool, dims[name])) == 2 for name in dims if name != "uv"), dims  # H, W
        if part == "query":
            ops = {n.op_type for n in proto.graph.node}
            assert ops & {"GatherND", "Gather"} and dims["uv"][1], (ops, dims)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exported_files_carry_their_metadata(exported, precision: str) -> None:
    """Each file's metadata_props and the JSON beside them hold the checkpoint's input size, train
    focal, max depth, model config and weights hash, the spd_ros version and the precision; the
    command line's export also the checkpoint file's sha256 and its verification."""
    _, ckpt, path, out, text = exported
    want = {
        "format": "spd_ros.onnx",
        "precision": precision,
        "input_size": [64, 96],
        "train_focal": 100.0,
        "max_depth": 8.0,
        "model_config": ckpt.config.to_dict(),
        "weights_sha256": weights_sha256(ckpt.state_dict),
        "spd_ros_version": "0.1.0",
        "example_size": [64, 96],
    }
    for part in ("encode", "query", "dense"):
        props = {p.key: p.value for p in onnx.load(out / file_name(precision, part)).metadata_props}
        meta = {k.removeprefix("spd_ros."): json.loads(v) for k, v in props.items()}
        assert {k: meta.get(k) for k in want} == want and meta["part"] == part and meta["opset"] >= 17
    beside = json.loads((out / f"spd.{precision}.json").read_text())
    assert {k: beside.get(k) for k in want} == want
    assert set(beside["files"]) == {"encode", "query", "dense"}
    if precision == "fp16":  # written by spd-export, with its default exporter
        assert beside["exporter"] == {"encode": "dynamo", "query": "dynamo", "dense": "dynamo"}
        assert beside["checkpoint_sha256"] == file_sha256(path)
        assert [v["size"] for v in beside["verified"]] == [[64, 96]] and beside["verified"][0]["ok"]
        assert beside["verified"][0]["sparse"] <= 1e-2 and "ok   64x96" in text


def _other(seed: int = 41, **change):
    kwargs = {"train_focal": 100.0, "input_size": (64, 96), "max_depth": 8.0, **change}
    return make_checkpoint(random_model("convnextv2_atto", seed=seed), **kwargs)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"seed": 42}, "weights_sha256"),
        ({"train_focal": 120.0}, "train_focal 100.0 in the file, 120.0 in the checkpoint"),
        ({"input_size": (96, 128)}, "input_size [64, 96] in the file, [96, 128] in the checkpoint"),
    ],
)
def test_mismatched_export_gives_one_line(exported, change: dict, words: str) -> None:
    """An export used with another checkpoint (other weights, focal or input size) is refused in one
    line that names the difference and the command that fixes it."""
    model, _, _, out, _ = exported
    other = _other(**change)
    with pytest.raises(OnnxModelError) as e:
        DepthPredictor.from_model(model, other, backend="onnxruntime", onnx_dir=out)
    msg = str(e.value)
    assert "\n" not in msg and "does not match the checkpoint" in msg and words in msg and "spd-export" in msg


def test_missing_or_broken_export_gives_one_line(exported, tmp_path: Path) -> None:
    """No export in the directory, the file of another part, or a file that is not ONNX: one line each."""
    model, ckpt, _, out, _ = exported
    cases = {"(spd.fp32.encode.onnx missing); run: spd-export CHECKPOINT --out": tmp_path / "empty"}
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in ("encode", "query", "dense"):
        (broken / file_name("fp32", part)).write_bytes((out / file_name("fp32", "dense")).read_bytes())
    cases["holds part 'dense', expected 'encode'"] = broken
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for part in ("encode", "query", "dense"):
        (garbage / file_name("fp32", part)).write_bytes(b"not a model")
    cases["cannot be loaded by onnxruntime"] = garbage
    for words, directory in cases.items():
        with pytest.raises(OnnxModelError) as e:
            DepthPredictor.from_model(model, ckpt, backend="onnxruntime", onnx_dir=directory)
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="onnxruntime backend runs fp32 or fp16"):
        DepthPredictor.from_model(model, ckpt, precision="bf16", backend="onnxruntime", onnx_dir=out)


def test_export_cli_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_main([str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spd-export: error: checkpoint") and "not found" in err and "\n" not in err
    with pytest.raises(SystemExit) as e:
        export_main([str(tmp_path / "none.pt"), "--verify", "100x64"])
    assert e.value.code == 2 and "multiples of 32" in capsys.readouterr().err


def test_missing_onnxruntime_is_one_line_and_torch_never_imports_it(exported) -> None:
    """With onnxruntime unimportable, the torch backend still answers and the onnxruntime one says
    in one line what to install."""
    _, _, path, _, _ = exported
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import numpy as np\n"
        "from spd_core.predictor import DepthPredictor\n"
        f"p = DepthPredictor.from_checkpoint({str(path)!r}, 'cpu')\n"
        "print('torch', p.query(p.encode(np.zeros((64, 96, 3), np.uint8)), [[1.0, 2.0]]).shape)\n"
        "try:\n"
        f"    DepthPredictor.from_checkpoint({str(path)!r}, 'cpu', backend='onnxruntime')\n"
        "except ValueError as e:\n"
        "    print('error', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["torch (1,)", "error onnxruntime is not installed; pip install 'spd_ros[onnx]'"]


def test_eval_cli_gives_the_same_metrics_through_onnxruntime(exported, tmp_path: Path) -> None:
    """spd-eval --backend onnxruntime (the export beside the checkpoint) reports the metrics the torch
    backend does, dense and sparse, to 1e-4."""
    _, _, path, _, _ = exported
    summaries = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        args = [str(path), "--dataset", "synthetic", "--data", "n=2", "seed=1", "size=[72,112]", "--k", "32"]
        args += ["--out", str(out), "--figures", "0", "--no-progress", "--device", "cpu", "--backend", backend]
        assert eval_main(args) == 0
        summaries[backend] = json.loads((out / "summary.json").read_text())
    for protocol in ("dense", "sparse"):
        a, b = summaries["onnxruntime"][protocol], summaries["torch"][protocol]
        assert a.keys() == b.keys() and all(a[m] == pytest.approx(b[m], rel=1e-4, abs=1e-7) for m in a), protocol


@pytest.fixture(scope="module")
def ort_node(exported, tmp_path_factory) -> Iterator[RosHarness]:
    """spd_node with backend onnxruntime, reading the export beside its checkpoint (the default)."""
    _, _, path, _, _ = exported
    domain = fresh_domain_id()
    cmd = node_command(path, device="cpu", extra_params={"backend": "onnxruntime", "qos": "reliable"})
    env = {**local_ros_env(domain), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    node = NodeProcess.from_command(cmd, env, tmp_path_factory.mktemp("logs") / "spd_node.log")
    harness = RosHarness(domain)
    try:
        harness.wait_ready(node, ("image", "query_points"))
        yield harness
    finally:
        harness.close()
        rc = node.stop()
        assert rc == 0 and "Traceback" not in node.output(), node.output()
    assert "(onnxruntime, fp32)" in node.output(), node.output()


def test_node_answers_through_onnxruntime_equal_torch(ort_node: RosHarness, torch_predictor) -> None:
    """A real spd_node process on the onnxruntime backend answers as the torch predictor does (1e-4)."""
    for stamp, size in enumerate(SIZES, start=10):
        img, uv = image(size, stamp), probe(size, 64, seed=stamp)
        ort_node.send_image(img, float(stamp))
        ort_node.send_query_points(float(stamp), uv)
        a = ort_node.next_answer(timeout=30.0)
        assert a["stamp"] == stamp and a["n"] == len(uv)
        expect = torch_predictor.query(torch_predictor.encode(img), uv)
        assert np.isfinite(a["depth"]).all() and max_rel(a["depth"], expect) <= 1e-4
