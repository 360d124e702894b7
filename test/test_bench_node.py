"""spd-bench-node: the round trip through a real spd_node (child process, Fast DDS on localhost)."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

from spd_ros.bench_node import main


def bench_domain(monkeypatch: pytest.MonkeyPatch, offset: int) -> str:
    """A domain of this test's own for the benchmark's node and client (restored after the test)."""
    domain = str(150 + (os.getpid() + offset) % 60)
    monkeypatch.setenv("SPD_BENCH_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain


def bench_args(ks: str, queries: int, out: Path) -> list[str]:
    """A short spd-bench-node run: atto at 64x96 on one CPU thread."""
    return [
        "--encoder",
        "convnextv2_atto",
        "--size",
        "64x96",
        "--ks",
        ks,
        "--queries",
        str(queries),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
    ]


def test_node_round_trip_answers_like_the_predictor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """spd-bench-node: spd_node (child process, real Fast DDS on localhost, own domain) answers every
    query of the benchmark, with the depths the in-process predictor gives for the same frame."""
    pytest.importorskip("rclpy")
    domain = bench_domain(monkeypatch, 0)
    out = tmp_path / "node"
    args = bench_args("1,16", 5, out)
    assert main(args) == 0
    node = json.loads((out / "bench.json").read_text())["node"]
    assert "error" not in node, node.get("error")
    assert node["domain_id"] == int(domain)
    assert [r["k"] for r in node["per_k"]] == [1, 16]
    for r in node["per_k"]:
        assert r["lost"] == 0 and r["rtt_ms"]["n"] == r["model_ms"]["n"] == r["model_paced_ms"]["n"] == 5
        assert r["max_rel_diff_vs_predictor"] <= 1e-5
        # the node's own compute time, from its /diagnostics windows holding only this K's queries
        assert r["node_windows"] >= 1 and r["node_compute_p50_ms"] > 0
        assert r["ros_path_p50_ms"] is not None and math.isfinite(r["ros_path_p50_ms"])
    assert "## Node round trip" in (out / "bench.md").read_text()


def test_node_bench_refuses_a_domain_where_another_node_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another publisher of depth_points on the benchmark's domain (a stray spd_node) would have its
    answers taken for the node's: the benchmark stops with an error naming it instead of measuring."""
    pytest.importorskip("rclpy")
    import subprocess

    from spd_ros.ros_env import local_ros_env

    domain = bench_domain(monkeypatch, 31)
    stray = (
        "import time, rclpy; from sensor_msgs.msg import PointCloud2; rclpy.init(); "
        "n = rclpy.create_node('stray'); p = n.create_publisher(PointCloud2, 'depth_points', 10); "
        "time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", stray], env=local_ros_env(int(domain)))
    try:
        out = tmp_path / "node"
        args = bench_args("1", 2, out)
        main(args)
        node = json.loads((out / "bench.json").read_text())["node"]
    finally:
        proc.kill()
        proc.wait()
    assert "1 other node(s) publish depth_points" in node.get("error", ""), node
    assert not node["per_k"]
