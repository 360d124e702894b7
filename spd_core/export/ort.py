"""An exported SPDModel run by onnxruntime: one session per part, each checked against the checkpoint.

Tensors in and out are torch tensors on the caller's device, bound to the sessions by IO binding:
no copies on the CPU, and with the CUDA or TensorRT execution provider the frame features stay on
the GPU between the encode and the queries. ``onnxruntime`` is imported only here, when used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spd_core.export.graphs import FEATURES, PARTS, STRIDES
from spd_core.export.meta import PRECISIONS, ModelIdentity, OnnxModelError, check_metadata, file_name, from_props

log = logging.getLogger(__name__)

MISSING = "onnxruntime is not installed; pip install 'spd_ros[onnx]'"
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_NUMPY = {torch.float32: np.float32, torch.float16: np.float16}
_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise OnnxModelError(MISSING) from None
    return onnxruntime


def resolve_providers(available: Sequence[str], names: Sequence[str] | None, device: torch.device) -> list[str]:
    """Execution providers, best first: ``names`` (tensorrt, cuda, cpu or full EP names) as given,
    or by ``device``: TensorRT then CUDA where installed for a GPU, the CPU EP for the CPU."""
    if names:
        chosen = [PROVIDERS.get(n.strip().lower(), n.strip()) for n in names if n.strip()]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise OnnxModelError(
                f"onnxruntime has no {', '.join(missing)} (available: {', '.join(available)}); "
                "pick from those or install onnxruntime-gpu"
            )
        return chosen
    if device.type == "cuda":
        gpu = [p for p in GPU_PROVIDERS if p in available]
        if not gpu:
            raise OnnxModelError(
                f"device {device} needs onnxruntime's CUDA execution provider (available: {', '.join(available)}); "
                "pip install onnxruntime-gpu, or use device cpu"
            )
        return [*gpu, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _provider_options(providers: list[str], cache_dir: Path, precision: str, device: torch.device) -> list:
    """(name, options) pairs: TensorRT caches its engines beside the export; GPU EPs use ``device``."""
    index = str(device.index or 0)
    options = {
        "TensorrtExecutionProvider": {
            "device_id": index,
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir / "trt_cache"),
            "trt_fp16_enable": str(precision == "fp16"),
        },
        "CUDAExecutionProvider": {"device_id": index},
    }
    return [(p, options.get(p, {})) for p in providers]


class OnnxRuntimeModel:
    """The encode, query and dense sessions of the ``precision`` export in ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        identity: ModelIdentity,
        precision: str = "fp32",
        device: torch.device | str = "cpu",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise OnnxModelError(f"precision {precision!r}: the onnxruntime backend runs {' or '.join(PRECISIONS)}")
        ort = import_onnxruntime()
        self.directory, self.precision, self.device = Path(directory), precision, torch.device(device)
        self.providers = resolve_providers(ort.get_available_providers(), providers, self.device)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: ORT warns about every fp16 node it casts on the CPU
        opts = _provider_options(self.providers, self.directory, precision, self.device)
        self.sessions = {part: self._session(ort, part, so, opts, identity) for part in PARTS}
        self.providers = self.sessions["encode"].get_providers()
        self._out = {  # output name -> (channels, stride to the network input, dtype); outputs are NHWC
            o.name: (o.shape[3], STRIDES[o.name], _TORCH[o.type]) for o in self.sessions["encode"].get_outputs()
        }
        log.info("onnxruntime %s (%s) from %s on %s", ort.__version__, precision, self.directory, self.providers)

    def _session(self, ort: Any, part: str, so: Any, providers: list, identity: ModelIdentity) -> Any:
        path = self.directory / file_name(self.precision, part)
        if not path.is_file():
            fp = f" --precision {self.precision}" if self.precision != "fp32" else ""
            raise OnnxModelError(
                f"no {self.precision} ONNX export in {self.directory} ({path.name} missing); "
                f"run: spd-export CHECKPOINT --out {self.directory}{fp}"
            )
        try:
            session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own (Fail, InvalidProtobuf, ...) types
            reason = " ".join(str(e).split())[:200]
            raise OnnxModelError(
                f"{path} cannot be loaded by onnxruntime ({reason}); re-export it with spd-export"
            ) from None
        check_metadata(path, from_props(session.get_modelmeta().custom_metadata_map), identity, self.precision, part)
        return session

    def _run(self, part: str, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """Run ``part`` on ``inputs`` into the preallocated ``outputs`` (IO binding, no copies).

        Feature maps are channels_last [1,C,h,w] tensors, bound as the NHWC arrays they hold."""
        binding = self.sessions[part].io_binding()
        for bind, tensors in ((binding.bind_input, inputs), (binding.bind_output, outputs)):
            for name, t in tensors.items():
                shape = (t.shape[0], *t.shape[2:], t.shape[1]) if name in FEATURES else tuple(t.shape)
                bind(name, t.device.type, t.device.index or 0, _NUMPY[t.dtype], shape, t.data_ptr())
        self.sessions[part].run_with_iobinding(binding)

    def _features(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The maps on this device in channels_last memory (a no-op for this model's own features)."""
        return {
            name: t.to(self.device).contiguous(memory_format=torch.channels_last)
            for name, t in zip(FEATURES, features, strict=True)
        }

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image [1,3,H,W] float32 -> the feature maps [1,C,h,w] (channels_last, ``FEATURES`` order)."""
        image = image.to(self.device, torch.float32).contiguous()
        h, w = image.shape[-2:]
        outs = {
            name: torch.empty(1, c, h // s, w // s, dtype=dt, device=self.device, memory_format=torch.channels_last)
            for name, (c, s, dt) in self._out.items()
        }
        self._run("encode", {"image": image}, outs)
        return tuple(outs[name] for name in FEATURES)

    def query(self, features: Sequence[torch.Tensor], uv: torch.Tensor) -> torch.Tensor:
        """Frame features + uv [1,K,2] network-input pixels -> depth [1,K] float32."""
        uv = uv.to(self.device, torch.float32).contiguous()
        depth = torch.empty(1, uv.shape[1], device=self.device)
        if uv.shape[1]:
            self._run("query", {**self._features(features), "uv": uv}, {"depth": depth})
        return depth

    def dense(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Frame features -> dense metric depth [1,1,H,W] float32."""
        inputs = self._features(features)
        h, w = (n * STRIDES["l1"] for n in inputs["l1"].shape[-2:])
        depth = torch.empty(1, 1, h, w, device=self.device)
        self._run("dense", inputs, {"depth": depth})
        return depth
