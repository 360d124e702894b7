"""What an exported file carries about its model, and the check that it fits a checkpoint.

Every ONNX file of an export holds the metadata in its ``metadata_props`` (keys ``spd_ros.*``,
JSON values); ``spd.<precision>.json`` beside the files repeats it for people and scripts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spd_core.model.checkpoint import Checkpoint

FORMAT = "spd_ros.onnx"
VERSION = 1
PREFIX = "spd_ros."
PRECISIONS = ("fp32", "fp16")


class OnnxModelError(ValueError):
    """An export that cannot be used; the message says what is wrong and what to do."""


def file_name(precision: str, part: str) -> str:
    return f"spd.{precision}.{part}.onnx"


def json_name(precision: str) -> str:
    return f"spd.{precision}.json"


def default_onnx_dir(checkpoint: str | Path) -> Path:
    """Where spd-export writes and the onnxruntime backend looks by default: ``<stem>_onnx/``
    beside the checkpoint."""
    path = Path(checkpoint)
    return path.with_name(path.stem + "_onnx")


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: equal weights hash
    equal however the checkpoint file was written."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def spd_ros_version() -> str:
    try:
        return importlib_metadata.version("spd_ros")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ModelIdentity:
    """What an export must agree on with the checkpoint it is used with."""

    model_config: dict[str, Any]
    weights_sha256: str
    input_size: list[int]
    train_focal: float
    max_depth: float

    @classmethod
    def of(cls, ckpt: Checkpoint) -> ModelIdentity:
        return cls(
            ckpt.config.to_dict(),
            weights_sha256(ckpt.state_dict),
            [int(s) for s in ckpt.input_size],
            float(ckpt.train_focal),
            float(ckpt.max_depth),
        )


def export_metadata(identity: ModelIdentity, precision: str, **extra: Any) -> dict[str, Any]:
    """The metadata of one export (every file of it, and the JSON)."""
    return {"format": FORMAT, "version": VERSION, "precision": precision, **asdict(identity), **extra}


def to_props(meta: dict[str, Any], part: str) -> dict[str, str]:
    """metadata_props of the ``part`` file: ``spd_ros.<key>`` -> JSON."""
    return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in {**meta, "part": part}.items()}


def from_props(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`to_props` (keys without the prefix); unparsable values stay strings."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if key.startswith(PREFIX):
            try:
                out[key[len(PREFIX) :]] = json.loads(value)
            except json.JSONDecodeError:
                out[key[len(PREFIX) :]] = value
    return out


def _difference(key: str, have: Any, want: Any) -> str:
    """'<key> <file value> in the file, <checkpoint value> in the checkpoint', only what differs."""
    if isinstance(have, dict) and isinstance(want, dict):
        keys = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
        have, want = {k: have.get(k) for k in keys}, {k: want.get(k) for k in keys}
    elif key.endswith("sha256") and isinstance(have, str):
        have, want = have[:12] + "...", want[:12] + "..."
    return f"{key} {json.dumps(have)} in the file, {json.dumps(want)} in the checkpoint"


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(have, (int, float)):
        return bool(np.isclose(have, want, rtol=1e-9, atol=0.0))
    return have == want


def check_metadata(path: Path, meta: dict[str, Any], identity: ModelIdentity, precision: str, part: str) -> None:
    """OnnxModelError (one line) unless the file at ``path`` is the ``part`` of a ``precision``
    export of the checkpoint that ``identity`` describes."""
    fp = f" --precision {precision}" if precision != "fp32" else ""
    redo = f"re-export: spd-export CHECKPOINT --out {path.parent}{fp}"
    if meta.get("format") != FORMAT:
        raise OnnxModelError(f"{path} is not an spd_ros ONNX export (no {PREFIX}format metadata); {redo}")
    if meta.get("version") != VERSION:
        raise OnnxModelError(f"{path} is export version {meta.get('version')}, this spd_ros reads {VERSION}; {redo}")
    for key, want in (("part", part), ("precision", precision)):
        if meta.get(key) != want:
            raise OnnxModelError(f"{path} holds {key} {meta.get(key)!r}, expected {want!r}; {redo}")
    for key, want in asdict(identity).items():
        if not _same(meta.get(key), want):
            raise OnnxModelError(
                f"{path} does not match the checkpoint: {_difference(key, meta.get(key), want)}; {redo}"
            )
