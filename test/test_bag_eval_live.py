"""spd-bag-eval --live: the bag replayed into spd_node (separate process) scores as offline does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import random_model
from ros_harness import fresh_domain_id

from spd_core.data import write_synthetic_bag
from spd_core.eval.metrics import METRIC_NAMES
from spd_core.model.checkpoint import make_checkpoint, save_checkpoint
from spd_ros.bag_eval import main
from spd_ros.ros_env import local_ros_env


@pytest.fixture
def ros_domain(monkeypatch: pytest.MonkeyPatch) -> int:
    domain = fresh_domain_id()
    for key, value in local_ros_env(domain).items():
        if key.startswith(("ROS_", "AMENT_")):
            monkeypatch.setenv(key, value)
    return domain


def test_live_replay_matches_offline(tmp_path: Path, ros_domain: int) -> None:
    bag = write_synthetic_bag(
        tmp_path / "bag",
        6,
        seed=5,
        size=(120, 160),
        storage="sqlite3",
        rate_hz=4.0,
        queries_topic="/keypoints",
        n_queries=25,
    )
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, make_checkpoint(random_model("convnextv2_atto", size=(64, 96)), input_size=(64, 96)))
    common = [str(bag), "--checkpoint", str(ckpt), "--device", "cpu", "--no-progress", "--mode", "random", "-k", "40"]
    assert main([*common, "--out", str(tmp_path / "offline")]) == 0
    assert main([*common, "--out", str(tmp_path / "live"), "--live", "--start-node", "--rate", "2.0"]) == 0
    off = json.loads((tmp_path / "offline" / "summary.json").read_text())
    live = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert live["live"]["query_messages_sent"] == 6 and live["live"]["unanswered"] == 0
    assert live["queries_answered"] == off["queries_answered"] == 240
    for m in METRIC_NAMES:  # same pixels, same model, same images: equal up to float round-off
        assert live["metrics"][m] == pytest.approx(off["metrics"][m], rel=1e-4, abs=1e-6), m
    e2e = live["live"]["end_to_end_ms"]
    assert e2e["n"] == 6 and 0 < e2e["p50"] <= e2e["p99"]
    assert "end_to_end_ms" in (tmp_path / "live" / "report.md").read_text()
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
