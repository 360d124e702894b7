"""Training configuration: YAML file + ``key.sub=value`` overrides -> a checked TrainConfig.

Sections (see ``config/train_nyu.yaml``): ``model`` (ModelConfig fields), ``encoder_weights``
(timm tag such as ``fcmae`` or a local file; CC-BY-NC-4.0 weights), ``data`` (train/val dataset
specs, augmentation, batch size), ``optim`` (AdamW, warm-up + poly decay, clipping), ``loss``
(SILog λ) and ``train`` (epochs, AMP, seed, device, output directory, logging, resume).

A dataset spec is a dict with ``type`` and that type's keys::

    {type: synthetic, n: 64, seed: 0, size: [480, 640]}
    {type: nyu, data_root: DIR, filelist: FILE, gt_root: null, depth_scale: 1000.0}
    {type: rosbag, path: BAG, color_topic: ..., depth_topic: ..., info_topic: null,
     tolerance_s: 0.02, default_focal: null}
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spd_core.model.spd_model import ModelConfig


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what to do."""


DATASET_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "synthetic": {"n": int, "seed": int, "size": list},
    "nyu": {"data_root": str, "filelist": str, "gt_root": (str, type(None)), "depth_scale": float},
    "rosbag": {
        "path": str,
        "color_topic": str,
        "depth_topic": str,
        "info_topic": (str, type(None)),
        "tolerance_s": float,
        "default_focal": (float, type(None)),
    },
}
DATASET_REQUIRED = {"synthetic": (), "nyu": ("data_root", "filelist"), "rosbag": ("path",)}
AMP_MODES = ("auto", "off", "fp16", "bf16")
TYPE_WORDS: dict[Any, str] = {float: "finite number", int: "integer", bool: "boolean (true/false)"}


@dataclass
class DataSection:
    train: dict = field(default_factory=lambda: {"type": "synthetic", "n": 64, "seed": 0})
    val: dict | None = None
    input_size: list[int] | None = None  # inference/validation size [H, W]; default: the val image size
    crop: list[int] = field(default_factory=lambda: [416, 544])  # random training crop [h, w]
    rotate_deg: float = 2.5
    flip: bool = True
    color_jitter: bool = True
    batch_size: int = 4
    num_workers: int = 2
    val_max_images: int | None = None


@dataclass
class OptimSection:
    lr: float = 1e-4  # decoder (FPN, local path, head); plan §7.4
    encoder_lr_mult: float = 0.1  # encoder lr = lr · 0.1 = 1e-5
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 500
    warmup_start: float = 0.01  # lr factor at step 0, rising linearly to 1 over warmup_steps
    poly_power: float = 0.9
    end_lr_frac: float = 0.01  # lr factor reached at the last step
    grad_clip: float | None = 1.0  # max global grad norm; null = off


@dataclass
class LossSection:
    silog_lambda: float = 0.85
    silog_scale: float = 10.0
    max_depth: float = 10.0


@dataclass
class RunSection:
    epochs: int = 25
    max_steps: int | None = None  # stop early after this many optimizer steps (schedule unchanged)
    amp: str = "auto"  # auto (fp16 on CUDA, off on CPU) | off | fp16 | bf16
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/spd"
    log_every: int = 20
    ckpt_every_steps: int | None = None  # also write last.pt every N steps (besides every epoch)
    val_every_epochs: int = 1
    val_at_start: bool = False  # also validate the initial weights (a baseline in val_history)
    num_image_samples: int = 2  # validation images logged to TensorBoard
    tensorboard: bool = True
    progress: bool = True
    resume: str | None = None
    overwrite: bool = False  # replace an earlier run in output_dir (else refused, unless resuming it)


