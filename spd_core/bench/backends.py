"""Eager torch against onnxruntime (and torch.compile) on one random-weight model, same inputs,
same process.

The model is exported (``spd_core.export.onnx``, fp32 or fp16) to a temporary directory; then for
each phase (frame encode, dense decode, the query at each K) the backends are timed one after the
other, so that a change in the machine's load between phases falls on all of them alike. Runs of
two backends are not interleaved: each one's thread pool (libgomp, onnxruntime) spins on after
a run and would slow the other. The table gives median ms per backend and onnxruntime / torch
(below 1: onnxruntime faster).
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

BACKEND_CHOICES = ("torch", "onnxruntime", "both", "all")  # all: both + torch.compile
PAUSE_S = 0.5  # between two backends' runs: their thread pools stop spinning


def time_in_turn(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """time_fn's figures for each of ``fns``, one after another, each after a pause and its own
    warm-up: a backend's thread pool still spinning from the previous one's runs must not count."""
    out = {}
    for name, fn in fns.items():
        time.sleep(PAUSE_S)
        out[name] = time_fn(fn, device, repeats, warmup)
    return out


def _phase_fns(backends: dict[str, Backend], x: torch.Tensor, ks: tuple[int, ...]) -> dict[str, dict[str, Callable]]:
    """phase -> backend -> the call to time (each backend on its own features of ``x``)."""
    feats = {name: b.encode(x) for name, b in backends.items()}
    phases: dict[str, dict[str, Callable]] = {
        "encode": {n: (lambda b=b: b.encode(x)) for n, b in backends.items()},
        "dense": {n: (lambda b=b, f=feats[n]: b.dense(f)) for n, b in backends.items()},
    }
    for k in ks:
        uv = _query_points(k, tuple(x.shape[-2:]), x.device, 0)
        phases[f"query_k{k}"] = {n: (lambda b=b, f=feats[n], uv=uv: b.query(f, uv)) for n, b in backends.items()}
    return phases


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
    """Per phase median ms of each backend in ``which`` (torch | onnxruntime | both | all: both and
    torch.compile), and the ratio onnxruntime / torch."""
    torch.manual_seed(0)
    model = SPDModel(ModelConfig(encoder=encoder)).eval().to(device)
    ckpt = make_checkpoint(model, input_size=size)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    report: dict[str, Any] = {"encoder": encoder, "size": list(size), "device": str(device), "precision": precision}
    report.update(threads=torch.get_num_threads(), repeats=repeats, warmup=warmup)
    backends: dict[str, Backend] = {}
    if which in ("torch", "both", "all"):
        backends["torch"] = TorchBackend(model, precision)
    if which == "all":
        backends["torch.compile"] = TorchBackend(model, precision, compile=True)
    with tempfile.TemporaryDirectory(prefix="spd-bench-onnx-") as tmp:
        if which in ("onnxruntime", "both", "all"):
            from spd_core.export.onnx import export_onnx  # the onnx extra, only when asked for

            t0 = time.perf_counter()
            meta = export_onnx(model, ckpt, tmp, precision, exporter, size)
            report["export_s"], report["exporter"] = time.perf_counter() - t0, meta["exporter"]
            backends["onnxruntime"] = ort = OnnxRuntimeBackend(tmp, ckpt, device, precision)
            report["providers"] = ort.runtime.providers
        timed = {p: time_in_turn(fns, device, repeats, warmup) for p, fns in _phase_fns(backends, x, ks).items()}
    report["backends"] = {name: {p: timed[p][name] for p in timed} for name in backends}
    if "torch" in backends and "onnxruntime" in backends:
        report["ratio"] = {p: timed[p]["onnxruntime"]["median_ms"] / timed[p]["torch"]["median_ms"] for p in timed}
    return report
