"""The node's scheduling without ROS: frame cache, latest-wins images, bounded query queue, stamps."""

from __future__ import annotations

import logging
import queue
import time

import numpy as np
import pytest
from helpers import random_model

from spd_core.predictor import DepthPredictor
from spd_ros.frame_cache import FrameCache
from spd_ros.worker import DepthWorker, ImageJob, QueryJob, WorkerSettings

S = 1_000_000_000  # ns per s


def test_frame_cache() -> None:
    cache: FrameCache[str] = FrameCache(3)
    assert cache.newest() is None and cache.find(5, 10) is None and cache.may_arrive(5, 0)
    for s in (10, 20, 30, 40):
        cache.put(s * S, f"f{s}")
    assert len(cache) == 3 and cache.find(10 * S, S) is None  # evicted
    assert cache.newest() == (40 * S, "f40")
    assert cache.find(20 * S + 3, 5) == (20 * S, "f20") and cache.find(20 * S + 6, 5) is None
    assert cache.may_arrive(41 * S, 0) and not cache.may_arrive(25 * S, 0)
    with pytest.raises(ValueError):
        FrameCache(0)


@pytest.fixture(scope="module")
def predictor() -> DepthPredictor:
    return DepthPredictor(random_model("convnextv2_atto", size=(64, 96)), train_focal=100.0, pixel_budget=64 * 96)


def make_worker(predictor, **kw):
    answers: queue.Queue = queue.Queue()
    settings = WorkerSettings(stamp_tolerance_s=0.001, query_timeout_s=kw.pop("timeout", 0.3))
    return DepthWorker(predictor, answers.put, settings=settings, **kw), answers


def img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_latest_image_wins_and_queue_is_bounded(predictor) -> None:
    w, answers = make_worker(predictor, queue_size=2)
    for i in range(3):  # the worker is not running yet: each image replaces the pending one
        w.submit_image(ImageJob(i * S, f"h{i}", img(i), None))
    for i in range(3):
        w.submit_query(QueryJob(i * S, f"q{i}", np.array([[5.0, 5.0]], np.float32)))
    assert w.counts["images_dropped"] == 2 and w.counts["query_messages_dropped"] == 1
    assert w.queue_lengths()["queries_waiting"] == 2
    evicted = answers.get(timeout=1)  # pushed out of the full queue: answered with NaNs at once
    assert evicted.header == "q0" and not evicted.matched and np.isnan(evicted.depth).all()
    w.start()
    try:
        got = [answers.get(timeout=10) for _ in range(2)]
    finally:
        w.stop()
    assert answers.empty()  # one answer per query message
    assert w.counts["frames_encoded"] == 1  # only the newest image was encoded
    by_query = {a.header: a for a in got}
    assert by_query["h2"].matched and np.isfinite(by_query["h2"].depth).all()  # query 2 found frame 2
    assert not by_query["q1"].matched and np.isnan(by_query["q1"].depth).all()  # frame 1 was dropped
    assert w.counts["query_messages_unmatched"] == 1


def test_query_waits_for_its_frame_then_times_out(predictor) -> None:
    w, answers = make_worker(predictor, timeout=1.0)
    w.start()
    try:
        w.submit_query(QueryJob(7 * S, "q7", np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.array([5, 6])))
        assert answers.empty() and w.queue_lengths()["queries_waiting"] == 1  # waiting for frame 7
        w.submit_image(ImageJob(7 * S, "h7", img(7), (50.0, 50.0, 32.0, 24.0)))
        a = answers.get(timeout=10)
        assert a.header == "h7" and a.matched and list(a.ids) == [5, 6]
        np.testing.assert_allclose(a.xyz[:, 2], a.depth)  # back-projected with the frame's intrinsics
        t = time.monotonic()
        w.submit_query(QueryJob(9 * S, "q9", np.array([[1.0, 2.0]], np.float32)))  # frame 9 never comes
        a = answers.get(timeout=10)
        assert a.header == "q9" and not a.matched
        assert time.monotonic() - t >= 1.0  # answered with NaNs only once query_timeout has passed
    finally:
        w.stop()
    assert not w._thread.is_alive()


def test_grid_dense_and_latencies(predictor) -> None:
    from spd_core.eval.metrics import grid_pixels

    answers: queue.Queue = queue.Queue()
    dense: queue.Queue = queue.Queue()
    settings = WorkerSettings(grid=(4, 3), publish_dense=True)
    w = DepthWorker(predictor, answers.put, settings=settings, on_dense=lambda h, d: dense.put((h, d)))
    w.start()
    try:
        image = img(3)
        w.submit_image(ImageJob(3 * S, "h3", image, None))
        a = answers.get(timeout=10)  # the fixed grid, answered without any query
        header, depth = dense.get(timeout=10)
    finally:
        assert w.stop()
    frame = predictor.encode(image)
    uv = grid_pixels(48, 64, 4, 3)
    assert a.header == "h3" and a.matched and len(a.depth) == 12
    np.testing.assert_array_equal(a.uv, uv)
    np.testing.assert_allclose(a.depth, predictor.query(frame, uv), rtol=1e-5)
    assert header == "h3"
    np.testing.assert_allclose(depth, predictor.dense(frame), rtol=1e-5)
    lat = w.take_latencies()
    assert len(lat) == 1 and 0 <= lat[0] < 10 and w.take_latencies() == []


