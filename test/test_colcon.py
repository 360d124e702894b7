"""colcon build (colcon from PyPI) of the package, then the installed lib/spd_ros/spd_node with the
installed params file: it starts, serves, and exits cleanly on Ctrl-C."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers import random_model
from ros_harness import NodeProcess, RosHarness, fresh_domain_id

from spd_core.model.checkpoint import make_checkpoint, save_checkpoint
from spd_core.predictor import DepthPredictor
from spd_ros.ros_env import local_ros_env

REPO = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".git", "build", "install", "log", "outputs", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}


def test_colcon_build_and_installed_node(tmp_path: Path) -> None:
    src = tmp_path / "src" / "spd_ros"
    shutil.copytree(REPO, src, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    colcon = Path(sys.executable).parent / "colcon"
    build = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", "--build-base", "build", "--install-base", "install"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = tmp_path / "install" / "spd_ros"
    exe = prefix / "lib" / "spd_ros" / "spd_node"
    params = prefix / "share" / "spd_ros" / "config" / "spd.yaml"
    assert exe.is_file() and params.is_file()
    assert (prefix / "lib" / "spd_ros" / "spd_lifecycle_node").is_file()  # ros2 run spd_ros spd_lifecycle_node
    launch = (prefix / "share" / "spd_ros" / "launch" / "spd.launch.py").read_text()
    tree = ast.parse(launch)  # launch/launch_ros are not installable here: check what it would start
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"spd_ros", "spd_node", "config", "spd.yaml", "checkpoint", "namespace", "params_file"} <= strings
    assert {"image", "camera_info", "queries", "query_points", "depth_points", "image/compressed"} <= strings
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "spd_ros").is_file()

    ckpt = tmp_path / "model.pt"
    model = random_model("convnextv2_atto")
    checkpoint = make_checkpoint(model, input_size=(64, 96))
    save_checkpoint(ckpt, checkpoint)
    domain = fresh_domain_id()
    env = local_ros_env(domain)
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env["AMENT_PREFIX_PATH"]])
    cmd = [str(exe), "--ros-args", "--params-file", str(params), "-p", f"checkpoint:={ckpt}"]
    node = NodeProcess.from_command([*cmd, "-p", "device:=cpu", "-p", "compressed:=true"], env, tmp_path / "node.log")
    try:
        deadline = time.monotonic() + 90
        while "spd_node ready" not in node.output() and time.monotonic() < deadline and node.proc.poll() is None:
            time.sleep(0.2)
        assert "spd_node ready" in node.output(), node.output()
        _serves_compressed(domain, node, DepthPredictor.from_model(model, checkpoint))
    finally:
        rc = node.stop()
    out = node.output()
    assert rc == 0 and "Traceback" not in out and "worker joined" in out, out


def _serves_compressed(domain: int, node: NodeProcess, predictor: DepthPredictor) -> None:
    """One PNG CompressedImage and a query: the installed node answers with the predictor's depth."""
    from sensor_msgs.msg import CompressedImage

    from spd_core.data.images import encode_compressed

    harness = RosHarness(domain)
    try:
        harness.wait_ready(node, ("image/compressed", "queries"))
        img = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        msg = CompressedImage(header=harness.header(5.0), format="png", data=encode_compressed(img, "png"))
        harness.publish("image/compressed", msg)
        uv = np.array([[3.0, 4.0], [40.5, 20.25], [63.0, 47.0]], np.float32)
        harness.send_queries(5.0, uv)
        a = harness.next_answer()
        assert a["stamp"] == 5.0
        np.testing.assert_allclose(a["depth"], predictor.query(predictor.encode(img), uv), rtol=1e-5)
    finally:
        harness.close()
