"""make demo's stages with shortened settings: synthetic bag -> training -> spd_node -> live replay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from ros_harness import fresh_domain_id

from spd_core.model.checkpoint import load_checkpoint
from spd_ros.demo import main
from spd_ros.ros_env import local_ros_env


def test_demo_end_to_end_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for key, value in local_ros_env(fresh_domain_id()).items():
        if key.startswith(("ROS_", "AMENT_")):
            monkeypatch.setenv(key, value)
    out = tmp_path / "demo"
    rc = main(
        [
            "--out",
            str(out),
            "--frames",
            "5",
            "--train-images",
            "16",
            "--epochs",
            "1",
            "--max-steps",
            "3",
            "--rate",
            "2",
            "--keypoints",
            "20",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for stage in ("1/4", "2/4", "3/4"):
        assert f"=== {stage}" in printed
    ckpt = load_checkpoint(out / "train" / "best.pt")
    assert ckpt.config.encoder == "convnextv2_atto" and tuple(ckpt.input_size) == (96, 128)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["live"]["query_messages_sent"] == 5 and summary["queries_answered"] == 100
    assert summary["latency_ms"]["end_to_end_ms"]["n"] == 5
    assert summary["metrics"] and all(math.isfinite(v) for v in summary["metrics"].values()), summary["metrics"]
    assert "abs_rel" in printed and str(out / "report" / "report.md") in printed
    assert main(["--out", str(out)]) != 0  # an earlier run is not overwritten
