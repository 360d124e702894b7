"""spd-eval: checkpoint + dataset -> NYU metrics (dense and sparse protocol), CSV, JSON, figures.

Everything goes through :class:`spd_core.predictor.DepthPredictor` (the one inference path):
each uint8 image is encoded once; ``dense(frame)`` gives the dense protocol and
``query(frame, uv)`` at K random valid original-image pixels (seeded per image) the sparse one.

    spd-eval runs/synthetic/best.pt --dataset synthetic --data n=32 seed=1 size=[96,128]
    spd-eval best.pt --dataset nyu --data data_root=/data/nyu filelist=nyudepthv2_test_files_with_gt.txt
    spd-eval best.pt --config config/train_nyu.yaml     # its data.val
    spd-eval best.pt --backend onnxruntime ...          # the spd-export files in best_onnx/
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from spd_core.backends import BACKENDS
from spd_core.cli_args import OneLineParser, check_out_dir, nonneg_int, positive_int
from spd_core.config import (
    ConfigError,
    build_dataset,
    check_dataset_spec,
    data_errors,
    load_config,
    one_line,
    parse_overrides,
)
from spd_core.device import resolve_device
from spd_core.eval.figures import save_eval_figure
from spd_core.eval.metrics import (
    METRIC_NAMES,
    compute_errors,
    dense_metrics,
    format_table,
    mean_metrics,
    query_rng,
    sample_query_pixels,
    valid_mask,
)
from spd_core.export.meta import default_onnx_dir
from spd_core.model.checkpoint import CheckpointError, load_checkpoint
from spd_core.predictor import DepthPredictor

log = logging.getLogger(__name__)

DEFAULT_K = 128


@dataclass
class ImageResult:
    """Metrics of one image under both protocols."""

    index: int
    name: str
    n_valid: int
    n_query: int
    dense: dict[str, float] = field(default_factory=dict)
    sparse: dict[str, float] = field(default_factory=dict)


@dataclass
class ImageOutput:
    """What a figure needs: dense prediction [H,W], query pixels uv [K,2] and their depths [K]."""

    pred: np.ndarray
    uv: np.ndarray
    query_depth: np.ndarray
    mask: np.ndarray


def evaluate_image(
    predictor: DepthPredictor, sample: dict, index: int, k: int = DEFAULT_K, seed: int = 0, use_eigen_crop: bool = True
) -> tuple[ImageResult, ImageOutput]:
    """Both protocols on one raw sample (uint8 image [H,W,3], depth [H,W] m, focal px)."""
    image, gt = np.asarray(sample["image"]), np.asarray(sample["depth"], np.float32)
    if image.shape[:2] != gt.shape:
        raise ValueError(f"sample {sample.get('name', index)}: image {image.shape[:2]} and depth {gt.shape} differ")
    focal = sample.get("focal")
    frame = predictor.encode(image, fx=None if focal is None else float(focal))
    pred = predictor.dense(frame)
    mask = valid_mask(gt, use_eigen_crop)
    uv = sample_query_pixels(mask, k, query_rng(seed, index))
    q = predictor.query(frame, uv.astype(np.float32))
    result = ImageResult(
        index=index,
        name=str(sample.get("name", index)),
        n_valid=int(mask.sum()),
        n_query=len(uv),
        dense=dense_metrics(pred, gt, use_eigen_crop),
        sparse=compute_errors(q, gt[uv[:, 1], uv[:, 0]]),
    )
    return result, ImageOutput(pred, uv, q, mask)


def evaluate_dataset(
    predictor: DepthPredictor,
    dataset: Any,
    k: int = DEFAULT_K,
    seed: int = 0,
    use_eigen_crop: bool = True,
    max_images: int | None = None,
    progress: bool = False,
) -> list[ImageResult]:
    """Per-image results over (the first ``max_images`` of) a dataset of raw samples."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return [
        evaluate_image(predictor, dataset[i], i, k, seed, use_eigen_crop)[0]
        for i in tqdm(range(n), desc="eval", disable=not progress, leave=False)
    ]


def summarize(results: Sequence[ImageResult]) -> dict[str, dict[str, float]]:
    """Dataset metrics: mean over images, per protocol."""
    return {"dense": mean_metrics(r.dense for r in results), "sparse": mean_metrics(r.sparse for r in results)}


def write_csv(path: Path, results: Sequence[ImageResult]) -> None:
    cols = ["index", "name", "n_valid", "n_query"]
    cols += [f"dense_{n}" for n in METRIC_NAMES] + [f"sparse_{n}" for n in METRIC_NAMES]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in results:
            w.writerow(
                [r.index, r.name, r.n_valid, r.n_query]
                + [r.dense[n] for n in METRIC_NAMES]
                + [r.sparse[n] for n in METRIC_NAMES]
            )


