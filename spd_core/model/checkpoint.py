"""Versioned checkpoints: a plain dict of tensors and builtins, loaded with ``weights_only=True``.

Loading a checkpoint never runs code. Layout (``format``/``version`` identify it)::

    {"format": "spd_ros.checkpoint", "version": 1,
     "model_config": {...ModelConfig...}, "state_dict": {...},
     "train_focal": 518.8579, "input_size": [H, W], "max_depth": 10.0,
     "metadata": {...free-form: data, metrics, epoch, optimizer state...}}
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spd_core.model.spd_model import ModelConfig, SPDModel

log = logging.getLogger(__name__)

FORMAT = "spd_ros.checkpoint"
VERSION = 1
NYU_FOCAL = 518.8579  # px at 640×480 (NYU Depth V2 / BTS)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says what is wrong and what to do."""


@dataclass
class Checkpoint:
    """A model plus what inference needs to know about how it was trained."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    train_focal: float = NYU_FOCAL
    input_size: tuple[int, int] = (480, 640)
    max_depth: float = 10.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_config": self.config.to_dict(),
            "state_dict": self.state_dict,
            "train_focal": float(self.train_focal),
            "input_size": [int(s) for s in self.input_size],
            "max_depth": float(self.max_depth),
            "metadata": self.metadata,
        }

    def build_model(self, device: torch.device | str = "cpu") -> SPDModel:
        """An SPDModel with these weights, in eval mode, on ``device``."""
        model = SPDModel(self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(
                f"checkpoint weights do not fit model {self.config.encoder}: {' '.join(first[:2])[:300]}"
            ) from None
        return model.to(device).eval()


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write atomically (temp file + rename), so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt.to_dict(), tmp)
    os.replace(tmp, path)


def make_checkpoint(model: SPDModel, **kwargs: Any) -> Checkpoint:
    """Checkpoint of ``model``'s current weights (copied to the CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return Checkpoint(config=model.config, state_dict=state, **kwargs)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; raises CheckpointError with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass the path of a .pt written by spd-train")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file ({msg}); re-export it") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an spd_ros checkpoint (no format={FORMAT!r}); use spd-train output")
    if raw.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {raw.get('version')}, this spd_ros reads version {VERSION}"
        )
    try:
        config = ModelConfig.from_dict(raw["model_config"])
        ckpt = Checkpoint(
            config=config,
            state_dict=raw["state_dict"],
            train_focal=float(raw["train_focal"]),
            input_size=tuple(int(s) for s in raw["input_size"]),
            max_depth=float(raw["max_depth"]),
            metadata=dict(raw.get("metadata") or {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is missing or has a bad field ({e}); re-export it") from None
    if ckpt.train_focal <= 0 or len(ckpt.input_size) != 2 or any(s % 32 for s in ckpt.input_size):
        raise CheckpointError(
            f"checkpoint {path}: bad train_focal {ckpt.train_focal} or input_size {ckpt.input_size} "
            "(focal > 0, sizes multiples of 32)"
        )
    return ckpt


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[SPDModel, Checkpoint]:
    """Load a checkpoint and build its model on ``device`` (eval mode)."""
    ckpt = load_checkpoint(path)
    return ckpt.build_model(device), ckpt