@dataclass
class TrainConfig:
    model: dict = field(default_factory=lambda: ModelConfig().to_dict())
    encoder_weights: str | None = None
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    train: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``hint`` (YAML gives strings for '1e-3')."""
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise ConfigError(f"config key {key!r} must not be null")
    if args and type(None) in args:
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    try:
        if origin in (bool, int, float, str):
            return _coerce_scalar(value, origin)
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            (item,) = typing.get_args(hint) or (Any,)
            return [value_ if item is Any else _coerce(value_, item, key) for value_ in value]
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        what = TYPE_WORDS.get(hint, getattr(hint, "__name__", hint))
        raise ConfigError(f"config key {key!r} = {value!r} is not a valid {what}") from None
    return value


def _coerce_scalar(value: Any, kind: type) -> Any:
    """bool, int, float or str from YAML; TypeError/ValueError when it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if kind is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on/no/yes as a bool
            return "on" if value else "off"
        return str(value)
    if isinstance(value, bool):
        raise TypeError
    out = kind(value)
    if kind is int and isinstance(value, float) and out != value:
        raise TypeError
    if kind is float and not math.isfinite(out):  # .inf / nan: no setting means that (null switches off)
        raise ValueError
    return out


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known keys here: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def check_dataset_spec(spec: dict | None, key: str) -> dict | None:
    """Validate a dataset spec (type + that type's keys); returns a normalized copy."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"config key {key!r} must be a mapping with 'type' ({', '.join(DATASET_KEYS)})")
    kind = spec["type"]
    if kind not in DATASET_KEYS:
        raise ConfigError(f"config key {key + '.type'!r} = {kind!r} is not one of {', '.join(DATASET_KEYS)}")
    allowed = DATASET_KEYS[kind]
    out: dict[str, Any] = {"type": kind}
    for name, value in spec.items():
        if name == "type":
            continue
        if name not in allowed:
            raise ConfigError(
                f"unknown config key {f'{key}.{name}'!r} for a {kind} dataset; known: {', '.join(allowed)}"
            )
        types = allowed[name] if isinstance(allowed[name], tuple) else (allowed[name],)
        out[name] = None if value is None and type(None) in types else _coerce(value, types[0], f"{key}.{name}")
    for name in DATASET_REQUIRED[kind]:
        if out.get(name) in (None, ""):
            raise ConfigError(f"config key {f'{key}.{name}'!r} is required for a {kind} dataset")
    if kind == "synthetic" and "size" in out and (len(out["size"]) != 2 or min(out["size"]) < 8):
        raise ConfigError(f"config key {key + '.size'!r} must be [H, W], got {out['size']}")
    return out


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["optim.lr=1e-3", "data.val=null"]`` -> [(key, YAML-parsed value)]."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=1e-3)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file <- overrides; raises ConfigError with one clear line."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; pass an existing YAML (e.g. config/train_synthetic.yaml)")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "syntax error"
            raise ConfigError(f"config file {p} is not valid YAML ({first})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections")
    tree = copy.deepcopy(tree)
    for key, value in parse_overrides(overrides or []):
        _set_path(tree, key, value)
    return config_from_dict(tree)


def config_from_dict(tree: dict) -> TrainConfig:
    """Build and check a TrainConfig from a nested dict (file contents + overrides)."""
    model = tree.pop("model", None) or {}
    cfg: TrainConfig = _build(TrainConfig, tree, "")
    merged = {**ModelConfig().to_dict(), **model} if isinstance(model, dict) else model
    try:
        cfg.model = ModelConfig.from_dict(merged).to_dict()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config section 'model': {e}") from None
    cfg.data.train = check_dataset_spec(cfg.data.train, "data.train")
    if cfg.data.train is None:
        raise ConfigError("config key 'data.train' is required (a dataset spec with 'type')")
    cfg.data.val = check_dataset_spec(cfg.data.val, "data.val")
    _check_values(cfg)
    return cfg


def _check_values(cfg: TrainConfig) -> None:
    d, o, r = cfg.data, cfg.optim, cfg.train
    for key, size in (("data.crop", d.crop), ("data.input_size", d.input_size)):
        if size is not None and (len(size) != 2 or any(s <= 0 or s % 32 for s in size)):
            raise ConfigError(f"config key {key!r} = {size} must be [H, W] with multiples of 32")
    checks = [
        ("data.batch_size", d.batch_size >= 1, "must be >= 1"),
        ("data.num_workers", d.num_workers >= 0, "must be >= 0"),
        ("optim.lr", o.lr > 0, "must be > 0"),
        ("optim.encoder_lr_mult", o.encoder_lr_mult >= 0, "must be >= 0"),
        ("optim.betas", len(o.betas) == 2, "must be [beta1, beta2]"),
        ("optim.warmup_steps", o.warmup_steps >= 0, "must be >= 0"),
        ("optim.grad_clip", o.grad_clip is None or o.grad_clip > 0, "must be > 0 or null"),
        ("loss.silog_lambda", 0.0 <= cfg.loss.silog_lambda <= 1.0, "must be in [0, 1]"),
        ("train.epochs", r.epochs >= 1, "must be >= 1"),
        ("train.max_steps", r.max_steps is None or r.max_steps >= 1, "must be >= 1 or null"),
        ("train.amp", r.amp in AMP_MODES, f"must be one of {', '.join(AMP_MODES)}"),
        ("train.log_every", r.log_every >= 1, "must be >= 1"),
        ("train.val_every_epochs", r.val_every_epochs >= 1, "must be >= 1"),
    ]
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} {what}")


def one_line(e: BaseException) -> str:
    """An exception as one line for a CLI (a DataLoader worker's error: its original last line)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
    if len(lines) > 1 and "Original Traceback" in str(e):
        return lines[-1]
    return lines[0]


def data_errors() -> tuple[type[BaseException], ...]:
    """The datasets' error type (DataError), for CLIs that turn bad input into one line."""
    try:
        from spd_core.data import DataError
    except ImportError:
        return ()
    return (DataError,)


def check_dataset_paths(spec: dict, key: str) -> None:
    """Raise ConfigError when a dataset's files are missing (before any work starts)."""
    kind = spec["type"]
    if kind == "nyu":
        if not Path(spec["data_root"]).is_dir():
            raise ConfigError(f"{key}: data_root {spec['data_root']} is not a directory; point it at the NYU data")
        if not Path(spec["filelist"]).is_file():
            raise ConfigError(f"{key}: filelist {spec['filelist']} not found; give a BTS-style file list")
    elif kind == "rosbag" and not Path(spec["path"]).exists():
        raise ConfigError(f"{key}: path {spec['path']} not found; give a rosbag2 directory or file")


def build_dataset(spec: dict, transform: Any = None, key: str = "data") -> Any:
    """The dataset a spec names (see module doc), with ``transform`` (None = raw numpy samples)."""
    import spd_core.data as data  # the datasets import rosbags etc.; only needed here

    check_dataset_paths(spec, key)
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "synthetic":
        if "size" in kwargs:
            kwargs["size"] = tuple(kwargs["size"])
        return data.SyntheticRGBD(transform=transform, **kwargs)
    if spec["type"] == "nyu":
        return data.NYUDepthV2(transform=transform, **kwargs)
    return data.RosbagRGBD(transform=transform, **kwargs)
