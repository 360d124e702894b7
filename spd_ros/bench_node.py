"""``spd-bench-node``: round trip through ``spd_node``, the ROS + conversion overhead of a query.

    spd-bench-node --device cpu --threads 2 --encoder convnextv2_atto --size 96x128 --ks 1,16,64,128

Starts spd_node in a child process (random-weight checkpoint of the benchmark's encoder and
size, ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, its own ``ROS_DOMAIN_ID``), publishes one
image, then PolygonStamped queries with that image's stamp, one at a time, and times publish
-> PointCloud2 on ``depth_points``. In the same run it times ``SPDModel.query`` on the same frame
and points in this process: overhead = round trip − model time (target: ≤ 2 ms + 10 % of it). The
node's own compute time from its ``/diagnostics`` splits off the ROS path. Lives in spd_ros: spd_core
never imports rclpy.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spd_core.bench.cli import check_encoder, environment, loadavg, parse_ks, parse_size, write_report
from spd_core.bench.timing import time_fn
from spd_core.cli_args import OneLineParser, check_out_dir, nonneg_int, positive_int
from spd_core.device import PRECISIONS, check_precision, resolve_device
from spd_core.eval.bag_report import percentiles
from spd_core.model.checkpoint import make_checkpoint, save_checkpoint
from spd_core.model.spd_model import ModelConfig, SPDModel
from spd_core.predictor import DepthPredictor, EncodedFrame
from spd_core.preprocess import to_model_pixels
from spd_ros.bench_client import RoundTrip, image_msg

log = logging.getLogger(__name__)

DEFAULT_DOMAIN_ID = 91  # its own domain, never the shell's; SPD_BENCH_DOMAIN_ID overrides it
BLOCK = 10  # model timings and round trips alternate in blocks of this many
SETTLE_S = 0.05  # pause between blocks


def bench_env(threads: int | None) -> dict[str, str]:
    """Environment for this process's and the node's ROS: localhost discovery, own domain."""
    from spd_ros.ros_env import local_ros_env

    env = local_ros_env(int(os.environ.get("SPD_BENCH_DOMAIN_ID", DEFAULT_DOMAIN_ID)))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _start_node(checkpoint: Path, args: argparse.Namespace, env: dict[str, str], log_file: Path) -> subprocess.Popen:
    from spd_ros.launch_util import node_command

    cmd = node_command(checkpoint, device=str(args.device), precision=args.precision)
    log.info("starting %s", " ".join(map(str, cmd)))
    with open(log_file, "w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen, log_file: Path) -> str:
    """SIGINT, then kill after 10 s; returns the last lines of the node's output."""
    from spd_ros.launch_util import stop_node

    stop_node(proc)
    lines = log_file.read_text(errors="replace").strip().splitlines() if log_file.is_file() else []
    return " | ".join(lines[-5:])


def _round_trip_block(
    rt: RoundTrip, uv: np.ndarray, warmup: int, m: int, answer: np.ndarray | None
) -> tuple[list[float], int, np.ndarray | None]:
    """``warmup`` + ``m`` queries through the node: (the last ``m`` round trips ms, lost, last answer)."""
    block, lost = [], 0
    for i in range(warmup + m):
        r = rt.ask(uv)
        if i < warmup:
            continue
        if r is None or len(r[1]) != len(uv):
            lost += 1
            continue
        block.append(r[0])
        answer = r[1]
    return block, lost, answer


def _measure_k(
    rt: RoundTrip, predictor: DepthPredictor, frame: EncodedFrame, uv: np.ndarray, n: int, warmup: int
) -> dict[str, Any]:
    """``n`` timings each of ``SPDModel.query`` on the encoded frame in this process (model pixels
    ready) and of the round trip through the node, in alternate blocks of ``BLOCK`` so that both
    see the same machine load. Within a block the calls run back to back after ``warmup`` untimed
    ones (warm, as under a steady query stream); between blocks a ``SETTLE_S`` pause lets this
    process's OpenMP team stop spinning (libgomp's default) so it does not take the node's cores.

    A third block times the model *paced* at the round trip's rate, i.e. idle between calls as
    long as the node is between queries: on a CPU that sleeps when idle (this VM), a query after a
    few ms of idle takes much longer than back to back, and that is not ROS overhead."""
    muv = torch.from_numpy(to_model_pixels(uv, frame.geometry))[None].to(predictor.device)

    def model_query() -> torch.Tensor:
        with torch.inference_mode():
            return predictor.model.query(frame.features, muv, predictor.precision)

    def model_block(m: int, period_s: float) -> list[float]:
        """``warmup`` + ``m`` calls, one every ``period_s`` (0: back to back); the last ``m`` timed."""
        out = []
        for i in range(warmup + m):
            start = time.perf_counter()
            t = time_fn(model_query, predictor.device, repeats=1, warmup=0)["median_ms"]
            if i >= warmup:
                out.append(t)
            time.sleep(max(0.0, period_s - (time.perf_counter() - start)))
        return out

    rtt, model_ms, paced_ms, lost, answer = [], [], [], 0, None
    rt.node_windows()  # start from a window boundary: earlier queries are not this K's
    rt.sent.clear()
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        model_ms += model_block(m, 0.0)
        time.sleep(SETTLE_S)
        block, block_lost, answer = _round_trip_block(rt, uv, warmup, m, answer)
        rtt, lost = rtt + block, lost + block_lost
        time.sleep(SETTLE_S)
        paced_ms += model_block(m, float(np.median(block)) / 1e3 if block else 0.0)
        time.sleep(SETTLE_S)
    expect = predictor.query(frame, uv)
    mp, rp, pp = percentiles(model_ms), percentiles(rtt), percentiles(paced_ms)
    # the node's own compute time (receipt -> answer ready) in each window holding only this K's
    # queries, against the round trips published in the same window (both see the same machine)
    node_p50, ros_path = [], []
    for win in rt.node_windows():
        rtts = [r for t, r in rt.sent if win.start <= t < win.end]
        if win.points == win.messages * len(uv) and rtts:
            node_p50.append(win.latency_p50_ms)
            ros_path.append(float(np.median(rtts)) - win.latency_p50_ms)
    node_ms = float(np.median(node_p50)) if node_p50 else None
    return {
        "k": len(uv),
        "rtt_ms": rp,
        "model_ms": mp,
        "lost": lost,
        "overhead_p50_ms": rp["p50"] - mp["p50"],
        "target_ms": 2.0 + 0.1 * mp["p50"],
        "model_paced_ms": pp,
        "overhead_vs_paced_p50_ms": rp["p50"] - pp["p50"],
        "node_compute_p50_ms": node_ms,
        "node_windows": len(node_p50),
        "ros_path_p50_ms": float(np.median(ros_path)) if ros_path else None,
        "max_rel_diff_vs_predictor": (
            None if answer is None else float(np.nanmax(np.abs(answer - expect) / np.abs(expect)))
        ),
    }


