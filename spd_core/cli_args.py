"""argparse pieces shared by the CLIs: errors in one line (exit 2) and checked numbers and sizes.

p = OneLineParser(prog="spd-x")
p.add_argument("--frames", type=positive_int)   # "spd-x: error: argument --frames: '-3' must be ..."
p.add_argument("--size", type=image_size)       # "240x320" -> (240, 320)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def check_out_dir(out: Path | None, flag: str = "--out") -> None:
    """ValueError (one line) when ``out`` names something that is not a directory (before any work)."""
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} exists and is not a directory; give a directory path")


def _number(text: str, kind: type, low: float, strict: bool) -> int | float:
    """``kind(text)``, finite and > ``low`` (``strict``) or >= ``low``; ArgumentTypeError otherwise."""
    what = "an integer" if kind is int else "a finite number"
    bound = f"{'>' if strict else '>='} {low:g}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what} {bound}") from None
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(f"{text!r} must be {what} {bound}")
    return value


def positive_int(text: str) -> int:
    return int(_number(text, int, 0, strict=True))


def nonneg_int(text: str) -> int:
    return int(_number(text, int, 0, strict=False))


def positive_float(text: str) -> float:
    return float(_number(text, float, 0.0, strict=True))


def nonneg_float(text: str) -> float:
    return float(_number(text, float, 0.0, strict=False))


def _size(text: str, multiple: int, example: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. {example}") from None
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        need = "positive" if multiple == 1 else f"positive multiples of {multiple}"
        raise argparse.ArgumentTypeError(f"{text!r}: H and W must be {need}")
    return h, w


def image_size(text: str) -> tuple[int, int]:
    """'240x320' -> (240, 320): an image size, H and W positive."""
    return _size(text, 1, "240x320")


def input_size(text: str) -> tuple[int, int]:
    """'416x544' -> (416, 544): a network input size, H and W positive multiples of 32."""
    return _size(text, 32, "416x544")


def input_side(text: str) -> int:
    """One side of a network input: a positive multiple of 32."""
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive multiple of 32")
    return value
