"""colcon build (colcon from PyPI) of the package, then the installed lib/spd_ros/spd_node with the
installed params file: it starts, serves, and exits cleanly on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import random_model
from ros_harness import fresh_domain_id

from spd_core.checkpoint import make_checkpoint, save_checkpoint
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
    assert (prefix / "share" / "spd_ros" / "launch" / "spd.launch.py").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "spd_ros").is_file()

    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, make_checkpoint(random_model("convnextv2_atto"), input_size=(64, 96)))
    env = local_ros_env(fresh_domain_id())
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env["AMENT_PREFIX_PATH"]])
    log = tmp_path / "node.log"
    proc = subprocess.Popen(
        [str(exe), "--ros-args", "--params-file", str(params), "-p", f"checkpoint:={ckpt}", "-p", "device:=cpu"],
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while "spd_node ready" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert "spd_node ready" in log.read_text(), log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(20)
    out = log.read_text()
    assert rc == 0 and "Traceback" not in out, out
