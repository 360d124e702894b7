"""Benchmarks against the plan: MACs per component (meta tensors) and wall time, ``spd-bench``."""
