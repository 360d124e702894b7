"""spd-bench: quick mode gives a well-formed report whose MACs match the plan's §11 table.

No timing assertions: timings are only checked to be present and positive.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from spd_core.bench.baseline import DAv2SmallShaped, dav2_input_size, run_baseline
from spd_core.bench.cli import main
from spd_core.bench.flops import count_macs
from spd_core.bench.macs import PLAN_MACS
from spd_core.bench.report import baseline_markdown
from spd_core.bench.timing import _query_points, crossover
from spd_core.clock import paired_ratio, time_interleaved
from spd_core.model.dpt_reference import DPTReferenceDecoder


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def _totals(report: dict, size: tuple[int, int]) -> dict[str, float]:
    return next(m["totals"] for m in report["macs"] if tuple(m["size"]) == size)


def test_quick_report_is_well_formed(quick_report: tuple[dict, str]) -> None:
    report, md = quick_report
    assert {"command", "environment", "macs", "timing"} <= set(report)
    assert [tuple(m["size"]) for m in report["macs"]] == [(416, 544), (480, 640)]
    (run,) = report["timing"]
    assert run["encoder"] == "convnextv2_atto" and run["size"] == [64, 96] and run["device"] == "cpu"
    assert [r["k"] for r in run["per_k"]] == [1, 16, 64]
    for phase in ("encode", "fpn", "decode_dense", "dpt_decoder"):
        assert run["phases"][phase]["median_ms"] > 0 and run["phases"][phase]["runs"] == 2
    for r in run["per_k"]:
        assert r["query"]["median_ms"] > 0 and r["dense_lookup"]["median_ms"] > 0
        assert r["ratio"] == pytest.approx(paired_ratio(r["query"], r["dense_lookup"]))
        assert r["planned_ratio"] == pytest.approx(paired_ratio(r["planned"], r["dense_lookup"]))
        assert r["plan"]["mode"] in ("windows", "tiles", "dense")  # a fresh frame: never a kept map
        assert r["plan"]["queries_windows"] + r["plan"]["queries_tiled"] <= r["k"]
    costs = run["planner_costs_ms"]
    assert costs["window"] > 0 and costs["dense"] > 0 and set(costs["tile"]) == {"8", "16", "32"}
    assert {"measured_k", "interp_k", "fit_k"} <= set(run["crossover"])
    for heading in (
        "## MACs per module",
        "### convnextv2_tiny at 416×544",
        "### convnextv2_tiny at 480×640",
        "| component | measured | plan §11 |",
        "| K | windows ms | planned ms | planner's choice | dense + lookup ms |",
        "Planner costs measured in this run (ms): window",
    ):
        assert heading in md
    assert md.count("\n| fpn |") == 2 and "\n| 64 |" in md


def test_quick_report_has_the_camera_resolutions(quick_report: tuple[dict, str]) -> None:
    """Each camera size is encoded at its own aspect within the reference's pixel budget."""
    report, md = quick_report
    res = report["resolutions"]
    assert res["pixel_budget"] == 64 * 96
    assert [r["camera"] for r in res["rows"]] == [[64, 96], [480, 640], [480, 848], [720, 1280], [1080, 1920]]
    for r in res["rows"]:
        (h, w), (ch, cw), (ih, iw) = r["camera"], r["content"], r["input"]
        assert ch * cw <= 64 * 96 and ih % 32 == iw % 32 == 0 and ih - ch < 32 and iw - cw < 32
        assert abs(cw / ch - w / h) < 0.05 * w / h
        assert r["encode_vs_reference"] == pytest.approx(
            r["encode"]["median_ms"] / res["rows"][0]["encode"]["median_ms"]
        )
    assert "### Camera resolutions: convnextv2_atto, pixel budget 6,144" in md and "| 720×1280 |" in md


