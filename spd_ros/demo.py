"""spd-demo (``make demo``): the main job end to end on this machine, no downloads.

1. write a synthetic RGB-D rosbag2 (colour, depth, camera_info, keypoint queries);
2. train a small model briefly on synthetic scenes (CPU, a few minutes at most);
3. start ``spd_node`` with it and replay the bag live with the keypoint queries;
4. print the metrics table, the latency and the path of the report.

Every number printed is measured in this run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from spd_core.cli_args import OneLineParser, image_size, input_size, positive_float, positive_int

log = logging.getLogger("spd_demo")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="spd-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="working directory")
    p.add_argument("--frames", type=positive_int, default=40, help="frames in the replayed bag")
    p.add_argument("--size", type=image_size, default=(240, 320), help="bag image size HxW (default 240x320)")
    p.add_argument("--train-images", type=positive_int, default=512, help="synthetic training scenes")
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--max-steps", type=positive_int, default=None, help="cap on training steps (tests)")
    p.add_argument(
        "--input-size", type=input_size, default=(96, 128), help="model input HxW, multiples of 32 (default 96x128)"
    )
    p.add_argument("--keypoints", type=positive_int, default=64, help="keypoint queries per frame")
    p.add_argument("--rate", type=positive_float, default=1.0, help="replay speed factor")
    p.add_argument("--bag-hz", type=positive_float, default=5.0, help="frame rate of the synthetic bag")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="mcap")
    p.add_argument("--device", default="auto")
    return p


def _out_dir_problem(out: Path) -> str | None:
    """Why ``out`` cannot hold this run (a file, an earlier run, not creatable), else None (it is created)."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file"
    if (out / "bag").exists() or (out / "train").exists():
        return f"{out} holds an earlier run; remove it"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create --out {out} ({e.strerror or e})"
    return None


def stage(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from spd_core.data import write_synthetic_bag
    from spd_ros.ros_env import apply_local_defaults

    apply_local_defaults()  # the replay below starts ROS: localhost discovery, own domain
    from spd_core.train.cli import main as train_main
    from spd_ros.bag_eval import main as bag_eval_main

    out, size, net_size = args.out, args.size, args.input_size
    problem = _out_dir_problem(out)
    if problem:
        print(f"spd-demo: error: {problem}; pass --out NEWDIR", file=sys.stderr)
        return 2

    t = stage(f"1/4 synthetic RGB-D bag: {args.frames} frames {size[0]}x{size[1]} @ {args.bag_hz} Hz")
    bag = write_synthetic_bag(
        out / "bag",
        args.frames,
        seed=12345,
        size=size,
        storage=args.storage,
        rate_hz=args.bag_hz,
        queries_topic="/keypoints",
        n_queries=args.keypoints,
    )
    print(f"wrote {bag} in {time.perf_counter() - t:.1f} s")

    t = stage(f"2/4 training convnextv2_atto on {args.train_images} synthetic scenes ({args.epochs} epochs, CPU ok)")
    train_dir = out / "train"
    overrides = [
        f"data.train.n={args.train_images}",
        # scenes rendered at the network input size: what the node sees after resizing the bag's frames
        f"data.train.size=[{net_size[0]}, {net_size[1]}]",
        f"data.val.size=[{net_size[0]}, {net_size[1]}]",
        f"data.input_size=[{net_size[0]}, {net_size[1]}]",
        f"data.crop=[{net_size[0]}, {net_size[1]}]",
        f"train.epochs={args.epochs}",
        f"train.output_dir={train_dir}",
        f"train.device={args.device}",
        "train.val_at_start=true",
    ]
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    config = Path(__file__).resolve().parent.parent / "config" / "train_synthetic.yaml"
    if not config.exists():  # installed package: the config lives in share/spd_ros/config
        config = _share_file("config/train_synthetic.yaml")

    rc = train_main(["--config", str(config), *overrides])
    if rc:
        return rc
    ckpt = train_dir / "best.pt"
    print(f"trained in {time.perf_counter() - t:.0f} s -> {ckpt}")

    t = stage("3/4 + 4/4 spd_node with the trained model, live replay with keypoint queries")
    rc = bag_eval_main(
        [
            str(bag),
            "--checkpoint",
            str(ckpt),
            "--live",
            "--start-node",
            "--mode",
            "topic",
            "--queries-topic",
            "/keypoints",
            "--rate",
            str(args.rate),
            "--device",
            args.device,
            "--out",
            str(out / "report"),
        ]
    )
    print(f"replayed and scored in {time.perf_counter() - t:.0f} s")
    return rc


def _share_file(rel: str) -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("spd_ros")) / rel


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("spd-demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
