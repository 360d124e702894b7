"""The one thread that owns the model: encodes the newest image, answers queries from the cache.

No rclpy here: the node hands in decoded images and query pixels and gets answers back through a
callback, so scheduling, stamp matching and bounded queues are tested without ROS.

* Images are latest-wins: an image that arrives while the encoder is busy replaces the pending
  one (the replaced one is counted as dropped).
* A small query (at most ``inline_max_points``) that finds the model free, no other query
  waiting, no image pending and its frame cached is answered at once on the caller's thread:
  the thread hand-off costs more than such a query. The caller never waits for the model (the
  lock is only tried); every other query goes to the worker.
* Queries wait in a bounded FIFO: stamp 0 takes the newest frame; another stamp takes the cached
  frame within ``stamp_tolerance``, waits up to ``query_timeout`` for a frame that may still come,
  and is otherwise answered with NaNs and counted as unmatched. A full queue drops its oldest
  query (counted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spd_core.camera import back_project
from spd_core.eval.metrics import grid_pixels
from spd_core.predictor import DepthPredictor, EncodedFrame
from spd_core.preprocess import InputGeometry
from spd_ros.frame_cache import FrameCache

log = logging.getLogger(__name__)

Intrinsics = tuple[float, float, float, float]  # fx, fy, cx, cy (image pixels)
POLL_S = 0.01  # how often queries waiting for a frame are checked for their timeout


@dataclass
class ImageJob:
    stamp_ns: int
    header: Any  # echoed on every answer for this frame
    image: np.ndarray  # uint8 RGB [H,W,3] or mono [H,W]
    intrinsics: Intrinsics | None
    received: float = field(default_factory=time.monotonic)


@dataclass
class QueryJob:
    stamp_ns: int  # 0 = newest frame
    header: Any  # used for the answer when no frame matches
    uv: np.ndarray  # float32 [K,2] image pixels
    ids: np.ndarray | None = None
    received: float = field(default_factory=time.monotonic)


@dataclass
class Answer:
    header: Any  # the image's header (the query's when unmatched)
    uv: np.ndarray
    depth: np.ndarray  # float32 [K], NaN where invalid
    xyz: np.ndarray  # float32 [K,3] optical frame, NaN without intrinsics
    ids: np.ndarray | None
    matched: bool
    latency_s: float


@dataclass
class StampedFrame:
    """An encoded frame as the cache keeps it: with the image's header and its camera's intrinsics."""

    frame: EncodedFrame
    header: Any
    intrinsics: Intrinsics | None


@dataclass
class WorkerSettings:
    """Run-time settings: built from the node's parameters (``spd_ros.params.worker_settings``), the
    ones in ``spd_ros.params.RUNTIME`` updated while running. Their defaults are the parameters'."""

    stamp_tolerance_s: float = 0.005
    query_timeout_s: float = 0.5
    max_queries: int = 4096  # points per query message; the node rejects larger ones
    grid: tuple[int, int] = (0, 0)  # (nx, ny) answered for every frame; (0, 0) = off
    publish_dense: bool = False
    inline_max_points: int = 256  # answer queries up to this size on the submitting thread when the model is free


