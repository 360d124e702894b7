"""NYU Depth V2 in the common BTS layout.

A file list has one sample per line, ``rgb_path depth_path focal``, relative to ``data_root``
(``gt_root`` for depth when given), e.g. training over ``sync/``::

    /kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579

and the official 654-image test split::

    bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579

Depth PNGs are uint16 millimetres (``depth_scale`` = 1000); 0 is invalid. Lines whose depth is
``None`` (unlabelled frames in some lists) are skipped and counted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch.utils.data

from spd_core.data.common import DataError, Sample, check_sample

log = logging.getLogger(__name__)


def read_filelist(path: str | os.PathLike) -> list[tuple[str, str, float]]:
    """(rgb, depth, focal) per usable line; one clear DataError for a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NYU file list {path} not found; give a BTS-style list (rgb depth focal per line)")
    entries, skipped = [], 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise DataError(f"{path}:{n}: expected 'rgb depth focal', got {line.strip()!r}")
        if parts[1] == "None":
            skipped += 1
            continue
        try:
            entries.append((parts[0], parts[1], float(parts[2])))
        except ValueError:
            raise DataError(f"{path}:{n}: focal {parts[2]!r} is not a number") from None
    if skipped:
        log.info("%s: skipped %d lines without depth", path, skipped)
    if not entries:
        raise DataError(f"NYU file list {path} has no samples with depth")
    return entries


class NYUDepthV2(torch.utils.data.Dataset):
    """NYU Depth V2 samples (see module doc); ``transform`` is applied to the sample dict."""

    def __init__(
        self,
        data_root: str | os.PathLike,
        filelist: str | os.PathLike,
        transform=None,
        depth_scale: float = 1000.0,
        gt_root: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(data_root)
        self.gt_root = Path(gt_root) if gt_root else self.root
        for name, d in (("data_root", self.root), ("gt_root", self.gt_root)):
            if not d.is_dir():
                raise DataError(f"NYU {name} {d} is not a directory")
        self.entries = read_filelist(filelist)
        self.transform, self.depth_scale = transform, float(depth_scale)
        self.paths(0)  # a wrong data_root / gt_root fails here, not in a DataLoader worker

    def __len__(self) -> int:
        return len(self.entries)

    def paths(self, i: int) -> tuple[Path, Path]:
        """(rgb, depth) file of entry ``i``; DataError naming the file when one is missing."""
        rgb_rel, depth_rel, _ = self.entries[i]
        rgb_path, depth_path = self.root / rgb_rel.lstrip("/"), self.gt_root / depth_rel.lstrip("/")
        for p in (rgb_path, depth_path):
            if not p.is_file():
                raise DataError(f"NYU sample {i}: {p} not found (check data_root / gt_root and the file list)")
        return rgb_path, depth_path

    def __getitem__(self, i: int) -> Sample:
        rgb_path, depth_path = self.paths(i)
        image = np.asarray(_open_image(rgb_path).convert("RGB"))
        dimg = _open_image(depth_path)
        if dimg.mode not in ("I;16", "I;16B", "I", "F"):
            raise DataError(f"NYU depth {depth_path} has mode {dimg.mode}; need a 16-bit PNG in millimetres")
        depth = np.asarray(dimg, dtype=np.float32) / self.depth_scale
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        s = check_sample(
            {"image": image, "depth": depth, "focal": self.entries[i][2], "name": self.entries[i][0].lstrip("/")}
        )
        return self.transform(s) if self.transform else s


def _open_image(path: Path):
    """A fully loaded PIL image; DataError naming ``path`` when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}; is the file complete?") from None
    return img