def save_extremes(
    predictor: DepthPredictor,
    dataset: Any,
    results: Sequence[ImageResult],
    out_dir: Path,
    count: int,
    k: int,
    seed: int,
    use_eigen_crop: bool,
    metric: str = "abs_rel",
) -> list[Path]:
    """Figures of the ``count`` worst and best images by dense ``metric`` (re-run through the predictor)."""
    scored = sorted((r for r in results if math.isfinite(r.dense[metric])), key=lambda r: r.dense[metric])
    if not scored or count <= 0:
        return []
    worst = scored[::-1][:count]
    best = [r for r in scored[:count] if r not in worst] if len(scored) > count else []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for tag, group in (("worst", worst), ("best", best)):
        for rank, r in enumerate(group):
            sample = dataset[r.index]
            _, out = evaluate_image(predictor, sample, r.index, k, seed, use_eigen_crop)
            path = out_dir / f"{tag}{rank + 1}_{r.index:05d}.png"
            title = f"{tag} #{rank + 1}: {r.name}  {metric} dense {r.dense[metric]:.4f}, sparse {r.sparse[metric]:.4f}"
            save_eval_figure(path, sample["image"], sample["depth"], out.pred, out.uv, title, out.mask)
            paths.append(path)
    return paths


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="spd-eval",
        description="Evaluate an spd_ros checkpoint: NYU metrics for the dense map and the sparse protocol "
        "(K random valid pixels per image answered by exact queries); writes a per-image CSV, a JSON summary "
        "and figures of the worst and best images.",
        epilog="Dataset: --dataset TYPE --data KEY=VALUE ... (keys as in the training YAML), or --config YAML "
        "(its data.val); by default the validation set recorded in the checkpoint.",
    )
    p.add_argument("checkpoint", help="checkpoint .pt written by spd-train")
    p.add_argument("--dataset", choices=("synthetic", "nyu", "rosbag"), help="dataset type")
    p.add_argument(
        "--data",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dataset keys, e.g. data_root=DIR filelist=FILE | n=32 seed=1 size=[96,128] | path=BAG",
    )
    p.add_argument("--config", help="training YAML whose data.val (or data.train) is evaluated")
    p.add_argument("--out", help="output directory (default: eval_<checkpoint name> next to the checkpoint)")
    p.add_argument("--k", type=positive_int, default=DEFAULT_K, help="sparse-protocol queries per image (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query pixels")
    p.add_argument(
        "--eigen-crop", choices=("auto", "on", "off"), default="auto", help="Eigen crop (auto: on for NYU only)"
    )
    p.add_argument("--max-images", type=positive_int, help="evaluate only the first N images")
    p.add_argument("--figures", type=nonneg_int, default=3, help="figures of the N worst and N best images")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="torch (default) | torch.compile | onnxruntime (the spd-export files)",
    )
    p.add_argument("--onnx-dir", help="spd-export's directory (default: <checkpoint stem>_onnx/ beside it)")
    p.add_argument(
        "--pixel-budget",
        type=positive_int,
        metavar="N",
        help="pixels the network sees (aspect kept, padded to multiples of 32); default: the checkpoint's H·W",
    )
    p.add_argument("--no-focal-scaling", action="store_true", help="ignore the dataset focal length")
    p.add_argument("--no-progress", action="store_true")
    return p


def _dataset_spec(args: argparse.Namespace, metadata: dict) -> dict:
    if args.dataset:
        spec: dict[str, Any] = {"type": args.dataset}
        spec.update(dict(parse_overrides(args.data)))
        return check_dataset_spec(spec, "--data")
    if args.data:
        raise ConfigError("--data needs --dataset TYPE (synthetic, nyu or rosbag)")
    if args.config:
        cfg = load_config(args.config)
        return cfg.data.val or cfg.data.train
    spec = (metadata.get("data") or {}).get("val")
    if not spec:
        raise ConfigError("no dataset given and none recorded in the checkpoint; pass --dataset and --data")
    return check_dataset_spec(spec, "checkpoint data.val")


def run(args: argparse.Namespace) -> dict:
    """Evaluate per the parsed CLI arguments; returns the JSON summary."""
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{Path(args.checkpoint).stem}"
    check_out_dir(out)
    ckpt = load_checkpoint(args.checkpoint)
    device = resolve_device(args.device)
    onnx_dir = args.onnx_dir or default_onnx_dir(args.checkpoint)
    predictor = DepthPredictor.from_model(
        ckpt.build_model("cpu" if args.backend == "onnxruntime" else device, f"checkpoint {args.checkpoint}"),
        ckpt,
        device,
        args.precision,
        args.pixel_budget,
        not args.no_focal_scaling,
        backend=args.backend,
        onnx_dir=onnx_dir,
    )
    spec = _dataset_spec(args, ckpt.metadata)
    dataset = build_dataset(spec, None, "--data")
    if len(dataset) == 0:
        raise ConfigError(f"dataset {spec} has no images")
    eigen = spec["type"] == "nyu" if args.eigen_crop == "auto" else args.eigen_crop == "on"
    out.mkdir(parents=True, exist_ok=True)
    results = evaluate_dataset(predictor, dataset, args.k, args.seed, eigen, args.max_images, not args.no_progress)
    summary = {
        "checkpoint": str(args.checkpoint),
        "dataset": spec,
        "n_images": len(results),
        "k": args.k,
        "seed": args.seed,
        "eigen_crop": eigen,
        "pixel_budget": predictor.pixel_budget,
        **summarize(results),
    }
    write_csv(out / "per_image.csv", results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True))
    figs = save_extremes(predictor, dataset, results, out / "figures", args.figures, args.k, args.seed, eigen)
    print(f"{len(results)} images, K={args.k} queries per image, Eigen crop {'on' if eigen else 'off'}")
    print(format_table({"dense": summary["dense"], "sparse": summary["sparse"]}))
    print(f"wrote {out / 'per_image.csv'}, {out / 'summary.json'} and {len(figs)} figures in {out / 'figures'}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError, *data_errors()) as e:
        print(f"spd-eval: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
