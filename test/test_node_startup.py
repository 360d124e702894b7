"""spd_node refuses to start on a bad checkpoint, parameter or params file: one line, exit code 2."""

from __future__ import annotations

import subprocess

import pytest
import torch
from ros_harness import fresh_domain_id

from spd_ros.launch_util import node_command
from spd_ros.ros_env import local_ros_env

STARTUP_ERRORS = {
    "missing": "not found",
    "corrupt": "corrupt",
    "bad_param": "cache_size",
    "params_file": "missing.yaml",
    "bad_field": "train_focal = nan",
}


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """spd_node started once per kind of damage, all at once (start-up is mostly imports): (rc, stderr)."""
    tmp = tmp_path_factory.mktemp("bad_start")
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    nan_focal = tmp / "nan_focal.pt"  # a readable checkpoint whose train_focal would make every depth NaN
    torch.save(
        {"format": "spd_ros.checkpoint", "version": 1, "train_focal": float("nan"), "input_size": [64, 96]}, nan_focal
    )
    cases = {
        "missing": node_command(tmp / "missing.pt", device="cpu"),
        "corrupt": node_command(corrupt, device="cpu"),
        "bad_param": node_command(corrupt, device="cpu", extra_params={"cache_size": 0}),  # out of its range
        "params_file": node_command(corrupt, tmp / "missing.yaml", device="cpu"),  # e.g. a typo in a launch file
        "bad_field": node_command(nan_focal, device="cpu"),
    }
    procs = {
        name: subprocess.Popen(cmd, env=local_ros_env(fresh_domain_id()), stderr=subprocess.PIPE, text=True)
        for name, cmd in cases.items()
    }
    errs = {name: proc.communicate(timeout=120)[1] for name, proc in procs.items()}
    return {name: (procs[name].returncode, err) for name, err in errs.items()}


@pytest.mark.parametrize("damage", list(STARTUP_ERRORS))
def test_bad_checkpoint_or_parameter_fails_at_start(failed_starts, damage: str) -> None:
    rc, stderr = failed_starts[damage]
    assert rc == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("spd_node: error:")]
    assert len(lines) == 1 and STARTUP_ERRORS[damage] in lines[0], stderr
    assert "Traceback" not in stderr
