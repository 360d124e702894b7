"""Markdown rendering of an ``spd-bench`` report (the JSON holds the same numbers, unrounded)."""

from __future__ import annotations

from typing import Any


def _m(macs: float | None) -> str:
    """MACs in M with thousands separators (per-query figures keep two decimals)."""
    if macs is None:
        return "—"
    return f"{macs / 1e6:,.2f}M" if macs < 1e8 else f"{macs / 1e6:,.0f}M"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _mib(b: int | None) -> str:
    return "—" if b is None else f"{b / 2**20:.1f}"


def macs_markdown(tables: list[dict[str, Any]]) -> list[str]:
    lines = ["## MACs per module (counted with torch.utils.flop_counter; 1 MAC = 2 FLOPs)", ""]
    for t in tables:
        h, w = t["size"]
        lines += [
            f"### {t['encoder']} at {h}×{w}",
            "",
            "| component | measured | plan §11 | measured / plan | encoder@224² × area | note |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in t["rows"]:
            ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(
                f"| {r['component']} | {_m(r['measured'])} | {_m(r['plan'])} | {ratio} "
                f"| {_m(r['scaled_224'])} | {r['note']} |"
            )
        c = t["crossovers"]
        lines += [
            "",
            "MACs crossover K (FPN + stride-8 convs + K × per-query = dense): "
            f"vs local dense {c['vs_local_dense']:.0f}, "
            f"vs full DPT decoder {c['vs_dpt_decoder']:.0f} (plan with 7.4M/query: "
            f"{c['plan_vs_dpt_decoder']:.0f}).",
            "",
        ]
        if h != 416 or w != 544:
            lines += ["Plan figures at this size are the 416×544 figures scaled by image area.", ""]
    return lines


def _choice(plan: dict[str, Any]) -> str:
    if plan["mode"] == "tiles":
        t, n_t, n_w = plan["tile"], plan["tiles"], plan["queries_windows"]
        return f"tiles T={t}: {n_t} tiles ({plan['queries_tiled']} q) + {n_w} windows"
    return plan["mode"]


def timing_markdown(run: dict[str, Any]) -> list[str]:
    h, w = run["size"]
    layout = "channels_last" if run["channels_last"] else "contiguous"
    p = run["phases"]
    lines = [
        f"### {run['encoder']} {h}×{w}, {run['device']}, {run['precision']}, {layout}, "
        f"{run.get('layout', 'random')} queries, "
        f"{run['threads']} threads, query chunk {run['query_chunk']}, "
        f"median of {run['repeats']} after {run['warmup']} warm-up",
        "",
        "| phase | median ms | min ms | max ms | peak mem MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "encode": "encode (encoder + FPN)",
        "fpn": "FPN alone",
        "decode_dense": "decode_dense",
        "dpt_decoder": "full DPT-D64 decoder + head",
    }
    for key, label in names.items():
        r = p[key]
        lines.append(
            f"| {label} | {_ms(r['median_ms'])} | {_ms(r['min_ms'])} | {_ms(r['max_ms'])} "
            f"| {_mib(r['peak_mem_bytes'])} |"
        )
    lines += [
        "",
        "| K | windows ms | planned ms | planner's choice | dense + lookup ms | windows / dense "
        "| planned / dense | dense / planned | query peak MiB | dense peak MiB | FPN + planned vs DPT |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run["per_k"]:
        q, pl, d = r["query"], r["planned"], r["dense_lookup"]
        vs_dpt = (p["fpn"]["median_ms"] + pl["median_ms"]) / p["dpt_decoder"]["median_ms"]
        lines.append(
            f"| {r['k']} | {_ms(q['median_ms'])} | {_ms(pl['median_ms'])} | {_choice(r['plan'])} "
            f"| {_ms(d['median_ms'])} | {r['ratio']:.3f} | {r['planned_ratio']:.3f} | {1 / r['planned_ratio']:.2f}× "
            f"| {_mib(q['peak_mem_bytes'])} | {_mib(d['peak_mem_bytes'])} | {vs_dpt:.3f} |"
        )
    c = run["planner_costs_ms"]
    tiles = ", ".join(f"T={t}: {v:.3f}" for t, v in c["tile"].items())
    lines += [
        "",
        f"Planner costs measured in this run (ms): window {c['window']:.3f}, tiles {tiles}, "
        f"dense {c['dense']:.2f}, lookup {c['lookup']:.4f}.",
    ]
    c = run["crossover"]
    measured = f"K={c['measured_k']}" if c["measured_k"] is not None else "none (sparse faster at every K)"
    interp = "" if c.get("interp_k") is None else f", interpolated K≈{c['interp_k']:.0f}"
    fit = "—" if c["fit_k"] is None else f"{c['fit_k']:.0f}"
    lines += [
        "",
        f"Crossover (sparse no faster than dense + lookup): first measured {measured}{interp}; "
        f"linear fit of query time in K: K≈{fit}.",
        f"Peak memory: {run['memory_method']}.",
        "",
    ]
    return lines


def node_markdown(node: dict[str, Any]) -> list[str]:
    lines = ["## Node round trip (spd_node over Fast DDS, localhost)", ""]
    if "error" in node:
        return [*lines, f"Not measured: {node['error']}", ""]
    lines += [
        "| K | round trip p50 ms | p90 ms | p99 ms | model.query p50 ms | overhead p50 ms | target ms "
        "| model paced p50 ms | overhead vs paced ms | node compute p50 ms | ROS path p50 ms | lost "
        "| max rel diff vs predictor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in node["per_k"]:
        rtt, diff = r["rtt_ms"], r["max_rel_diff_vs_predictor"]
        lines.append(
            f"| {r['k']} | {_ms(rtt['p50'])} | {_ms(rtt['p90'])} | {_ms(rtt['p99'])} "
            f"| {_ms(r['model_ms']['p50'])} | {_ms(r['overhead_p50_ms'])} | {_ms(r['target_ms'])} "
            f"| {_ms(r['model_paced_ms']['p50'])} | {_ms(r['overhead_vs_paced_p50_ms'])} "
            f"| {_ms(r['node_compute_p50_ms'])} | {_ms(r['ros_path_p50_ms'])} "
            f"| {r['lost']} | {'—' if diff is None else f'{diff:.1e}'} |"
        )
    lines += ["", node.get("note", ""), ""]
    return lines


def resolutions_markdown(run: dict[str, Any]) -> list[str]:
    lines = [
        f"### Camera resolutions: {run['encoder']}, pixel budget {run['pixel_budget']:,}, {run['device']}, "
        f"{run['precision']}, {run['threads']} threads, median of {run['repeats']}",
        "",
        "| camera H×W | scale s | content | network input | padding | preprocess ms | encode ms | encode / ref |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(run["rows"]):
        cam = "×".join(map(str, r["camera"])) + (" (ref)" if i == 0 else "")
        lines.append(
            f"| {cam} | {r['scale']:.4f} | {'×'.join(map(str, r['content']))} | {'×'.join(map(str, r['input']))} "
            f"| {100 * r['padding_frac']:.1f} % | {r['preprocess']['median_ms']:.2f} "
            f"| {r['encode']['median_ms']:.2f} | {r['encode_vs_reference']:.3f} |"
        )
    return [*lines, ""]


def baseline_markdown(run: dict[str, Any]) -> list[str]:
    h, w = run["size"]
    lines = [
        f"### Against a Depth-Anything-V2-Small-shaped model (ViT-S/14 + DPT D=64, random weights), "
        f"{run['device']}, {run.get('precision', 'fp32')}, {run['threads']} threads, median of {run['repeats']} "
        "interleaved rounds",
        "",
        f"SPD {run['encoder']} at {h}×{w}: frame pass {run['spd_encode_ms']:.1f} ms "
        f"({run['spd_encode_macs'] / 1e9:.2f} GMACs), + K planned queries.",
        "",
    ]
    for b in run["baselines"]:
        bh, bw = b["size"]
        how = "518-px short side" if b["match"] == "short_side" else "the same pixel count"
        lines += [
            f"DAv2-S-shaped at {bh}×{bw} ({how}): forward {b['forward_ms']:.1f} ms ({b['macs'] / 1e9:.2f} GMACs), "
            f"{b['forward_ratio']:.2f}× SPD's frame pass.",
            "",
            "| K | SPD frame + K ms | DAv2-S forward + lookup ms | DAv2-S / SPD (time) | SPD GMACs "
            "| DAv2-S / SPD (MACs) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['k']} | {r['spd_ms']:.1f} | {r['baseline_ms']:.1f} | {r['ratio']:.2f}× | {r['spd_macs'] / 1e9:.2f} "
            f"| {r['mac_ratio']:.2f}× |"
            for r in b["rows"]
        ]
        lines.append("")
    lines.append(
        "The MACs ratio is what the two would give at equal efficiency per MAC; time beyond it is how much "
        "better (or worse) this device runs one model's layers than the other's."
    )
    lines.append("")
    return lines


def backends_markdown(run: dict[str, Any]) -> list[str]:
    h, w = run["size"]
    names = list(run["backends"])
    lines = [
        f"### Backends: {run['encoder']} {h}×{w}, {run['device']}, {run['precision']}, {run['threads']} threads, "
        f"median of {run['repeats']} after {run['warmup']} warm-up",
        "",
        "| phase | " + " | ".join(f"{n} ms" for n in names) + (" | onnxruntime / torch |" if "ratio" in run else " |"),
        "|---|" + "---:|" * (len(names) + ("ratio" in run)),
    ]
    for phase in run["backends"][names[0]]:
        cells = [_ms(run["backends"][n][phase]["median_ms"]) for n in names]
        if "ratio" in run:
            cells.append(f"{run['ratio'][phase]:.2f}")
        lines.append(f"| {phase.replace('_k', ' K=')} | " + " | ".join(cells) + " |")
    if "export_s" in run:
        used = ", ".join(f"{p} {e}" for p, e in run["exporter"].items())
        lines += ["", f"ONNX export {run['export_s']:.1f} s ({used}); onnxruntime providers {run['providers']}."]
    return [*lines, ""]


def to_markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    env = report["environment"]
    lines = [
        "# spd-bench report",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {env['machine']}; torch {env['torch']}; "
        f"load average before {env['loadavg_before']}, after {env.get('loadavg_after', '—')}.",
        "",
    ]
    lines += macs_markdown(report["macs"])
    if report.get("timing"):
        lines += ["## Wall time (same process, same run)", ""]
        for run in report["timing"]:
            lines += timing_markdown(run)
    if report.get("baseline"):
        lines += baseline_markdown(report["baseline"])
    if report.get("resolutions"):
        lines += resolutions_markdown(report["resolutions"])
    if report.get("backends"):
        lines += backends_markdown(report["backends"])
    if report.get("node") is not None:
        lines += node_markdown(report["node"])
    return "\n".join(lines) + "\n"
