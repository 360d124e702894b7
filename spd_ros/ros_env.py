"""ROS environment for processes this package starts: localhost-only discovery, own domain.

Fast DDS otherwise multicasts discovery onto the network. A robot's own settings win where they
are given (``setdefault``); the Makefile and the tests always set both variables.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_DOMAIN_ID = "57"
BOOTSTRAP_GUARD = "_ROS_WHEELS_BOOTSTRAP_COMPLETE"  # set by the ROS wheels' .pth re-exec


def _ament_prefix(current: str | None) -> str:
    parts = [p for p in (current or "").split(os.pathsep) if p]
    return os.pathsep.join(parts if sys.prefix in parts else [*parts, sys.prefix])


def local_ros_env(
    domain_id: int | None = None, base: dict[str, str] | None = None, python: str | os.PathLike | None = None
) -> dict[str, str]:
    """A copy of the environment for a child ROS process: LOCALHOST discovery, ``ROS_DOMAIN_ID``
    (``domain_id``, else the current one, else the package default), ``AMENT_PREFIX_PATH`` with this
    Python's prefix (the ROS wheels register their packages there).

    ``python``: the child's interpreter; when it belongs to another venv, the ROS wheels' re-exec
    guard and library path of this one are left out so that its own ``.pth`` bootstrap runs.
    """
    env = dict(os.environ if base is None else base)
    if python is not None and Path(python).absolute().parent.parent != Path(sys.prefix).absolute():
        env.pop(BOOTSTRAP_GUARD, None)
        env.pop("LD_LIBRARY_PATH", None)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env.setdefault("ROS_DOMAIN_ID", DEFAULT_DOMAIN_ID)
    env["AMENT_PREFIX_PATH"] = _ament_prefix(env.get("AMENT_PREFIX_PATH"))
    return env


def apply_local_defaults() -> None:
    """Before rclpy.init() in this process: discovery stays on this machine unless configured."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", DEFAULT_DOMAIN_ID)
    os.environ["AMENT_PREFIX_PATH"] = _ament_prefix(os.environ.get("AMENT_PREFIX_PATH"))


def exit_with_parent() -> bool:
    """Ask Linux to send this process SIGINT when its parent ends (``prctl(PR_SET_PDEATHSIG)``).

    ``ros2 launch`` answers SIGTERM by cancelling its loop without stopping what it started
    ("can result in orphaned processes"); with this the node then shuts down as on Ctrl-C. Returns
    False where it is not available (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    parent = os.getppid()
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGINT), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent ended before the request was in place
        os.kill(os.getpid(), signal.SIGINT)
    return True
