"""spd-bag-eval: how good and how fast is spd_ros on a recorded RGB-D bag.

Offline (default): the bag's frames go through ``DepthPredictor`` in this process.
Live (``--live``): the bag is replayed at real time (× ``--rate``) into a running ``spd_node``
(or one started here with ``--start-node``), queries are sent with each frame's stamp, and the
``depth_points`` that come back are scored exactly as offline, with end-to-end latency.

    spd-bag-eval BAG --checkpoint model.pt [--mode random|grid|topic] [-k 128] [--out DIR]
    spd-bag-eval BAG --checkpoint model.pt --live --start-node [--rate 1.0]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from spd_core.cli_args import OneLineParser, check_out_dir, nonneg_float, positive_float, positive_int
from spd_core.config import one_line
from spd_core.eval.bag import QUERY_MODES, evaluate_offline, plan_frames, recorded_queries
from spd_core.eval.bag_report import print_summary, write_report

log = logging.getLogger("spd_bag_eval")

DEFAULT_TOPICS = {
    "color": "/camera/color/image_raw",
    "depth": "/camera/aligned_depth_to_color/image_raw",
    "info": "/camera/color/camera_info",
}


def parse_grid(text: str) -> tuple[int, int]:
    try:
        nx, ny = (int(t) for t in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid {text!r} must look like 8x6") from None
    if nx < 1 or ny < 1:
        raise argparse.ArgumentTypeError(f"grid {text!r} needs at least 1x1")
    return nx, ny


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="spd-bag-eval", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory or file (sqlite3 or mcap)")
    p.add_argument("--checkpoint", type=Path, help="spd_ros checkpoint (.pt); needed offline and with --start-node")
    p.add_argument("--color-topic", default=DEFAULT_TOPICS["color"], help="Image or CompressedImage topic")
    p.add_argument("--depth-topic", default=DEFAULT_TOPICS["depth"], help="GT depth, 16UC1 mm or 32FC1 m")
    p.add_argument("--info-topic", default=DEFAULT_TOPICS["info"], help="CameraInfo topic ('' = none)")
    p.add_argument("--queries-topic", default="", help="recorded PolygonStamped queries (mode 'topic')")
    p.add_argument("--mode", choices=QUERY_MODES, default="random", help="which pixels to query")
    p.add_argument("-k", type=positive_int, default=128, help="random mode: queries per frame")
    p.add_argument("--grid", type=parse_grid, default=(8, 6), help="grid mode: NXxNY pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-frames", type=positive_int, default=None)
    p.add_argument("--tolerance", type=nonneg_float, default=0.02, help="colour/depth stamp matching (s)")
    p.add_argument("--out", type=Path, default=Path("outputs/bag_eval"), help="report directory")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (offline, and a started node)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--no-progress", action="store_true")
    live = p.add_argument_group("live replay into spd_node")
    live.add_argument("--live", action="store_true", help="replay into a running spd_node instead")
    live.add_argument("--rate", type=positive_float, default=1.0, help="replay speed factor (1 = real time)")
    live.add_argument("--start-node", action="store_true", help="start spd_node with --checkpoint here")
    live.add_argument("--params-file", type=Path, default=None, help="params file for --start-node")
    live.add_argument("--namespace", default="", help="namespace of spd_node's topics")
    live.add_argument("--answer-timeout", type=positive_float, default=5.0, help="s to wait for the last answers")
    return p


def open_bag(args: argparse.Namespace) -> tuple[Any, dict | None]:
    """The bag as a dataset of time-matched colour/depth frames, and its recorded queries."""
    from spd_core.data import RosbagRGBD

    dataset = RosbagRGBD(
        args.bag,
        color_topic=args.color_topic,
        depth_topic=args.depth_topic,
        info_topic=args.info_topic or None,
        tolerance_s=args.tolerance,
    )
    queries = recorded_queries(args.bag, args.queries_topic) if args.queries_topic else None
    if args.mode == "topic" and queries is None:
        raise ValueError("--mode topic needs --queries-topic (the recorded PolygonStamped topic)")
    return dataset, queries


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate and write the report; returns the summary."""
    check_out_dir(args.out)
    dataset, queries = open_bag(args)
    skipped: list[int] = []  # frames whose image cannot be decoded (corrupt, oversized): skipped and counted
    plans = plan_frames(
        dataset, args.mode, args.k, args.grid, args.seed, queries, args.max_frames, not args.live, skipped
    )
    extra = {"bag": str(args.bag), "mode": args.mode, "checkpoint": str(args.checkpoint or ""), "live": bool(args.live)}
    if args.live:
        from spd_ros.replay import evaluate_live

        results, live_stats = evaluate_live(args, list(plans))
        extra.update(live_stats)
    else:
        if args.checkpoint is None:
            raise ValueError("offline evaluation needs --checkpoint (a .pt written by spd-train)")
        from spd_core.predictor import DepthPredictor

        predictor = DepthPredictor.from_checkpoint(str(args.checkpoint), args.device, args.precision)
        n = len(dataset) if args.max_frames is None else min(len(dataset), args.max_frames)
        results = evaluate_offline(predictor, plans, progress=not args.no_progress, total=n)
    extra["frames_skipped"] = len(skipped)
    if not results:
        why = f"{len(skipped)} frames undecodable" if skipped else "no matched colour/depth pairs or queries"
        raise ValueError(f"no frames evaluated in {args.bag} ({why})")
    return write_report(args.out, results, lambda i: dataset[i]["image"], extra)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from spd_core.data import DataError
    from spd_core.model.checkpoint import CheckpointError

    try:
        summary = run(args)
    except (DataError, CheckpointError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"spd-bag-eval: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spd-bag-eval: interrupted", file=sys.stderr)
        return 130
    print(print_summary(summary))
    print(f"report: {summary['files']['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
