"""Eager torch against onnxruntime on the same random-weight model, same inputs, same process.

The model is exported (``spd_core.export.onnx``, fp32 or fp16) to a temporary directory, then
each backend times the frame encode, the dense decode and the query at each K on one input;
the table gives onnxruntime / torch per phase (below 1: onnxruntime faster).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from spd_core.backends import Backend, OnnxRuntimeBackend, TorchBackend
from spd_core.bench.timing import _query_points, time_fn
from spd_core.model.checkpoint import make_checkpoint
from spd_core.model.spd_model import ModelConfig, SPDModel

BACKEND_CHOICES = ("torch", "onnxruntime", "both")


def _phases(
    backend: Backend, x: torch.Tensor, ks: tuple[int, ...], t: Callable[[Callable[[], Any]], dict[str, Any]]
) -> dict[str, Any]:
    feats = backend.encode(x)
    out = {"encode": t(lambda: backend.encode(x)), "dense": t(lambda: backend.dense(feats))}
    for k in ks:
        uv = _query_points(k, tuple(x.shape[-2:]), x.device, 0)
        out[f"query_k{k}"] = t(lambda uv=uv: backend.query(feats, uv))
    return out


@torch.inference_mode()
def run_backends(
    encoder: str,
    size: tuple[int, int],
    ks: tuple[int, ...],
    device: torch.device,
    which: str = "both",
    precision: str = "fp32",
    repeats: int = 5,
    warmup: int = 1,
    exporter: str = "auto",
) -> dict[str, Any]:
    """Per phase median ms of each backend in ``which`` (torch | onnxruntime | both), and the ratio."""
    torch.manual_seed(0)
    model = SPDModel(ModelConfig(encoder=encoder)).eval().to(device)
    ckpt = make_checkpoint(model, input_size=size)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)

    def t(fn: Callable[[], Any]) -> dict[str, Any]:
        return time_fn(fn, device, repeats, warmup)

    from spd_core.export.onnx import export_onnx  # the onnx extra, only when asked for

    report: dict[str, Any] = {"encoder": encoder, "size": list(size), "device": str(device), "precision": precision}
    report.update(threads=torch.get_num_threads(), repeats=repeats, warmup=warmup, backends={})
    if which in ("torch", "both"):
        report["backends"]["torch"] = _phases(TorchBackend(model, precision), x, ks, t)
    if which in ("onnxruntime", "both"):
        with tempfile.TemporaryDirectory(prefix="spd-bench-onnx-") as tmp:
            t0 = time.perf_counter()
            meta = export_onnx(model, ckpt, tmp, precision, exporter, size)
            report["export_s"], report["exporter"] = time.perf_counter() - t0, meta["exporter"]
            ort = OnnxRuntimeBackend(tmp, ckpt, device, precision)
            report["providers"] = ort.runtime.providers
            report["backends"]["onnxruntime"] = _phases(ort, x, ks, t)
    b = report["backends"]
    if len(b) == 2:
        report["ratio"] = {p: b["onnxruntime"][p]["median_ms"] / b["torch"][p]["median_ms"] for p in b["torch"]}
    return report
