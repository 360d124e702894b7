"""Trainer: dense SILog training of SPDModel (plan §7) with exact resume and torchrun DDP.

AdamW with the encoder at ``encoder_lr_mult`` × lr, linear warm-up + poly decay (per step),
AMP, gradient clipping, last/best checkpoints (``spd_core.model.checkpoint`` format; optimizer,
scheduler, scaler, RNG and position in the data go into ``metadata["train_state"]``), tqdm
progress and TensorBoard scalars/images on rank 0. Validation runs the evaluation path
(:mod:`spd_core.eval.evaluate`, through DepthPredictor) on rank 0.
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from spd_core.config import ConfigError, TrainConfig, build_dataset
from spd_core.device import check_precision, resolve_device
from spd_core.eval.evaluate import DEFAULT_K, evaluate_dataset, evaluate_image, summarize
from spd_core.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    make_checkpoint,
    save_checkpoint,
)
from spd_core.model.spd_model import SPDModel
from spd_core.predictor import DepthPredictor
from spd_core.train.losses import SILogLoss
from spd_core.train.state import (
    DistInfo,
    EpochSeededDataset,
    ResumableSampler,
    TrainingDiverged,
    barrier,
    check_run_dir,
    lr_factor,
    mean_across,
    prepare_run_dir,
    rng_state,
    set_rng_state,
)

log = logging.getLogger(__name__)


def _round32(n: int) -> int:
    return max(32, round(n / 32) * 32)


class Trainer:
    """Owns model, optimizer, schedule, data and checkpoints of one training run (one rank)."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo | None = None) -> None:
        from spd_core.data import TrainTransform

        self.cfg, self.dist = cfg, dist or DistInfo()
        run, d = cfg.train, cfg.data
        self.device = resolve_device(run.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        amp = {"auto": "fp16" if self.device.type == "cuda" else "fp32", "off": "fp32"}.get(run.amp, run.amp)
        try:
            check_precision(amp, self.device)
        except ValueError as e:
            raise ConfigError(f"config key 'train.amp': {e}") from None
        self.precision = amp
        torch.manual_seed(run.seed)
        np.random.seed(run.seed)
        random.seed(run.seed)
        self.out_dir = Path(run.output_dir)
        check_run_dir(self.out_dir, run.resume, run.overwrite)

        transform = TrainTransform(
            crop=tuple(d.crop), rotate_deg=d.rotate_deg, flip=d.flip, color_jitter=d.color_jitter
        )
        self.train_set = EpochSeededDataset(build_dataset(d.train, transform, "data.train"), run.seed)
        self.val_set = build_dataset(d.val, None, "data.val") if d.val else None
        self.sampler = ResumableSampler(self.train_set, self.dist.world_size, self.dist.rank, run.seed)
        self.steps_per_epoch = self.sampler.num_samples // d.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"data.train has {len(self.train_set)} images: fewer than data.batch_size={d.batch_size} "
                f"x {self.dist.world_size} process(es); lower the batch size"
            )
        self.loader = DataLoader(
            self.train_set,
            batch_size=d.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=d.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        self.total_steps = run.epochs * self.steps_per_epoch
        self.input_size, self.train_focal = self._geometry()

        self.model = self._build_model()
        self.net: torch.nn.Module = self.model
        if self.dist.enabled:
            # depthwise conv weights [C,1,k,k]: strides differ only in a size-1 dim (harmless)
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        o = cfg.optim
        enc = list(self.model.encoder.parameters())
        enc_ids = {id(p) for p in enc}
        rest = [p for p in self.model.parameters() if id(p) not in enc_ids]
        groups = [{"params": enc, "lr": o.lr * o.encoder_lr_mult}, {"params": rest, "lr": o.lr}]
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        total, warm = self.total_steps, o.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warm, o.warmup_start, o.poly_power, o.end_lr_frac)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.criterion = SILogLoss(cfg.loss.silog_lambda, cfg.loss.silog_scale, max_depth=cfg.loss.max_depth)

        self.epoch = self.step = self.step_in_epoch = 0
        self.best = math.inf
        self.losses: list[float] = []
        self.val_history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        if run.resume:
            self.load(run.resume)
        self.writer = None
        if self.dist.is_main:
            prepare_run_dir(self.out_dir, run.overwrite)
        if self.dist.is_main and run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"))

    # -- set-up --------------------------------------------------------------------------
    def _build_model(self) -> SPDModel:
        """Same init on every rank (seeded); rank 0 fetches pretrained weights first."""
        weights = None if self.cfg.train.resume else self.cfg.encoder_weights
        if not self.dist.is_main:
            barrier(self.dist)
        model = SPDModel(self.cfg.model_config, encoder_weights=weights).to(self.device)
        if self.dist.is_main:
            barrier(self.dist)
        return model.train()

    def _geometry(self) -> tuple[tuple[int, int], float]:
        """(inference input size [H,W], focal in training-input pixels) for the checkpoint."""
        value = self.train_set[0].get("focal")
        focal = float(value) if value is not None else math.nan
        if not math.isfinite(focal) or focal <= 0:
            raise ConfigError(f"data.train gives no focal length ({value}); set default_focal or an info_topic")
        if self.cfg.data.input_size:
            return (self.cfg.data.input_size[0], self.cfg.data.input_size[1]), focal
        raw = self.val_set if self.val_set is not None else build_dataset(self.cfg.data.train, None, "data.train")
        h, w = np.asarray(raw[0]["image"]).shape[:2]
        return (_round32(h), _round32(w)), focal

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: dict) -> float:
        """One optimizer step on a batch; returns the (rank-local) loss. TrainingDiverged (no step)
        when the loss is NaN/inf on any rank."""
        x = batch["image"].to(self.device, non_blocking=True)
        gt = batch["depth"].to(self.device, non_blocking=True)
        loss = self.criterion(self.net(x, precision=self.precision), gt)
        self._check_finite(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip or math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.scaler.is_enabled() or torch.isfinite(norm):
            self.scaler.step(self.optimizer)  # skips the step itself on inf/NaN fp16 gradients
        else:
            log.warning("step %d: non-finite gradient norm, step skipped (lower optim.lr?)", self.step + 1)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs`` (or ``train.max_steps``); returns paths and the loss history.

        Raises TrainingDiverged at the first non-finite loss (see :meth:`train_step`); nothing is saved then.
        """
        run = self.cfg.train
        stopped = False
        if run.val_at_start and self.step == 0 and self.val_set is not None:
            self.validate()
        while self.epoch < run.epochs and not stopped:
            stopped = self._train_epoch()
            if not stopped:
                self.epoch += 1
                self.step_in_epoch = 0
            due = self.epoch % run.val_every_epochs == 0 or self.epoch == run.epochs
            validated = self.val_set is not None and (stopped or due)
            if validated:
                self.validate()
            self.save(validated=validated)
        if self.writer is not None:
            self.writer.flush()
        last = self.out_dir / "last.pt"
        best = self.out_dir / "best.pt"
        return {
            "last": last,
            "best": best if best.exists() else None,
            "step": self.step,
            "losses": list(self.losses),
            "val": list(self.val_history),
        }

    def _train_epoch(self) -> bool:
        """The rest of the current epoch; True when ``train.max_steps`` stopped it early."""
        run, bs = self.cfg.train, self.cfg.data.batch_size
        self.sampler.set_epoch(self.epoch)
        self.train_set.set_epoch(self.epoch)
        self.sampler.skip = self.step_in_epoch * bs
        self.model.train()
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            disable=not (self.dist.is_main and run.progress),
            desc=f"epoch {self.epoch + 1}/{run.epochs}",
            dynamic_ncols=True,
        )
        window: list[float] = []
        try:
            for batch in self.loader:
                loss = self.train_step(batch)
                self.step += 1
                self.step_in_epoch += 1
                self.losses.append(loss)
                window.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.scheduler.get_last_lr()[1]:.2e}")
                if self.step % run.log_every == 0:
                    self._log_scalars(window)
                    window = []
                if run.max_steps and self.step >= run.max_steps:
                    return True
                if run.ckpt_every_steps and self.step % run.ckpt_every_steps == 0:
                    self.save(validated=False)
        finally:
            bar.close()
        return False

    def _check_finite(self, loss: float) -> None:
        """TrainingDiverged when the loss of any rank is NaN/inf (all ranks agree, before backward):
        the weights are lost, so training stops before anything of them is saved."""
        mean = mean_across(loss, self.dist, self.device)
        if math.isfinite(mean):
            return
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1}: loss is {mean}; stopped, nothing saved since the last "
            f"checkpoint in {self.out_dir}; lower optim.lr ({self.cfg.optim.lr:g}) or check the data"
        )

    def _log_scalars(self, window: list[float]) -> None:
        mean = mean_across(sum(window) / max(1, len(window)), self.dist, self.device)
        if self.writer is None:
            return
        self.writer.add_scalar("train/silog", mean, self.step)
        lr_enc, lr_dec = self.scheduler.get_last_lr()
        self.writer.add_scalar("train/lr_decoder", lr_dec, self.step)
        self.writer.add_scalar("train/lr_encoder", lr_enc, self.step)
        if self.scaler.is_enabled():
            self.writer.add_scalar("train/grad_scale", self.scaler.get_scale(), self.step)

    # -- validation ------------------------------------------------------------------------
    def predictor(self) -> DepthPredictor:
        """The inference path on the current weights (puts the model in eval mode)."""
        return DepthPredictor(self.model, self.train_focal, self.input_size[0] * self.input_size[1], self.device)

    def validate(self) -> dict[str, Any] | None:
        """Dense + sparse metrics on the val set (rank 0; other ranks wait)."""
        metrics = None
        if self.dist.is_main and self.val_set is not None:
            eigen = self.cfg.data.val["type"] == "nyu"
            predictor = self.predictor()
            results = evaluate_dataset(predictor, self.val_set, DEFAULT_K, 0, eigen, self.cfg.data.val_max_images)
            metrics = summarize(results)
            self.metrics = metrics
            self.val_history.append({"step": self.step, "epoch": self.epoch, **metrics})
            log.info(
                "step %d val: dense SILog %.3f AbsRel %.4f d1 %.3f | sparse SILog %.3f",
                self.step,
                metrics["dense"]["silog"],
                metrics["dense"]["abs_rel"],
                metrics["dense"]["d1"],
                metrics["sparse"]["silog"],
            )
            if self.writer is not None:
                self._log_val(metrics, predictor, eigen)
        self.model.train()
        barrier(self.dist)
        return metrics

    def _log_val(self, metrics: dict, predictor: DepthPredictor, eigen: bool) -> None:
        from spd_core.eval.figures import depth_panel

        for proto, values in metrics.items():
            for name, v in values.items():
                self.writer.add_scalar(f"val_{proto}/{name}", v, self.step)
        for i in range(min(self.cfg.train.num_image_samples, len(self.val_set))):
            sample = self.val_set[i]
            _, out = evaluate_image(predictor, sample, i, DEFAULT_K, 0, eigen)
            panel = depth_panel(sample["image"], sample["depth"], out.pred)
            self.writer.add_image(f"val/sample_{i}", panel, self.step, dataformats="HWC")

    # -- checkpoints -----------------------------------------------------------------------
    def train_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "batch_size": self.cfg.data.batch_size,
            "world_size": self.dist.world_size,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
        }

    def save(self, validated: bool) -> None:
        """Write last.pt (and best.pt when validation improved dense SILog); rank 0 only."""
        if self.dist.is_main:
            silog = self.metrics.get("dense", {}).get("silog", math.nan) if validated else math.nan
            is_best = math.isfinite(silog) and silog < self.best
            if is_best:
                self.best = silog
            meta = {
                "train_state": self.train_state(),
                "config": self.cfg.to_dict(),
                "data": {"train": self.cfg.data.train, "val": self.cfg.data.val},
                "metrics": self.metrics,
                "val_history": self.val_history,
                "precision": self.precision,
            }
            ckpt = make_checkpoint(
                self.model,
                train_focal=self.train_focal,
                input_size=self.input_size,
                max_depth=self.cfg.loss.max_depth,
                metadata=meta,
            )
            save_checkpoint(self.out_dir / "last.pt", ckpt)
            if is_best:
                save_checkpoint(self.out_dir / "best.pt", ckpt)
        barrier(self.dist)

    def load(self, path: str) -> None:
        """Resume from a checkpoint written by :meth:`save` (weights, optimizer, schedule, RNG, position)."""
        ckpt = load_checkpoint(path)
        if ckpt.config != self.model.config:
            raise ConfigError(
                f"resume checkpoint {path} has model {ckpt.config}, the config asks for "
                f"{self.model.config}; use the same model section"
            )
        st = ckpt.metadata.get("train_state")
        if not isinstance(st, dict):
            raise CheckpointError(f"checkpoint {path} has no training state (not written by spd-train); cannot resume")
        load_weights(self.model, ckpt.state_dict, f"resume checkpoint {path}")
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        self.epoch, self.step, self.step_in_epoch = st["epoch"], st["step"], st["step_in_epoch"]
        self.best = float(st["best"])
        self.losses = torch.as_tensor(st.get("losses", [])).tolist()
        self.metrics = dict(ckpt.metadata.get("metrics") or {})
        self.val_history = list(ckpt.metadata.get("val_history") or [])
        if (st["batch_size"], st["world_size"]) != (self.cfg.data.batch_size, self.dist.world_size):
            log.warning(
                "resuming with batch size/world size %s, saved with %s: the data order will differ",
                (self.cfg.data.batch_size, self.dist.world_size),
                (st["batch_size"], st["world_size"]),
            )
        log.info("resumed %s at epoch %d step %d", path, self.epoch, self.step)
