"""``spd-bench``: measured cost of SPD v15 against the plan's MACs table (plan §11).

    spd-bench --device cpu --threads 2 --encoder convnextv2_tiny --size 416x544 --out bench/
    spd-bench --quick            # tiny sizes, few repeats (the test suite runs this)
    spd-bench --backend both --threads 2 --ks 64 --resolutions none   # + onnxruntime vs eager torch
    spd-bench-node               # round trip through spd_node (spd_ros, needs the ROS 2 wheels)

MACs (convnextv2_tiny at 416×544 and 480×640, on meta tensors), then wall time in one process:
encode; query for each K; dense decode + lookup at the same K points; the full DPT-D64
decoder (:mod:`spd_core.model.dpt_reference`); with ``--backend onnxruntime|both`` the model
exported to ONNX and run by onnxruntime against eager torch (:mod:`spd_core.bench.backends`).
Writes ``bench.json`` and ``bench.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import timm
import torch

from spd_core.bench.backends import BACKEND_CHOICES, run_backends
from spd_core.bench.baseline import run_baseline
from spd_core.bench.macs import PLAN_ENCODER, mac_crossovers, mac_rows, module_macs
from spd_core.bench.report import to_markdown
from spd_core.bench.resolutions import CAMERA_SIZES, run_resolutions
from spd_core.bench.timing import QUERY_LAYOUTS, TimingConfig, run_timing
from spd_core.cli_args import OneLineParser, check_out_dir, image_size, nonneg_int, positive_int
from spd_core.cli_args import input_size as parse_size
from spd_core.device import PRECISIONS, check_precision, resolve_device
from spd_core.model.spd_model import QUERY_CHUNK

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096)
QUICK = {"encoder": "convnextv2_atto", "size": (64, 96), "ks": (1, 16, 64), "repeats": 2, "warmup": 1}
FULL = {"encoder": PLAN_ENCODER, "size": (416, 544), "ks": DEFAULT_KS, "repeats": 5, "warmup": 1}


def parse_cameras(text: str) -> tuple[tuple[int, int], ...]:
    """'480x640,720x1280' -> ((480, 640), (720, 1280)), camera sizes; 'none' -> ()."""
    if text.strip().lower() == "none":
        return ()
    return tuple(image_size(s) for s in text.split(","))


def parse_ks(text: str) -> tuple[int, ...]:
    """'1,16,64' -> (1, 16, 64); each K ≥ 1."""
    try:
        ks = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks {text!r} is not a comma-separated list of integers") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--ks {text!r}: every K must be ≥ 1")
    return ks


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="spd-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--encoder", default=None, help=f"timm convnextv2_* for timing (default {FULL['encoder']})")
    p.add_argument("--size", type=parse_size, default=None, help="timing input HxW (default 416x544)")
    p.add_argument(
        "--ks", type=parse_ks, default=None, help="query counts (default 1,16,64,128,256,512,1024,2048,4096)"
    )
    p.add_argument(
        "--repeats", type=positive_int, default=None, help="timed runs per figure, median reported (default 5)"
    )
    p.add_argument("--warmup", type=nonneg_int, default=None, help="untimed runs before timing (default 1)")
    p.add_argument(
        "--channels-last",
        choices=("off", "on", "both"),
        default="off",
        help="memory format of model and input; 'both' times each (default off)",
    )
    p.add_argument(
        "--layout",
        choices=(*QUERY_LAYOUTS, "both"),
        default="random",
        help="query pixels: uniform over the image, clustered in 24x24 boxes of 32 (a detector), or both",
    )
    p.add_argument(
        "--chunk",
        type=nonneg_int,
        default=0,
        help=f"queries per batched window pass of SPDModel.query (0 = the device default {QUERY_CHUNK})",
    )
    p.add_argument(
        "--macs-sizes",
        type=lambda s: [parse_size(v) for v in s.split(",")],
        default=[(416, 544), (480, 640)],
        help="sizes of the MACs tables (default 416x544,480x640)",
    )
    p.add_argument(
        "--resolutions",
        type=parse_cameras,
        default=CAMERA_SIZES,
        help="camera sizes HxW timed at the pixel budget of --size (aspect kept); 'none' skips "
        "(default 480x640,480x848,720x1280,1080x1920)",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also time a Depth-Anything-V2-Small-shaped model (ViT-S/14 + DPT, random weights) against "
        "SPD frame + K queries at the matching resolution",
    )
    p.add_argument("--macs-encoder", default=PLAN_ENCODER, help="encoder of the MACs tables (default: the plan's)")
    p.add_argument("--macs-only", action="store_true", help="MACs tables only, no timing")
    p.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="torch",
        help="onnxruntime | both | all: also export the model to ONNX and time encode, dense and each K "
        "in onnxruntime (both: against eager torch, with the ratio; all: and torch.compile); default torch only",
    )
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto", help="for --backend")
    p.add_argument("--quick", action="store_true", help="atto, 64x96, K 1,16,64, 2 repeats (for tests)")
    p.add_argument("--out", type=Path, default=None, help="directory for bench.json and bench.md")
    return p


def check_encoder(name: str, flag: str = "--encoder") -> None:
    """ValueError (one line) unless ``name`` is a timm convnextv2_* architecture (no download)."""
    if not name.startswith("convnextv2_") or not timm.is_model(name):
        raise ValueError(f"{flag} {name!r} is not a timm convnextv2_* model (e.g. convnextv2_tiny, convnextv2_atto)")


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults (quick or full), check everything up front; ValueError with one clear line."""
    base = QUICK if args.quick else FULL
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    check_encoder(args.encoder)
    check_encoder(args.macs_encoder, "--macs-encoder")
    args.device = resolve_device(args.device)
    check_precision(args.precision, args.device)
    return args


