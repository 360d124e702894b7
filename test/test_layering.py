"""spd_core's import graph: imports only go down the layers, and nothing in spd_core names ROS."""

from pathlib import Path

import spd_core
from spd_core import _layering


def test_every_import_of_every_core_module_goes_down_the_layers() -> None:
    edges, problems = _layering.graph()
    assert problems == []
    assert ("predictor", "model") in edges and ("train", "eval") in edges  # the graph was read at all
    assert all(_layering.LAYERS[a] > _layering.LAYERS[b] for a, b in edges)


def test_the_checker_sees_nested_and_upward_imports(tmp_path: Path, monkeypatch) -> None:
    """A function-level ``import rclpy`` and a model -> eval import are both reported."""
    root = tmp_path / "spd_core"
    (root / "model").mkdir(parents=True)
    (root / "eval").mkdir()
    (root / "__init__.py").write_text("")
    (root / "eval" / "__init__.py").write_text("")
    (root / "model" / "__init__.py").write_text("")
    (root / "model" / "bad.py").write_text(
        "def f():\n    import rclpy\n    from spd_core.eval import metrics\n    from ..eval import x\n"
    )
    monkeypatch.setattr(_layering, "ROOT", root)
    _, problems = _layering.graph()
    assert any("imports rclpy" in p for p in problems)
    assert sum("model (layer 1) may not import eval" in p for p in problems) == 2


def test_no_core_module_is_missing_from_the_graph() -> None:
    """Each top-level module and sub-package of spd_core has a layer (a new one must be placed)."""
    root = Path(spd_core.__file__).parent
    units = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    assert units - {"_layering"} <= set(_layering.LAYERS)


def test_ruff_check_and_format_are_clean() -> None:
    """The house style is ruff's (lint with C901, and its formatter); CI fails on a drift."""
    import shutil
    import subprocess
    import sys

    ruff = Path(sys.executable).with_name("ruff")
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert exe, "ruff is a dev dependency (pip install -e '.[dev]')"
    root = Path(spd_core.__file__).parent.parent
    for args in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([exe, *args], cwd=root, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
