"""Shutdown when the process that started spd_node ends without stopping it (issue 14, item 6).

``ros2 launch`` answers SIGTERM by cancelling its own loop and exiting ("using SIGTERM can result in
orphaned processes"): what it started is left running. spd_node asks the kernel for SIGINT when
its parent ends (``prctl(PR_SET_PDEATHSIG)``) and then shuts down as on Ctrl-C. Here a real parent
process starts a real spd_node and is killed outright (SIGKILL: no chance to clean up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import random_model
from ros_harness import fresh_domain_id

from spd_core.model.checkpoint import make_checkpoint, save_checkpoint
from spd_ros.launch_util import node_command
from spd_ros.ros_env import local_ros_env

PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    log = open(sys.argv[1], "w")
    child = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes (its parent died; init reaps it)
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_node_shuts_down_cleanly_when_its_parent_dies(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, make_checkpoint(random_model("convnextv2_atto", size=(64, 96)), input_size=(64, 96)))
    log = tmp_path / "node.log"
    cmd = [sys.executable, "-c", PARENT, str(log), *node_command(ckpt, device="cpu")]
    parent = subprocess.Popen(cmd, env=local_ros_env(fresh_domain_id()), stdout=subprocess.PIPE, text=True)
    node_pid = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while "spd_node ready" not in log.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, log.read_text()
            time.sleep(0.2)
        parent.send_signal(signal.SIGKILL)  # like ros2 launch leaving on SIGTERM: children not stopped
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(node_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(node_pid), "spd_node outlived its parent"
        out = log.read_text()
        assert "spd_node stopped (worker joined)" in out and "Traceback" not in out, out
    finally:
        if _alive(node_pid):
            os.kill(node_pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
