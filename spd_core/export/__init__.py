"""Deployment of an SPDModel outside eager PyTorch: ONNX export (``spd-export``) and onnxruntime.

- ``graphs``: the encode, query and dense parts as traceable modules (tensor-only signatures);
- ``onnx``: :func:`export_onnx`, the files and their metadata (needs the ``onnx`` extra);
- ``meta``: what an export carries and the check that it fits a checkpoint;
- ``ort``: :class:`OnnxRuntimeModel`, the exported parts run by onnxruntime (imported when used);
- ``cli``: ``spd-export``.
"""