def run_node_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Round-trip percentiles per K against model.query time; {'error': ...} if the node fails."""
    env = bench_env(args.threads)
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "AMENT_PREFIX_PATH")})
    import rclpy

    h, w = args.size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    torch.manual_seed(0)
    model = SPDModel(ModelConfig(encoder=args.encoder)).eval()
    ckpt = make_checkpoint(model, input_size=(h, w))
    result: dict[str, Any] = {"domain_id": int(env["ROS_DOMAIN_ID"]), "queries_per_k": args.queries, "per_k": []}
    with tempfile.TemporaryDirectory(prefix="spd-bench-node-") as tmp:
        path = Path(tmp) / "random.pt"
        save_checkpoint(path, ckpt)
        predictor = DepthPredictor.from_model(model, ckpt, args.device, args.precision, focal_scaling=False)
        frame = predictor.encode(image)
        log_file = Path(tmp) / "spd_node.log"
        proc = _start_node(path, args, env, log_file)
        rclpy.init()
        node = rclpy.create_node("spd_bench_client")
        try:
            rt = RoundTrip(node)
            rt.wait_ready(proc)
            rt.wait_for_frame(image_msg(image), np.array([[w / 2, h / 2]]))
            for k in args.ks:
                uv = rng.uniform([0, 0], [w - 1, h - 1], (k, 2))
                result["per_k"].append(_measure_k(rt, predictor, frame, uv, args.queries, args.warmup))
        except RuntimeError as e:
            result["error"] = str(e)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
            tail = _stop(proc, log_file)
            if "error" in result and tail:
                result["error"] += f" (node output: {tail})"
    result["note"] = (
        f"One query in flight at a time, {args.queries} per K after {args.warmup} warm-up; "
        "round trip = publish PolygonStamped -> PointCloud2 received; model = SPDModel.query "
        f"in this process on the same frame and points; the two alternate in blocks of {BLOCK} "
        f"back-to-back calls (after {args.warmup} untimed) with {SETTLE_S * 1e3:.0f} ms pauses; "
        "overhead = round trip p50 − model p50; model paced = the same calls one per round-trip "
        "p50, idle in between as the node is; node compute = the node's own receipt -> answer "
        "ready time (median of its /diagnostics latency p50 over the 1-s windows of this K), "
        "ROS path = round trip p50 − node compute per window, median over windows (transport, "
        "executor, message conversion); "
        "target = 2 ms + 10 % of the model p50."
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="spd-bench-node", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads of node and client (default: torch's)"
    )
    p.add_argument("--encoder", default="convnextv2_atto", help="timm convnextv2_* (default convnextv2_atto)")
    p.add_argument("--size", type=parse_size, default=(96, 128), help="input HxW (default 96x128)")
    p.add_argument("--ks", type=parse_ks, default=(1, 16, 64, 128), help="query counts (default 1,16,64,128)")
    p.add_argument("--warmup", type=nonneg_int, default=1, help="untimed queries before timing (default 1)")
    p.add_argument("--queries", type=positive_int, default=50, help="query messages per K (default 50)")
    p.add_argument("--out", type=Path, default=None, help="directory for bench.json and bench.md")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        check_encoder(args.encoder)
        check_out_dir(args.out)
        args.device = resolve_device(args.device)
        check_precision(args.precision, args.device)
    except ValueError as e:
        print(f"spd-bench-node: error: {e}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "command": "spd-bench-node " + shlex.join(argv),
        "environment": environment(),
        "macs": [],
        "node": run_node_bench(args),
    }
    report["environment"]["loadavg_after"] = loadavg()
    print(write_report(report, args.out), end="")
    return 0 if "error" not in report["node"] else 1


if __name__ == "__main__":
    sys.exit(main())
