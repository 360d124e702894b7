"""Reports of a bag evaluation: per-frame CSV, JSON summary, Markdown, PNG figures."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spd_core.eval.bag import FrameScore
from spd_core.eval.metrics import METRIC_NAMES, format_table, mean_metrics

log = logging.getLogger(__name__)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean and count of the finite values of a latency sample (ms); NaN when none."""
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if v.size == 0:
        return {**{k: math.nan for k in ("p50", "p90", "p99", "max", "mean")}, "n": 0}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "n": int(v.size),
    }


def summarize(results: Sequence[FrameScore], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mean metrics over frames, query counts and per-stage latency percentiles."""
    stages = sorted({k for r in results for k in r.timings_ms})
    n_queries = int(sum(len(r.uv) for r in results))
    n_valid = int(sum(r.n_valid for r in results))
    answered = int(sum(np.isfinite(r.pred).sum() for r in results))
    return {
        "frames": len(results),
        "queries": n_queries,
        "queries_with_valid_gt": n_valid,
        "queries_answered": answered,
        "metrics": mean_metrics(r.metrics for r in results),
        "latency_ms": {s: percentiles([r.timings_ms.get(s, math.nan) for r in results]) for s in stages},
        **(extra or {}),
    }


def write_csv(path: Path, results: Sequence[FrameScore]) -> None:
    stages = sorted({k for r in results for k in r.timings_ms})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "stamp_ns", "queries", "valid", *METRIC_NAMES, "answered", *stages])
        for r in results:
            w.writerow(
                [
                    r.index,
                    r.stamp_ns,
                    len(r.uv),
                    r.n_valid,
                    *(f"{r.metrics[m]:.6g}" for m in METRIC_NAMES),
                    f"{r.metrics['answered']:.4g}",
                    *(f"{r.timings_ms.get(s, math.nan):.3f}" for s in stages),
                ]
            )


def markdown(summary: dict[str, Any], figures: Sequence[Path]) -> str:
    lines = [f"# Bag evaluation: {summary.get('bag', '')}", ""]
    for key in (
        "mode",
        "checkpoint",
        "frames",
        "frames_skipped",
        "queries",
        "queries_with_valid_gt",
        "queries_answered",
    ):
        if key in summary:
            lines.append(f"- **{key}**: {summary[key]}")
    lines += [
        "",
        "## Metrics (mean over frames, at the query pixels)",
        "",
        "| " + " | ".join(METRIC_NAMES) + " |",
        "|" + "---|" * len(METRIC_NAMES),
        "| " + " | ".join(f"{summary['metrics'][m]:.4f}" for m in METRIC_NAMES) + " |",
        "",
        "## Latency (ms)",
        "",
        "| stage | p50 | p90 | p99 | max | n |",
        "|---|---|---|---|---|---|",
    ]
    for stage, p in summary["latency_ms"].items():
        lines.append(f"| {stage} | {p['p50']:.2f} | {p['p90']:.2f} | {p['p99']:.2f} | {p['max']:.2f} | {p['n']} |")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def figure_worst_frames(
    path: Path, results: Sequence[FrameScore], image_of: Callable[[int], np.ndarray], n: int = 3
) -> None:
    """RGB with the query points coloured by relative error, for the ``n`` worst frames (AbsRel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = sorted((r for r in results if np.isfinite(r.metrics["abs_rel"])), key=lambda r: -r.metrics["abs_rel"])
    ranked = ranked[:n]
    if not ranked:
        return
    fig, axes = plt.subplots(1, len(ranked), figsize=(5 * len(ranked), 4), squeeze=False)
    for ax, r in zip(axes[0], ranked, strict=True):
        ax.imshow(image_of(r.index))
        ok = r.gt > 0
        rel = np.abs(np.nan_to_num(r.pred[ok], nan=0.0) - r.gt[ok]) / r.gt[ok]
        sc = ax.scatter(r.uv[ok, 0], r.uv[ok, 1], c=rel, s=12, cmap="inferno", vmin=0, vmax=0.5)
        ax.set_title(f"frame {r.index}  AbsRel {r.metrics['abs_rel']:.3f}")
        ax.axis("off")
    fig.colorbar(sc, ax=axes[0].tolist(), label="|pred − gt| / gt")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def figure_error_vs_depth(path: Path, results: Sequence[FrameScore], bins: int = 10) -> None:
    """Median and 90th percentile of the relative error per GT depth bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gt = np.concatenate([r.gt for r in results]) if results else np.zeros(0)
    pred = np.concatenate([r.pred for r in results]) if results else np.zeros(0)
    ok = (gt > 0) & np.isfinite(pred)
    if not ok.any():
        return
    gt, rel = gt[ok], np.abs(pred[ok] - gt[ok]) / gt[ok]
    edges = np.linspace(gt.min(), gt.max() + 1e-6, bins + 1)
    idx = np.digitize(gt, edges) - 1
    centres, med, p90 = [], [], []
    for b in range(bins):
        sel = rel[idx == b]
        if sel.size:
            centres.append((edges[b] + edges[b + 1]) / 2)
            med.append(np.median(sel))
            p90.append(np.percentile(sel, 90))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(gt, rel, s=2, alpha=0.2, color="gray", label="queries")
    ax.plot(centres, med, "o-", label="median")
    ax.plot(centres, p90, "s--", label="90th percentile")
    ax.set_xlabel("ground-truth depth (m)")
    ax.set_ylabel("relative error")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(
    out_dir: Path,
    results: Sequence[FrameScore],
    image_of: Callable[[int], np.ndarray],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write frames.csv, summary.json, report.md and figures into ``out_dir``; return the summary.

    ``image_of(frame_index)`` gives a frame's image again (only the worst frames are drawn).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(results, extra)
    write_csv(out_dir / "frames.csv", results)
    figures = [out_dir / "worst_frames.png", out_dir / "error_vs_depth.png"]
    figure_worst_frames(figures[0], results, image_of)
    figure_error_vs_depth(figures[1], results)
    figures = [f for f in figures if f.exists()]
    summary["files"] = {
        "csv": str(out_dir / "frames.csv"),
        "report": str(out_dir / "report.md"),
        "figures": [str(f) for f in figures],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out_dir / "report.md").write_text(markdown(summary, figures))
    return summary


def print_summary(summary: dict[str, Any]) -> str:
    """The metrics table and latency lines as printed by the CLIs."""
    lines = [format_table({summary.get("mode", "queries"): summary["metrics"]}), ""]
    for stage, p in summary["latency_ms"].items():
        lines.append(f"latency {stage:<14} p50 {p['p50']:8.2f} ms   p90 {p['p90']:8.2f} ms   p99 {p['p99']:8.2f} ms")
    lines.append(
        f"queries: {summary['queries']}  with valid GT: {summary['queries_with_valid_gt']}  "
        f"answered: {summary['queries_answered']}"
    )
    if summary.get("frames_skipped"):
        lines.append(f"frames skipped (image could not be decoded): {summary['frames_skipped']}")
    return "\n".join(lines)
