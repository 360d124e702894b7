"""``spd-export``: a checkpoint -> ONNX files for onnxruntime / TensorRT, checked against torch.

    spd-export runs/nyu/best.pt                       # -> runs/nyu/best_onnx/spd.fp32.*.onnx + .json
    spd-export best.pt --precision fp16 --out /opt/models/spd
    spd-node ... -p backend:=onnxruntime              # reads best_onnx/ beside the checkpoint

Writes the encode, query and dense graphs (any input size, any K; :mod:`spd_core.export.onnx`),
then runs them in onnxruntime (CPU) against eager fp32 torch at the ``--verify`` sizes and exits
1 when an answer is off by more than the tolerance (fp32 1e-4, fp16 1e-2 relative).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

from spd_core.export.meta import PRECISIONS, ModelIdentity, OnnxModelError, default_onnx_dir, file_sha256, json_name
from spd_core.model.checkpoint import CheckpointError, load_model

log = logging.getLogger(__name__)

NEEDS = {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'480x640,384x672' -> [(480, 640), (384, 672)], positive multiples of 32; 'none' -> []."""
    if text.strip().lower() == "none":
        return []
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of HxW, e.g. 480x640") from None
    if any(len(s) != 2 or min(s) <= 0 or s[0] % 32 or s[1] % 32 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: each size is HxW, both positive multiples of 32")
    return sizes  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="spd-export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="spd_ros checkpoint (.pt) written by spd-train")
    p.add_argument("--out", type=Path, help="output directory (default: <checkpoint stem>_onnx/ beside it)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="weights and features (default fp32)")
    p.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="torch.onnx exporter; auto: dynamo (torch.export), the TorchScript one if that fails",
    )
    p.add_argument("--example-size", type=lambda s: parse_sizes(s)[0], help="HxW traced (default: the checkpoint's)")
    p.add_argument(
        "--verify",
        type=parse_sizes,
        help="network input sizes HxW checked against torch, or 'none' (default: the example size and one of "
        "another aspect)",
    )
    return p


def _check_installed() -> None:
    missing = [name for name, module in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise OnnxModelError(f"spd-export needs {', '.join(missing)}; pip install 'spd_ros[onnx]'")


def run(args: argparse.Namespace) -> int:
    """Export, verify, print one line per part and per size; 1 when verification fails."""
    import torch

    from spd_core.export.onnx import export_onnx
    from spd_core.export.ort import OnnxRuntimeModel
    from spd_core.export.verify import TOLERANCE, compare

    _check_installed()
    model, ckpt = load_model(args.checkpoint, "cpu")
    out = args.out or default_onnx_dir(args.checkpoint)
    size = tuple(args.example_size or ckpt.input_size)
    sizes = args.verify if args.verify is not None else [size, (size[0] + 32, max(32, size[1] - 32))]
    t0 = time.perf_counter()
    meta = export_onnx(
        model, ckpt, out, args.precision, args.exporter, size, checkpoint_sha256=file_sha256(args.checkpoint)
    )
    print(f"exported {ckpt.config.encoder} ({args.precision}) in {time.perf_counter() - t0:.1f} s to {out}:")
    for part, name in meta["files"].items():
        print(f"  {name}  ({meta['exporter'][part]}, {(out / name).stat().st_size / 1e6:.1f} MB)")
    runtime = OnnxRuntimeModel(out, ModelIdentity.of(ckpt), args.precision, "cpu", threads=torch.get_num_threads())
    meta["verified"] = [compare(model, runtime, s) for s in sizes]
    (out / json_name(args.precision)).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tol = TOLERANCE[args.precision]
    for r in meta["verified"]:
        h, w = r["size"]
        print(
            f"  {'ok  ' if r['ok'] else 'FAIL'} {h}x{w}: max relative error sparse {r['sparse']:.1e} "
            f"({r['queries']} queries), dense {r['dense']:.1e} (tolerance {tol:.0e})"
        )
    return 0 if all(r["ok"] for r in meta["verified"]) else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (CheckpointError, OnnxModelError, ValueError) as e:
        print(f"spd-export: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
