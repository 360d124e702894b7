"""ONNX export of an SPDModel: the encode, query and dense graphs plus their metadata.

    export_onnx(model, ckpt, "best_onnx/")             # -> best_onnx/spd.fp32.{encode,query,dense}.onnx
                                                       #    + best_onnx/spd.fp32.json

One set of files serves every network input size and query count: H, W (multiples of 32) and K
(0 included) are dynamic axes. Opset 18, standard ops only (the query's window gathers are
Gather/GatherND). The ``torch.export``-based exporter (``dynamo``) is tried first; ``auto`` falls
back to the TorchScript exporter when it fails.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from spd_core.export.graphs import FEATURES, GRAPHS, PARTS
from spd_core.export.meta import (
    PRECISIONS,
    ModelIdentity,
    export_metadata,
    file_name,
    json_name,
    spd_ros_version,
    to_props,
)
from spd_core.model.checkpoint import Checkpoint
from spd_core.model.spd_model import SPDModel

log = logging.getLogger(__name__)

OPSET = 18
EXPORTERS = ("auto", "dynamo", "torchscript")
MAX_BLOCKS = 256  # dynamic H and W up to 256 blocks of 32 px (8192 px)
EXAMPLE_K = 16  # queries of the tracing example (any K works in the graph)
EXTERNAL_DATA_BYTES = 1 << 30  # larger weights go to a .data file beside the graph (protobuf 2 GB cap)


def _inputs(model: SPDModel, part: str, size: tuple[int, int], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Example inputs of ``part`` at network input ``size``, by input name."""
    h, w = size
    g = torch.Generator().manual_seed(0)
    if part == "encode":
        return {"image": torch.randn(1, 3, h, w, generator=g)}
    c1, d = model.encoder.feature_info.channels()[0], model.config.local_dim
    feats = {
        "l1": torch.randn(1, h // 4, w // 4, c1, generator=g),  # NHWC
        "local_s8": torch.randn(1, h // 8, w // 8, d, generator=g),
    }
    feats = {k: v.to(dtype) for k, v in feats.items()}
    if part == "query":
        feats["uv"] = torch.rand(1, EXAMPLE_K, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    return feats


OUTPUTS = {"encode": list(FEATURES), "query": ["depth"], "dense": ["depth"]}
AXES = {  # input/output name -> {axis: (multiple of the 32-px block count, name)}
    "image": {2: (32, "H"), 3: (32, "W")},
    "l1": {1: (8, "H/4"), 2: (8, "W/4")},  # NHWC
    "local_s8": {1: (4, "H/8"), 2: (4, "W/8")},
}


def _dynamo(graph: torch.nn.Module, inputs: dict[str, torch.Tensor], part: str) -> Any:
    """ModelProto of ``graph`` from the torch.export-based exporter."""
    from torch.export import Dim

    bh, bw = Dim("blocks_h", min=1, max=MAX_BLOCKS), Dim("blocks_w", min=1, max=MAX_BLOCKS)
    shapes: dict[str, dict[int, Any]] = {
        name: {ax: m * (bh if n.startswith("H") else bw) for ax, (m, n) in AXES[name].items()}
        for name in inputs
        if name in AXES
    }
    if "uv" in inputs:
        shapes["uv"] = {1: Dim("K", min=0, max=1 << 24)}
    program = torch.onnx.export(
        graph,
        tuple(inputs.values()),
        input_names=list(inputs),
        output_names=OUTPUTS[part],
        dynamic_shapes=shapes,
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    return program.model_proto


def _torchscript(graph: torch.nn.Module, inputs: dict[str, torch.Tensor], part: str, path: Path) -> Any:
    """ModelProto of ``graph`` from the TorchScript exporter (through a file at ``path``)."""
    import onnx

    axes = {name: {ax: n for ax, (_, n) in spec.items()} for name, spec in AXES.items()}
    axes.update(uv={1: "K"}, depth={1: "K"} if part == "query" else {2: "H", 3: "W"})
    names = list(inputs) + OUTPUTS[part]
    with warnings.catch_warnings():  # its tracer warns about every shape test; the verification decides
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=OUTPUTS[part],
            dynamic_axes={k: v for k, v in axes.items() if k in names},
            opset_version=OPSET,
            dynamo=False,
        )
    return onnx.load(str(path))


def _export_part(graph: torch.nn.Module, inputs: dict[str, torch.Tensor], part: str, exporter: str, tmp: Path):
    """(ModelProto, exporter used) of one part; ``auto``: dynamo, else TorchScript."""
    if exporter in ("auto", "dynamo"):
        try:
            return _dynamo(graph, inputs, part), "dynamo"
        except Exception as e:  # the exporter raises many types; auto falls back, dynamo reports
            if exporter == "dynamo":
                raise
            reason = " ".join(str(e).split())[:200]
            log.warning(
                "dynamo export of %s failed (%s: %s); using the TorchScript exporter", part, type(e).__name__, reason
            )
    return _torchscript(graph, inputs, part, tmp), "torchscript"


def _save(proto: Any, path: Path, props: dict[str, str]) -> None:
    """Write ``proto`` with ``props`` as metadata_props, atomically (temp file + rename)."""
    import onnx

    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    big = sum(t.ByteSize() for t in proto.graph.initializer) > EXTERNAL_DATA_BYTES
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp), save_as_external_data=big, location=path.name + ".data" if big else None)
    os.replace(tmp, path)


def export_onnx(
    model: SPDModel,
    ckpt: Checkpoint,
    out_dir: str | Path,
    precision: str = "fp32",
    exporter: str = "auto",
    example_size: tuple[int, int] | None = None,
    parts: tuple[str, ...] = PARTS,
    **extra: Any,
) -> dict[str, Any]:
    """Export ``model`` (the weights of ``ckpt``) into ``out_dir``; returns the metadata written.

    ``example_size``: the network input size traced (default the checkpoint's input_size); the
    graphs accept any multiple of 32. ``extra``: more metadata (e.g. checkpoint_sha256).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS} (ONNX exports are fp32 or fp16)")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r} is not one of {EXPORTERS}")
    if precision == "fp16" and exporter != "dynamo":  # its fp16 LayerNormalization mixes float and float16
        if exporter == "torchscript":
            raise ValueError("the TorchScript exporter writes fp16 graphs onnxruntime cannot load; use dynamo")
        exporter = "dynamo"  # auto: no fallback
    size = tuple(example_size or ckpt.input_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    net = copy.deepcopy(model).cpu().eval().to(dtype)
    meta = export_metadata(
        ModelIdentity.of(ckpt),
        precision,
        spd_ros_version=spd_ros_version(),
        torch_version=torch.__version__,
        opset=OPSET,
        example_size=list(size),
        dynamic_axes={"H, W": "multiples of 32", "K": ">= 0"},
        **extra,
    )
    files, used = {}, {}
    for part in parts:
        t0 = time.perf_counter()
        path = out / file_name(precision, part)
        with torch.no_grad():
            proto, used[part] = _export_part(
                GRAPHS[part](net).eval(), _inputs(net, part, size, dtype), part, exporter, path
            )
        _save(proto, path, to_props({**meta, "exporter": used[part]}, part))
        files[part] = path.name
        log.info("exported %s in %.1f s (%s): %s", part, time.perf_counter() - t0, used[part], path)
    meta.update(exporter=used, files=files)
    (out / json_name(precision)).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