def test_waiting_query_does_not_spin(predictor) -> None:
    """A query waiting for its frame is re-checked at a bounded rate, not in a busy loop."""

    class Counting(DepthWorker):
        passes = 0

        def _service_queries(self) -> None:
            self.passes += 1
            super()._service_queries()

    w = Counting(predictor, queue.Queue().put, settings=WorkerSettings(query_timeout_s=0.5))
    w.start()
    try:
        w.submit_query(QueryJob(7 * S, "q7", np.array([[1.0, 2.0]], np.float32)))
        time.sleep(0.4)  # frame 7 never comes: the query waits out its timeout
    finally:
        w.stop()
    assert 5 <= w.passes < 100, w.passes


def test_failing_query_is_answered_with_nans_and_counted(predictor) -> None:
    """A model failure on one query message (e.g. out of memory) loses nothing else."""

    class Failing(DepthPredictor):
        def query(self, frame, uv):
            if len(uv) == 3:
                raise RuntimeError("simulated out of memory")
            return super().query(frame, uv)

    failing = Failing(predictor.model, predictor.train_focal, predictor.pixel_budget)
    answers: queue.Queue = queue.Queue()
    w = DepthWorker(failing, answers.put)
    w.submit_image(ImageJob(1 * S, "h1", img(1), None))
    w.submit_query(QueryJob(1 * S, "bad", np.zeros((3, 2), np.float32)))
    w.submit_query(QueryJob(1 * S, "good", np.ones((2, 2), np.float32)))
    w.start()
    try:
        got = [answers.get(timeout=10) for _ in range(2)]
    finally:
        w.stop()
    bad, good = sorted(got, key=lambda a: len(a.uv), reverse=True)
    assert not bad.matched and np.isnan(bad.depth).all() and len(bad.depth) == 3
    assert good.matched and np.isfinite(good.depth).all()
    assert w.counts["query_messages_failed"] == 1


def test_error_clears_once_a_frame_is_encoded_again(predictor) -> None:
    """A failing frame sets the worker's error (diagnostics ERROR); the next good frame clears it (OK)."""

    class FailsOnGrey(DepthPredictor):
        def encode(self, image, fx=None):
            if image.ndim == 2:
                raise RuntimeError("simulated encoder failure")
            return super().encode(image, fx)

    failing = FailsOnGrey(predictor.model, predictor.train_focal, predictor.pixel_budget)
    answers: queue.Queue = queue.Queue()
    w = DepthWorker(failing, answers.put)
    w.submit_image(ImageJob(1 * S, "grey", img(1)[:, :, 0], None))
    w.submit_query(QueryJob(1 * S, "q1", np.ones((2, 2), np.float32)))
    w.start()
    try:
        first = answers.get(timeout=10)  # the query of the failed frame: NaN, unmatched
        assert not first.matched and isinstance(w.error, RuntimeError) and w.counts["worker_errors"] == 1
        w.submit_image(ImageJob(2 * S, "h2", img(2), None))
        w.submit_query(QueryJob(2 * S, "q2", np.ones((2, 2), np.float32)))
        second = answers.get(timeout=10)
    finally:
        w.stop()
    assert second.matched and np.isfinite(second.depth).all()
    assert w.error is None and w.counts["worker_errors"] == 1


