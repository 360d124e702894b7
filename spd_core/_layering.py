"""The import graph between spd_core's units, checked against their layers.

    python -m spd_core._layering     # prints every edge; exit 1 on an upward or ROS import

A unit is a sub-package (``model``, ``data``, ``export``, ``eval``, ``train``, ``bench``) or a top-level
module. Every import of every module (nested ones too, read from the source, nothing executed)
must go to a unit of a lower layer or stay inside its own unit; none may name ROS.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LAYERS: dict[str, int] = {
    "device": 0,
    "clock": 0,
    "preprocess": 0,
    "camera": 0,
    "cli_args": 0,
    "model": 1,
    "data": 1,
    "export": 2,
    "config": 2,
    "backends": 3,
    "predictor": 4,
    "eval": 5,
    "train": 6,
    "bench": 6,
    "__init__": 7,
}
FORBIDDEN = ("rcl", "rosidl", "launch", "spd_ros")  # prefixes: the ROS client libraries are all rcl*


def unit_of(module: str) -> str:
    """'spd_core.model.fpn' -> 'model'; 'spd_core' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_unit(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def imports(path: Path) -> list[str]:
    """Every module named by an import statement anywhere in ``path`` (relative ones resolved)."""
    names: list[str] = []
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            subs = [a.name for a in node.names if base == "spd_core" and _is_unit(a.name)]
            names += [f"spd_core.{n}" for n in subs] if subs else [base]  # from spd_core import model
    return names


def graph() -> tuple[dict[tuple[str, str], int], list[str]]:
    """(unit -> unit edge counts, problems) over every module of spd_core."""
    edges: dict[tuple[str, str], int] = defaultdict(int)
    problems: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        if module == "spd_core._layering":
            continue
        src = unit_of(module) if path.parent != ROOT else path.stem
        if src not in LAYERS:
            problems.append(f"{module}: unit {src!r} has no layer in spd_core._layering.LAYERS")
            continue
        for name in imports(path):
            if name.split(".")[0].startswith(FORBIDDEN):
                problems.append(f"{module} imports {name}: spd_core must stay ROS-free")
            if name != "spd_core" and not name.startswith("spd_core."):
                continue
            dst = unit_of(name)
            if dst == src:
                continue
            edges[(src, dst)] += 1
            if dst not in LAYERS or LAYERS[dst] >= LAYERS[src]:
                problems.append(
                    f"{module} imports {name}: {src} (layer {LAYERS[src]}) may not import "
                    f"{dst} (layer {LAYERS.get(dst, '?')})"
                )
    return dict(edges), problems


def main() -> int:
    edges, problems = graph()
    for layer in sorted(set(LAYERS.values())):
        print(f"layer {layer}: " + ", ".join(u for u, v in LAYERS.items() if v == layer))
    print()
    for (src, dst), n in sorted(edges.items(), key=lambda e: (-LAYERS[e[0][0]], e[0])):
        print(f"{src:>10} -> {dst:<10} ({n} import{'s' if n > 1 else ''})")
    for p in problems:
        print("UPWARD OR ROS IMPORT:", p)
    print(f"\n{len(edges)} edges, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
