"""Frame cost per camera resolution at one pixel budget (the aspect-preserving input).

Each camera image is scaled by one factor to the budget and padded to multiples of 32
(:func:`spd_core.preprocess.fit_geometry`), so the encoder's cost follows the padded input size,
not the camera's. Timed in one process: preprocessing (scale + normalise + pad, from uint8) and
encode (encoder + FPN), each also as a ratio to the budget-shaped reference image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spd_core.bench.timing import time_fn
from spd_core.model.spd_model import ModelConfig, SPDModel
from spd_core.predictor import DepthPredictor
from spd_core.preprocess import image_to_tensor

CAMERA_SIZES = ((480, 640), (480, 848), (720, 1280), (1080, 1920))  # (H, W): VGA, RealSense, HD, full HD


@torch.inference_mode()
def run_resolutions(
    encoder: str,
    reference: tuple[int, int],
    sizes: tuple[tuple[int, int], ...],
    device: torch.device,
    precision: str = "fp32",
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Time preprocessing and encode for each camera size at the budget H·W of ``reference``."""
    budget = reference[0] * reference[1]
    predictor = DepthPredictor(SPDModel(ModelConfig(encoder=encoder)), 500.0, budget, device, precision)
    rng = np.random.default_rng(seed)
    rows = []
    for h, w in (reference, *sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        g = predictor.geometry((h, w))
        x = image_to_tensor(image, g, device)
        pre = time_fn(lambda: image_to_tensor(image, g, device), device, repeats, warmup)  # noqa: B023
        enc = time_fn(lambda: predictor.model.encode(x, precision), device, repeats, warmup)  # noqa: B023
        (ch, cw), (ih, iw) = g.content_size, g.input_size
        rows.append(
            {
                "camera": [h, w],
                "scale": g.scale,
                "content": [ch, cw],
                "input": [ih, iw],
                "padding_frac": 1 - ch * cw / (ih * iw),
                "preprocess": pre,
                "encode": enc,
            }
        )
    ref_ms = rows[0]["encode"]["median_ms"]
    for r in rows:
        r["encode_vs_reference"] = r["encode"]["median_ms"] / ref_ms
    return {
        "encoder": encoder,
        "pixel_budget": budget,
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "warmup": warmup,
        "rows": rows,
    }
