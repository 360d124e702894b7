"""Versioned checkpoints: a plain dict of tensors and builtins, loaded with ``weights_only=True``.

Loading a checkpoint never runs code. Layout (``format``/``version`` identify it)::

    {"format": "spd_ros.checkpoint", "version": 1,
     "model_config": {...ModelConfig...}, "state_dict": {...},
     "train_focal": 518.8579, "input_size": [H, W], "max_depth": 10.0,
     "metadata": {...free-form: data, metrics, epoch, optimizer state...}}
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import warnings
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

    def build_model(self, device: torch.device | str = "cpu", where: str = "checkpoint") -> SPDModel:
        """An SPDModel with these weights, in eval mode, on ``device``; ``where`` names it in errors."""
        model = SPDModel(self.config)
        load_weights(model, self.state_dict, where)
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_input_size(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 and s % 32 == 0 for s in value)
    )


# field -> (required, check, what is expected)
FIELDS: dict[str, tuple[bool, Any, str]] = {
    "train_focal": (True, lambda v: _is_number(v) and v > 0, "a finite number > 0 (px at input_size)"),
    "input_size": (True, _is_input_size, "[H, W]: two ints > 0, multiples of 32"),
    "max_depth": (False, lambda v: _is_number(v) and v > 0, "a finite number > 0 (metres)"),
    "metadata": (False, lambda v: v is None or isinstance(v, dict), "a mapping"),
}


def _read(path: Path) -> Any:
    """torch.load with ``weights_only`` (no code runs); CheckpointError for anything unreadable."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass the path of a .pt written by spd-train")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": a plain pickle, refused below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        why = "it holds objects other than tensors and builtins; nothing was run"
    except Exception as e:  # a text file, a truncated zip...: torch raises many types; all mean "unusable"
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:120]
        why = f"{type(e).__name__}: {first}" if first else type(e).__name__
    raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint ({why}); pass an spd-train .pt")


def check_state_dict(state: Any, where: str) -> dict[str, torch.Tensor]:
    """A mapping of parameter names to finite tensors, else CheckpointError (one line)."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{where}: state_dict is {type(state).__name__}; expected a mapping of name -> tensor")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where}: state_dict entry {key!r:.60} is {type(value).__name__}; expected a tensor under a str name"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: state_dict[{key!r}] has NaN/inf values (a diverged run?); retrain")
    return state


def load_weights(model: SPDModel, state: dict[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(state)`` strictly; a mismatch is one CheckpointError line, not a traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (first {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (first {unexpected[0]})"] if unexpected else []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (first {k}: {list(state[k].shape)} vs {list(own[k].shape)})")
        raise CheckpointError(
            f"{where}: weights do not fit model {model.config.encoder} (fpn_dim {model.config.fpn_dim}): "
            f"{', '.join(parts)}; is model_config the one it was trained with?"
        )
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint field by field; raises CheckpointError with one clear line."""
    path = Path(path)
    raw = _read(path)
    where = f"checkpoint {path}"
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an spd_ros checkpoint (no format={FORMAT!r}); use spd-train output")
    if raw.get("version") != VERSION:
        raise CheckpointError(f"{where} has version {raw.get('version')!r:.40}, this spd_ros reads version {VERSION}")
    for name, (required, ok, expected) in FIELDS.items():
        if name not in raw:
            if required:
                raise CheckpointError(f"{where}: field {name!r} is missing; expected {expected}")
        elif not ok(raw[name]):
            raise CheckpointError(f"{where}: {name} = {raw[name]!r:.60} is not valid; expected {expected}")
    if "model_config" not in raw:
        raise CheckpointError(f"{where}: field 'model_config' is missing; expected a mapping of ModelConfig fields")
    try:
        config = ModelConfig.from_dict(raw["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: model_config: {e}") from None
    return Checkpoint(
        config=config,
        state_dict=check_state_dict(raw.get("state_dict"), where),
        train_focal=float(raw["train_focal"]),
        input_size=(raw["input_size"][0], raw["input_size"][1]),
        max_depth=float(raw.get("max_depth", 10.0)),
        metadata=dict(raw.get("metadata") or {}),
    )


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[SPDModel, Checkpoint]:
    """Load a checkpoint and build its model on ``device`` (eval mode)."""
    ckpt = load_checkpoint(path)
    return ckpt.build_model(device, f"checkpoint {path}"), ckpt
