"""Load: images at 30 Hz and queries at 100 Hz into a CPU spd_node; memory, queues and cache stay
bounded and every query is answered (with NaNs when dropped from the full queue).
``SPD_LOAD_SECONDS`` sets the duration (default 60). The latency percentiles are printed (run with
-s) and written to the test's tmp dir."""

from __future__ import annotations

import json
import os
import queue
import time

import numpy as np
from helpers import random_model
from ros_harness import NodeProcess, RosHarness, fresh_domain_id

from spd_core.eval.bag_report import percentiles
from spd_core.model.checkpoint import make_checkpoint, save_checkpoint

CACHE, QUEUE = 4, 16
POINTS = 8  # per query message; ~0.5 ms per point on one CPU core (local path), so 100 Hz x 8 fits


def settled_diagnostics(harness: RosHarness, n_img: int, timeout: float = 15.0) -> dict[str, str]:
    """/diagnostics once the node has dealt with all ``n_img`` images (encoded or replaced): a
    snapshot taken while the last image is being encoded counts it neither way."""
    deadline = time.monotonic() + timeout
    while True:
        diag = harness.diagnostics(timeout=5)
        done = int(diag.get("frames_encoded", 0)) + int(diag.get("images_dropped", 0))
        if done >= n_img or time.monotonic() > deadline:
            return diag


def test_node_under_load(tmp_path) -> None:
    seconds = float(os.environ.get("SPD_LOAD_SECONDS", "60"))
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, make_checkpoint(random_model("convnextv2_atto", size=(96, 128)), input_size=(96, 128)))
    domain = fresh_domain_id()
    node = NodeProcess(ckpt, domain, tmp_path, cache_size=CACHE, queue_size=QUEUE, query_timeout=0.3)
    harness = RosHarness(domain)
    try:
        harness.wait_ready(node, ("image", "query_points"))
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(4)]
        uv = np.stack([rng.uniform(0, 319, POINTS), rng.uniform(0, 239, POINTS)], 1).astype(np.float32)
        sent_at: dict[float, float] = {}
        start = time.monotonic()
        n_img = n_q = 0
        rss, stamps = [], []
        while (now := time.monotonic()) - start < seconds:
            t = now - start
            if n_img <= t * 30:
                stamp = 100.0 + n_img / 30
                harness.send_image(frames[n_img % 4], stamp)
                stamps.append(stamp)
                n_img += 1
            if n_q <= t * 100:
                # alternate newest-frame (stamp 0) and stamp-matched queries on a recent frame
                stamp = 0.0 if n_q % 2 else stamps[max(0, len(stamps) - 3)]
                harness.send_query_points(stamp, uv, np.full(len(uv), n_q, np.uint32))  # id = message number
                sent_at[n_q] = time.monotonic()
                n_q += 1
            if int(t) > len(rss):
                rss.append(node.rss_mb())
            time.sleep(0.002)
        answers = []
        deadline = time.monotonic() + 10
        while len(answers) < n_q and time.monotonic() < deadline:
            try:
                answers.append(harness.next_answer(timeout=1.0))
            except queue.Empty:
                break
        node_p95 = []  # every /diagnostics message of the run (one per second)
        while not harness.diag.empty():
            _, msg = harness.diag.get()
            kv = {v.key: v.value for v in msg.status[0].values}
            if "latency_ms_p95" in kv:
                node_p95.append(float(kv["latency_ms_p95"]))
        diag = settled_diagnostics(harness, n_img)
    finally:
        harness.close()
        rc = node.stop()
    assert rc == 0
    dropped = int(diag.get("query_messages_dropped", 0))
    received = int(diag.get("query_messages", 0))
    lost = int(diag.get("lost_query_points", 0))  # lost in transport, counted by the node
    assert received + lost == n_q, f"node saw {received} (+{lost} counted lost) of {n_q} query messages"
    # every query message the node received got exactly one answer; those dropped from the full
    # queue were answered with NaNs
    assert len(answers) + lost == n_q, f"{len(answers)} answers + {lost} lost != {n_q}"
    unmatched = int(diag.get("query_messages_unmatched", 0)) + int(diag.get("query_messages_failed", 0))
    # an all-NaN answer is one dropped from the full queue or one without its frame, nothing else
    assert sum(bool(np.isnan(a["depth"]).all()) for a in answers) == dropped + unmatched
    assert int(diag["queries_waiting"]) <= QUEUE and int(diag["frames_cached"]) <= CACHE
    assert int(diag["images_received"]) == n_img
    # latest-wins: each image received was encoded or replaced by a newer one before it was, none lost
    assert int(diag["frames_encoded"]) + int(diag.get("images_dropped", 0)) == n_img, diag
    assert int(diag["image_pending"]) == 0 and "worker_errors" not in diag, diag
    assert len(node_p95) >= seconds / 2, "the node's diagnostics report latency while it answers"
    warm = rss[len(rss) // 4 :]
    assert max(warm) - min(warm) < 60, f"RSS grows under load: {rss}"
    latency_ms = [1e3 * (a["t"] - sent_at[int(a["id"][0])]) for a in answers]
    assert len({int(a["id"][0]) for a in answers}) == len(answers)  # each message answered once
    report = {
        "seconds": seconds,
        "images": n_img,
        "query_messages": n_q,
        "answered": len(answers),
        "dropped": dropped,
        "lost": lost,
        "frames_encoded": int(diag["frames_encoded"]),
        "images_dropped": int(diag.get("images_dropped", 0)),
        "unmatched": int(diag.get("query_messages_unmatched", 0)),
        "rss_mb": [round(r, 1) for r in rss],
        "latency_ms": percentiles(latency_ms),
        "node_latency_ms_p95_per_s": node_p95,  # the node's own /diagnostics during the run
    }
    (tmp_path / "load.json").write_text(json.dumps(report, indent=1))
    print("\nload test:", json.dumps(report))
