"""spd-train: train SPDModel with dense SILog from a YAML config plus ``key=value`` overrides.

    spd-train --config config/train_synthetic.yaml
    spd-train --config config/train_nyu.yaml optim.lr=2e-4 train.epochs=10
    spd-train --config config/train_nyu.yaml --resume runs/nyu/last.pt
    torchrun --nproc_per_node 4 -m spd_core.train.cli --config config/train_nyu.yaml   # DDP

Writes ``last.pt`` / ``best.pt`` (spd_core.model.checkpoint format) and TensorBoard logs (``tb/``) into
``train.output_dir``. ConvNeXt V2 pretrained weights (``encoder_weights: fcmae``) are CC-BY-NC-4.0.

An output dir that holds an earlier run (``last.pt`` / ``best.pt``) is refused unless ``--resume`` continues
that run or ``--overwrite`` replaces it (its checkpoints and TensorBoard events are deleted first).
A loss that turns NaN/inf stops training at once with one line and exit 1: nothing of the diverged
state is written (``best.pt`` / ``last.pt`` keep what the earlier, finite epochs wrote, if any).
Bad configs and inputs: one line, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch.distributed as torch_dist

from spd_core.cli_args import OneLineParser
from spd_core.config import ConfigError, TrainConfig, data_errors, load_config, one_line
from spd_core.device import resolve_device
from spd_core.model.checkpoint import CheckpointError
from spd_core.train.state import DistInfo, TrainingDiverged, init_distributed

if TYPE_CHECKING:
    from spd_core.train.trainer import Trainer

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="spd-train",
        description="Train the SPD depth model (dense SILog, AdamW, warm-up + poly decay, AMP, DDP via torchrun).",
        epilog="Overrides use dotted keys of the YAML, e.g. optim.lr=2e-4 data.batch_size=8 "
        "data.train.n=100 train.amp=bf16. See config/train_nyu.yaml for every key.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("--resume", help="checkpoint (last.pt) to continue from exactly")
    p.add_argument("--output-dir", help="same as train.output_dir=DIR")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in the output dir (else refused unless resumed)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _overrides(args: argparse.Namespace) -> list[str]:
    """The positional overrides plus those the flags stand for."""
    flags = {
        "train.resume": args.resume,
        "train.output_dir": args.output_dir,
        "train.overwrite": "true" if args.overwrite else None,
    }
    return [*args.overrides, *(f"{key}={value}" for key, value in flags.items() if value)]


def _train(cfg: TrainConfig) -> tuple[DistInfo, Trainer, dict]:
    """Train in this process (one rank of a torchrun job, or alone); the process group is left after."""
    from spd_core.train.trainer import Trainer

    dist = init_distributed(resolve_device(cfg.train.device).type)
    try:
        trainer = Trainer(cfg, dist)
        return dist, trainer, trainer.fit()
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config, _overrides(args))
        if args.print_config:
            import yaml

            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return 0
        dist, trainer, result = _train(cfg)
    except TrainingDiverged as e:
        print(f"spd-train: error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError, *data_errors()) as e:
        print(f"spd-train: error: {one_line(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # a bad value reaching torch/timm (e.g. an unknown encoder name)
        if args.verbose:
            raise
        print(f"spd-train: error: {one_line(e)}", file=sys.stderr)
        return 2
    if dist.is_main:
        if trainer.metrics:
            from spd_core.eval.metrics import format_table

            print(format_table(trainer.metrics))
        print(f"checkpoint: {result['last']}" + (f" (best: {result['best']})" if result["best"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