class DepthWorker:
    """Owns ``predictor``; call :meth:`start`, feed :meth:`submit_image` / :meth:`submit_query`."""

    def __init__(
        self,
        predictor: DepthPredictor,
        on_answer: Callable[[Answer], None],
        cache_size: int = 8,
        queue_size: int = 64,
        settings: WorkerSettings | None = None,
        on_dense: Callable[[Any, np.ndarray], None] | None = None,
        dense_wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self.predictor, self.on_answer, self.on_dense = predictor, on_answer, on_dense
        self.dense_wanted = dense_wanted  # e.g. "someone subscribes": the dense decode is not free
        self.settings = settings or WorkerSettings()
        self.cache: FrameCache[StampedFrame] = FrameCache(cache_size)
        self._queries: deque[QueryJob] = deque()
        self.queue_size = int(queue_size)
        self._pending: ImageJob | None = None
        self._new_queries = False  # queries arrived since the last pass over the queue
        self._cond = threading.Condition()
        self._model = threading.Lock()  # whoever runs the model holds it: the worker, or submit_query inline
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="spd_worker", daemon=True)
        self.counts: Counter[str] = Counter()
        self.last_encode_ms = float("nan")
        self.last_geometry: InputGeometry | None = None  # of the newest encoded frame (diagnostics)
        self._latencies: deque[float] = deque(maxlen=1000)
        self.error: BaseException | None = None

    # --- producer side (ROS callbacks; never block on the model) ---------------------------------

    def submit_image(self, job: ImageJob) -> None:
        with self._cond:
            self.counts["images_received"] += 1
            if self._pending is not None:
                self.counts["images_dropped"] += 1
            self._pending = job
            self._cond.notify()

    def submit_query(self, job: QueryJob) -> None:
        """Queue ``job``; when the queue is full the oldest query is answered with NaNs at once
        (counted ``query_messages_dropped``): every query message gets exactly one answer."""
        if len(job.uv) <= self.settings.inline_max_points and self._answer_inline(job):
            return
        with self._cond:
            self.counts["query_messages"] += 1
            self._queries.append(job)
            evicted = self._trim_queue()
            self._new_queries = True
            self._cond.notify()
        for old in evicted:
            self._answer(old, None)

    def _trim_queue(self) -> list[QueryJob]:
        """(Lock held.) Take the oldest queries past ``queue_size`` off the queue, counted as dropped;
        the caller answers them with NaNs once the lock is released."""
        evicted = [self._queries.popleft() for _ in range(len(self._queries) - self.queue_size)]
        self.counts["query_messages_dropped"] += len(evicted)
        return evicted

    def _answer_inline(self, job: QueryJob) -> bool:
        """Answer ``job`` on this thread if the model is free, nothing is queued before it, no image
        waits for the encoder and its frame is cached; False (nothing done) otherwise."""
        if not self._model.acquire(blocking=False):
            return False
        try:
            with self._cond:
                if self._queries or self._pending is not None or self._stop:
                    return False
                hit = self._lookup(job)
                if hit is None:
                    return False
                self.counts["query_messages"] += 1
                self.counts["query_messages_inline"] += 1
            self._answer_or_nan(job, hit[1])
            return True
        finally:
            self._model.release()

    def queue_lengths(self) -> dict[str, int]:
        with self._cond:
            return {
                "queries_waiting": len(self._queries),
                "image_pending": int(self._pending is not None),
                "frames_cached": len(self.cache),
            }

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; later calls do nothing (a lifecycle node activated again)."""
        if self._thread.ident is None:
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and join the thread; True when it has ended."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def take_latencies(self) -> list[float]:
        """Query latencies (s, receipt to answer) since the last call; at most the last 1000."""
        with self._cond:
            out = list(self._latencies)
            self._latencies.clear()
        return out

    # --- the worker thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stop and self._pending is None and not self._new_queries:
                    # nothing new: queries still waiting for their frame are re-checked every POLL_S
                    self._cond.wait(POLL_S if self._queries else 0.05)
                if self._stop:
                    return
                image, self._pending, self._new_queries = self._pending, None, False
            try:
                with self._model:
                    self._service_queries()
                    if image is not None:
                        self._encode(image)
                        self.error = None  # a frame encoded again: the cause of an earlier error is gone
                        self._service_queries()
            except Exception as e:  # the node keeps running; the error is counted and logged
                self.error = e
                self.counts["worker_errors"] += 1
                log.exception("spd_node worker: %s", e)

    def _encode(self, job: ImageJob) -> None:
        t0 = time.perf_counter()
        # the predictor applies focal scaling (or not: DepthPredictor.focal_scaling)
        frame = self.predictor.encode(job.image, fx=job.intrinsics[0] if job.intrinsics else None)
        self.last_encode_ms = (time.perf_counter() - t0) * 1e3
        self.last_geometry = frame.geometry
        cached = StampedFrame(frame, job.header, job.intrinsics)
        self.cache.put(job.stamp_ns, cached)
        self.counts["frames_encoded"] += 1
        nx, ny = self.settings.grid
        if nx > 0 and ny > 0:
            self._answer(QueryJob(job.stamp_ns, job.header, grid_pixels(*frame.image_size, nx, ny)), cached)
        if self.settings.publish_dense and self.on_dense is not None and self.dense_wanted():
            self.on_dense(job.header, self.predictor.dense(frame))

    def _service_queries(self) -> None:
        """Answer every waiting query whose frame is here; NaN-answer those that cannot match."""
        with self._cond:
            jobs = list(self._queries)
            self._queries.clear()
        tol = int(self.settings.stamp_tolerance_s * 1e9)
        now = time.monotonic()
        waiting = []
        for job in jobs:
            hit = self._lookup(job)
            if hit is not None:
                self._answer_or_nan(job, hit[1])
            elif now - job.received < self.settings.query_timeout_s and (
                job.stamp_ns == 0 or self.cache.may_arrive(job.stamp_ns, tol)
            ):
                waiting.append(job)
            else:
                self.counts["queries_unmatched"] += len(job.uv)
                self.counts["query_messages_unmatched"] += 1
                self._answer(job, None)
        if waiting:
            with self._cond:  # back in front of those that came meanwhile; the oldest go past queue_size
                self._queries.extendleft(reversed(waiting))
                evicted = self._trim_queue()
            for job in evicted:
                self._answer(job, None)

    def _lookup(self, job: QueryJob) -> tuple[int, StampedFrame] | None:
        """The cached frame ``job`` asks for: the newest for stamp 0, else the nearest within tolerance."""
        if job.stamp_ns == 0:
            return self.cache.newest()
        return self.cache.find(job.stamp_ns, int(self.settings.stamp_tolerance_s * 1e9))

    def _answer_or_nan(self, job: QueryJob, cached: StampedFrame) -> None:
        """Answer from ``cached``; when the model fails on this job (e.g. out of memory), answer it
        with NaNs and count it, so the other queries of the batch are still served."""
        try:
            self._answer(job, cached)
        except Exception as e:
            self.error = e
            self.counts["query_messages_failed"] += 1
            log.exception("spd_node worker: query of %d points failed: %s", len(job.uv), e)
            self._answer(job, None)

    def _answer(self, job: QueryJob, cached: StampedFrame | None) -> None:
        k = len(job.uv)
        if cached is None:
            depth = np.full(k, np.nan, np.float32)
            xyz = np.full((k, 3), np.nan, np.float32)
            header = job.header
        else:
            depth = self.predictor.query(cached.frame, job.uv)
            if (plan := self.predictor.last_plan) is not None:  # the execution the planner chose
                self.counts[f"plan_{plan.mode}"] += 1
                self.counts.update(plan.counts)
            intr = cached.intrinsics
            xyz = back_project(job.uv, depth, *intr) if intr else np.full((k, 3), np.nan, np.float32)
            header = cached.header
            self.counts["queries_answered"] += k
            self.counts["query_points_invalid"] += int(k - np.count_nonzero(np.isfinite(depth)))  # NaN/Inf/outside
        latency = time.monotonic() - job.received
        with self._cond:
            self._latencies.append(latency)
        self.on_answer(Answer(header, job.uv, depth, xyz, job.ids, cached is not None, latency))