def test_macs_match_the_plan_at_416x544(quick_report: tuple[dict, str]) -> None:
    """Plan §11: FPN 241M (±1%), full DPT-D64 decoder 3,219M (±1%), local path dense ~10.0G
    (its local rows sum to 9.80G; ±3%); the exact per-query cost after the shared stride-8 convs
    (6.29M, 261M once per frame) is below the plan's inexact 7.4M."""
    t = _totals(quick_report[0], (416, 544))
    assert abs(t["fpn"] - PLAN_MACS["fpn"]) / PLAN_MACS["fpn"] < 0.01
    assert abs(t["dpt_decoder"] - PLAN_MACS["dpt_decoder"]) / PLAN_MACS["dpt_decoder"] < 0.01
    assert abs(t["local_dense"] - 9.80e9) / 9.80e9 < 0.03
    assert t["per_query"] == 6_291_584 < PLAN_MACS["per_query"]
    assert t["local_s8"] == 2 * (416 // 8) * (544 // 8) * 64 * 64 * 9  # conv_s8_1 + conv_s8_2, full map


def test_encoder_macs_scale_with_area_so_the_plans_10g_is_2x_low(quick_report: tuple[dict, str]) -> None:
    """ConvNeXt MACs scale exactly with image area: 224² × (416·544/224²) ≈ 20G, not the plan's ~10G."""
    a, b = _totals(quick_report[0], (416, 544)), _totals(quick_report[0], (480, 640))
    assert a["encoder"] == pytest.approx(a["encoder_224"] * 416 * 544 / 224**2, rel=0.01)
    assert b["encoder"] / a["encoder"] == pytest.approx(480 * 640 / (416 * 544), rel=0.01)
    assert 1.9 < a["encoder"] / PLAN_MACS["encoder"] < 2.1
    assert b["per_query"] == a["per_query"]  # O(1) per query, whatever the image size


def test_dpt_reference_outputs_depth_and_costs_the_plans_breakdown() -> None:
    """Plan §11.3 row by row: projections of 4 levels, refinenet4..1 (RCUs at the input
    resolution, Conv1×1 out at twice it), to stride 2; the head is extra."""
    h, w, d = 64, 96, 64
    chans = (40, 80, 160, 320)
    dpt = DPTReferenceDecoder(chans, d).eval()
    levels = [torch.randn(1, c, h // s, w // s) for c, s in zip(chans, (4, 8, 16, 32), strict=True)]
    with torch.no_grad():
        depth = dpt(*levels)
    assert depth.shape == (1, 1, h, w) and torch.isfinite(depth).all() and (depth > 0).all()
    pos = [(h // s) * (w // s) for s in (4, 8, 16, 32)]  # L1..L4 positions
    projections = sum(p * c * d for p, c in zip(pos, chans, strict=True))
    rcu = 2 * d * d * 9  # MACs per position of one RCU
    refinenets = pos[3] * rcu + pos[2] * d * d  # refinenet4: RCU2 at L4, out at L3
    refinenets += sum(2 * pos[i] * rcu + pos[i - 1] * d * d for i in (2, 1))  # refinenet3, 2
    refinenets += 2 * pos[0] * rcu + 4 * pos[0] * d * d  # refinenet1: out at stride 2
    macs, _ = count_macs(lambda: dpt.features(*levels))
    assert macs == projections + refinenets
    total, _ = count_macs(lambda: dpt(*levels))
    assert total - macs == 4 * pos[0] * d  # Conv1×1(D→1) head at stride 2


def test_crossover_from_measurements() -> None:
    def row(k: int, q: float, d: float) -> dict:
        return {"k": k, "query": {"median_ms": q}, "dense_lookup": {"median_ms": d}, "ratio": q / d}

    rows = [row(1, 1.0, 100.0), row(101, 51.0, 100.0), row(301, 151.0, 100.0)]  # query = 0.5 + 0.5·K
    c = crossover(rows)
    assert c["measured_k"] == 301
    assert c["interp_k"] == pytest.approx(101 + (1 - 0.51) / (1.51 - 0.51) * 200)
    assert c["fit_k"] == pytest.approx(199.0)
    assert crossover(rows[:2])["measured_k"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "100x96"], "multiples of 32"),
        (["--size", "big"], "HxW"),
        (["--ks", "0,4"], "≥ 1"),
        (["--encoder", "resnet50"], "convnextv2"),
        (["--device", "cpu", "--precision", "fp16"], "fp16 needs CUDA"),
        (["--repeats", "0"], "--repeats"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as e:
        sys.exit(main(["--quick", "--macs-only", "--out", str(tmp_path / "o"), *args]))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("spd-bench: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_dav2_small_shaped_baseline() -> None:
    """The anchor: ViT-S/14 tokens of 4 layers -> DPT head -> depth at the input size; inputs
    keep the camera's aspect at a 518-px short side or the same pixel count (multiples of 14)."""
    assert dav2_input_size((416, 544)) == (518, 672) and dav2_input_size((416, 544), "pixels") == (420, 546)
    assert dav2_input_size((720, 1280)) == (518, 924)
    model = DAv2SmallShaped((70, 98)).eval()
    vit = model.backbone  # ViT-S/14: 12 blocks of width 384 (qkv, proj, MLP 4x, 2 LN, 2 LayerScale)
    per_block = 4 * 384 * 384 + 4 * 384 + 2 * 384 * 1536 + 1536 + 384 + 4 * 384 + 2 * 384
    assert len(vit.blocks) == 12 and sum(p.numel() for p in vit.blocks.parameters()) == 12 * per_block
    with torch.no_grad():
        depth = model(torch.randn(1, 3, 70, 98))
    assert depth.shape == (1, 1, 70, 98) and torch.isfinite(depth).all()
    run = run_baseline(
        "convnextv2_atto", (64, 96), torch.device("cpu"), ks=(1, 64), repeats=1, warmup=0, matches=("pixels",)
    )
    (b,) = run["baselines"]
    assert b["size"] == [70, 98] and [r["k"] for r in b["rows"]] == [1, 64]
    # one round each: the ratio is that round's; MACs are the models' own (counted on the same calls)
    assert b["macs"] == count_macs(lambda: DAv2SmallShaped((70, 98)).eval()(torch.randn(1, 3, 70, 98)))[0]
    assert run["spd_query_macs"]["64"] > run["spd_query_macs"]["1"] > 0
    for r in b["rows"]:
        assert r["ratio"] == pytest.approx(r["baseline_ms"] / r["spd_ms"])
        assert r["spd_macs"] == run["spd_encode_macs"] + run["spd_query_macs"][str(r["k"])]
        assert r["mac_ratio"] == pytest.approx(b["macs"] / r["spd_macs"])
    assert "DAv2-S forward + lookup ms" in "\n".join(baseline_markdown(run))


def test_clustered_query_layout() -> None:
    """32 queries per 24x24 box, inside the image; random covers the image."""
    uv = _query_points(70, (64, 96), torch.device("cpu"), 0, "clustered")[0]
    assert uv.shape == (70, 2) and (uv >= 0).all() and (uv[:, 0] <= 95).all() and (uv[:, 1] <= 63).all()
    for box in uv.split(32):
        assert (box.max(0).values - box.min(0).values <= 23).all()
    spread = _query_points(500, (64, 96), torch.device("cpu"), 0)[0]
    assert (spread.max(0).values - spread.min(0).values > torch.tensor([80.0, 50.0])).all()


def test_interleaved_rounds_rotate_and_ratios_pair_rounds() -> None:
    """Each round runs every function once, the first one rotating; a ratio is the median of the
    rounds' ratios (a slow round slows both sides), not the ratio of two medians."""
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timed = time_interleaved(fns, torch.device("cpu"), repeats=4, warmup=1)
    assert calls == list("abc" + "abc" + "bca" + "cab" + "abc")
    assert all(t["runs"] == 4 and len(t["runs_ms"]) == 4 for t in timed.values())
    a = {"runs_ms": [10.0, 40.0, 12.0]}
    b = {"runs_ms": [5.0, 20.0, 30.0]}  # round 2 was slow for both; round 3 only for b
    assert paired_ratio(a, b) == pytest.approx(2.0)  # medians would give 12 / 20 = 0.6
