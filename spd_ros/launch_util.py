"""The command line that starts spd_node the way launch/spd.launch.py does (for tools and tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

SOURCE_PARAMS = Path(__file__).resolve().parent.parent / "config" / "spd.yaml"
EXECUTABLES = {"spd_node": "spd_ros.spd_node", "spd_lifecycle_node": "spd_ros.lifecycle_node"}  # -> module


def default_params_file() -> Path:
    """config/spd.yaml of the source tree, else the installed share/spd_ros/config/spd.yaml."""
    if SOURCE_PARAMS.is_file():
        return SOURCE_PARAMS
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("spd_ros")) / "config" / "spd.yaml"


def node_command(
    checkpoint: str | Path,
    params_file: str | Path | None = None,
    namespace: str = "",
    device: str | None = None,
    precision: str | None = None,
    extra_params: dict | None = None,
    remaps: dict[str, str] | None = None,
    executable: str = "spd_node",
) -> list[str]:
    """``spd_node --ros-args --params-file ... -p checkpoint:=... [-r __ns:=...]``; ``executable``:
    ``spd_node`` or ``spd_lifecycle_node`` (see :func:`executable_command`)."""
    cmd = [*executable_command(executable), "--ros-args", "--params-file", str(params_file or default_params_file())]
    params = {"checkpoint": str(checkpoint), "device": device, "precision": precision, **(extra_params or {})}
    for key, value in params.items():
        if value is not None:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            cmd += ["-p", f"{key}:={text}"]
    if namespace:
        cmd += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def executable_command(name: str) -> list[str]:
    """The console script ``name`` beside this Python; ``python -m`` of its module where that script
    is not there (a source tree whose new executable has not been installed yet)."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", EXECUTABLES[name]]


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Ctrl-C (SIGINT) a started spd_node, kill it if it has not exited after ``timeout`` s; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
