"""Pieces that make training resumable exactly and runnable under ``torchrun``.

- :class:`ResumableSampler`: DistributedSampler (seeded per epoch) that can skip the samples
  already consumed in the epoch a checkpoint was written in.
- :class:`EpochSeededDataset`: augmentation randomness is a function of (seed, epoch, index),
  so it does not depend on workers, ranks or where training was interrupted.
- RNG state capture/restore as tensors and builtins (checkpoints load with ``weights_only``).
- The warm-up + poly learning-rate factor; process-group set-up from torchrun's environment.
- The run directory: an earlier run in it is never silently replaced.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from spd_core.config import ConfigError

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose first ``skip`` indices (of this rank, this epoch) are dropped."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class EpochSeededDataset(Dataset):
    """Wraps a dataset so item ``i`` of epoch ``e`` is drawn with RNGs seeded from (seed, e, i).

    torch, numpy and ``random`` global states are seeded for the call and restored afterwards,
    and a transform with an ``rng`` attribute (numpy Generator) gets a fresh seeded one.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        ss = np.random.SeedSequence([self.seed, self.epoch, int(index)])
        s32, s64 = ss.generate_state(1)[0], int(ss.generate_state(1, np.uint64)[0])
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and isinstance(getattr(transform, "rng", None), np.random.Generator):
            transform.rng = np.random.default_rng(ss)
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s64)
            np.random.seed(s32)
            random.seed(s64)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


def rng_state() -> dict[str, Any]:
    """torch (CPU + CUDA), numpy and python RNG states as tensors/builtins."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def lr_factor(step: int, total: int, warmup: int, warmup_start: float, power: float, end: float) -> float:
    """Linear warm-up from ``warmup_start`` to 1 over ``warmup`` steps, then poly decay to ``end``."""
    if warmup > 0 and step < warmup:
        return warmup_start + (1.0 - warmup_start) * step / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return end + (1.0 - end) * (1.0 - t) ** power


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); no-op without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group", info.rank, world, backend)
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def mean_across(value: float, info: DistInfo, device: torch.device) -> float:
    """Mean of a scalar over all ranks (the value itself without DDP)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


class TrainingDiverged(RuntimeError):
    """The training loss turned NaN/inf; nothing of the diverged state was written."""


RUN_FILES = ("last.pt", "best.pt")  # what marks a directory as holding a run


def check_run_dir(out_dir: Path, resume: str | None, overwrite: bool) -> None:
    """ConfigError (one line) for an output_dir that is a file, or that holds an earlier run that
    would be replaced: allowed only when resuming that run (``--resume DIR/last.pt``) or ``--overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"train.output_dir {out_dir} is a file, not a directory; give another --output-dir")
    resumes_here = bool(resume) and Path(resume).resolve().parent == out_dir.resolve()
    if overwrite and resumes_here:
        raise ConfigError(f"--overwrite would delete the run in {out_dir} that --resume {resume} continues; drop one")
    earlier = [name for name in RUN_FILES if (out_dir / name).exists()]
    if earlier and not (overwrite or resumes_here):
        raise ConfigError(
            f"train.output_dir {out_dir} holds an earlier run ({', '.join(earlier)}); pass --resume "
            f"{out_dir / 'last.pt'} to continue it, --overwrite to replace it, or another --output-dir"
        )


def prepare_run_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; with ``overwrite``, first delete the earlier run's checkpoints and
    TensorBoard event files (so its best.pt cannot pass for this run's). Rank 0 only."""
    old = [out_dir / name for name in RUN_FILES] + sorted((out_dir / "tb").glob("events.out.tfevents.*"))
    old = [path for path in old if overwrite and path.is_file()]
    for path in old:
        path.unlink()
    if old:
        log.info("--overwrite: removed %d files of the earlier run in %s", len(old), out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create train.output_dir {out_dir} ({e.strerror or e}); give another --output-dir"
        ) from None