def test_a_frame_the_model_cannot_encode_is_a_logged_worker_error(predictor, caplog) -> None:
    """A real failure (an image of 1x1 pixel: the node's callbacks refuse it, the worker alone does
    not): the worker keeps running, sets its error, counts it and logs it at ERROR with the
    exception (the node forwards that record to /rosout: test_node_worker_error)."""
    answers: queue.Queue = queue.Queue()
    w = DepthWorker(predictor, answers.put, settings=WorkerSettings(query_timeout_s=0.3))
    w.submit_image(ImageJob(1 * S, "tiny", np.zeros((1, 1, 3), np.uint8), None))
    w.submit_query(QueryJob(1 * S, "q1", np.zeros((1, 2), np.float32)))
    with caplog.at_level(logging.ERROR, logger="spd_ros.worker"):
        w.start()
        try:
            first = answers.get(timeout=10)  # its frame never came: NaN, unmatched
            assert isinstance(w.error, ValueError) and "too small" in str(w.error)
            w.submit_image(ImageJob(2 * S, "h2", img(2), None))
            w.submit_query(QueryJob(2 * S, "q2", np.ones((1, 2), np.float32)))
            second = answers.get(timeout=10)
        finally:
            assert w.stop()
    assert first.header == "q1" and not first.matched and np.isnan(first.depth).all()
    assert second.matched and np.isfinite(second.depth).all() and w.error is None
    assert w.counts["worker_errors"] == 1 and w.counts["frames_encoded"] == 1
    errors = [r for r in caplog.records if r.name == "spd_ros.worker" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and "too small" in errors[0].getMessage() and errors[0].exc_info is not None


def test_dense_map_only_when_wanted(predictor) -> None:
    """publish_dense decodes the dense map only while dense_wanted() (the node: someone subscribes)."""
    answers: queue.Queue = queue.Queue()
    dense: list = []
    wanted = [False]
    w = DepthWorker(
        predictor,
        answers.put,
        settings=WorkerSettings(publish_dense=True),
        on_dense=lambda h, d: dense.append(h),
        dense_wanted=lambda: wanted[0],
    )
    w.start()
    try:
        for stamp in (1, 2):
            w.submit_image(ImageJob(stamp * S, f"h{stamp}", img(stamp), None))
            w.submit_query(QueryJob(stamp * S, "q", np.array([[1.0, 2.0]], np.float32)))
            assert answers.get(timeout=10).header == f"h{stamp}"  # answered once the frame is fully done
            wanted[0] = True
    finally:
        w.stop()
    assert dense == ["h2"]


def test_queue_bound_holds_while_queries_wait(predictor) -> None:
    """Queries arriving while the worker re-checks waiting ones do not push the queue past queue_size."""
    w, answers = make_worker(predictor, queue_size=3, timeout=30.0)
    may_arrive = w.cache.may_arrive

    def racing(stamp_ns: int, tol: int) -> bool:  # a callback delivers a query mid-pass
        w.submit_query(QueryJob(99 * S, "new", np.zeros((1, 2), np.float32)))
        return may_arrive(stamp_ns, tol)

    for i in range(3):
        w.submit_query(QueryJob((10 + i) * S, f"q{i}", np.zeros((1, 2), np.float32)))  # frames not here yet
    w.cache.may_arrive = racing
    w._service_queries()  # one pass of the worker thread, run here
    assert w.queue_lengths()["queries_waiting"] == 3 and w.counts["query_messages_dropped"] == 3
    assert [j.header for j in w._queries] == ["new"] * 3  # the oldest went first
    evicted = [answers.get_nowait() for _ in range(3)]  # each answered with NaNs, none lost
    assert sorted(a.header for a in evicted) == ["q0", "q1", "q2"] and all(not a.matched for a in evicted)


def test_small_query_is_answered_inline_when_the_model_is_free(predictor) -> None:
    """With the model free and the frame cached, a query of ≤ inline_max_points is answered on the
    submitting thread, equal to the worker's answer; a larger one, one behind a waiting query or an
    image for the encoder, and one that finds the model busy go to the worker."""
    import threading

    answers: list = []
    settings = WorkerSettings(stamp_tolerance_s=0.001, query_timeout_s=5.0, inline_max_points=4)
    w = DepthWorker(predictor, lambda a: answers.append((threading.current_thread(), a)), settings=settings)
    w.submit_image(ImageJob(1 * S, "h1", img(1), None))
    uv = np.array([[5.0, 6.0], [20.5, 30.25]], np.float32)
    w.submit_query(QueryJob(1 * S, "q", uv))  # frame not encoded yet: queued
    assert not answers and w.queue_lengths()["queries_waiting"] == 1
    w.start()
    try:
        deadline = time.monotonic() + 30
        while len(answers) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        worker_thread, first = answers[0]
        assert worker_thread is not threading.current_thread() and first.matched

        w.submit_query(QueryJob(1 * S, "q", uv))  # model free, nothing waiting: answered right here
        thread, inline = answers[1]
        assert thread is threading.current_thread() and inline.header == "h1"
        np.testing.assert_array_equal(inline.depth, first.depth)
        assert w.counts["query_messages_inline"] == 1 and w.counts["query_messages"] == 2

        big = np.tile(uv, (3, 1))  # 6 points > inline_max_points
        w.submit_query(QueryJob(1 * S, "big", big))
        with w._model:  # the model is busy: the small query is queued, never waited for
            w.submit_query(QueryJob(1 * S, "busy", uv))
            assert w.counts["query_messages_inline"] == 1
        while len(answers) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [a.uv.shape[0] for _, a in answers[2:]] == [6, 2]  # in order, both by the worker
        assert all(t is not threading.current_thread() for t, _ in answers[2:])
    finally:
        w.stop()
    assert w.counts["query_messages"] == 4 and w.counts["queries_answered"] == 2 + 2 + 6 + 2