def environment() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores" + (f", {gpu}" if gpu else ""),
        "torch": torch.__version__,
        "loadavg_before": loadavg(),
    }


def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Everything the command line asks for -> the report dict (see to_markdown for its layout)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"command": command, "environment": environment(), "macs": [], "timing": []}
    for size in args.macs_sizes:
        m = module_macs(args.macs_encoder, size)
        m["rows"], m["crossovers"] = mac_rows(m), mac_crossovers(m["totals"])
        report["macs"].append(m)
    if not args.macs_only:
        layouts = {"off": (False,), "on": (True,), "both": (False, True)}[args.channels_last]
        queries = QUERY_LAYOUTS if args.layout == "both" else (args.layout,)
        for cl, layout in ((cl, q) for cl in layouts for q in queries):
            cfg = TimingConfig(
                encoder=args.encoder,
                size=args.size,
                ks=args.ks,
                device=args.device,
                precision=args.precision,
                repeats=args.repeats,
                warmup=args.warmup,
                channels_last=cl,
                chunk=args.chunk,
                layout=layout,
            )
            report["timing"].append(run_timing(cfg))
        if args.baseline:
            report["baseline"] = run_baseline(
                args.encoder,
                args.size,
                args.device,
                repeats=args.repeats,
                warmup=args.warmup,
                precision=args.precision,
            )
        if args.resolutions:
            report["resolutions"] = run_resolutions(
                args.encoder, args.size, args.resolutions, args.device, args.precision, args.repeats, args.warmup
            )
        if args.backend != "torch":
            report["backends"] = run_backends(
                args.encoder,
                args.size,
                args.ks,
                args.device,
                args.backend,
                args.precision,
                args.repeats,
                args.warmup,
                args.exporter,
            )
    report["environment"]["loadavg_after"] = loadavg()
    return report


def write_report(report: dict[str, Any], out: Path | None) -> str:
    """Markdown to stdout, and bench.json + bench.md into ``out`` when given."""
    md = to_markdown(report)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "bench.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        args = resolve_args(args)
        check_out_dir(args.out)
        report = run(args, "spd-bench " + shlex.join(argv))
    except ValueError as e:
        print(f"spd-bench: error: {e}", file=sys.stderr)
        return 2
    print(write_report(report, args.out), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
