"""FrameCache (pure Python, no ROS): eviction order, re-put stamps, nearest match.

The basic put/newest/find/may_arrive cases are in test_worker.py::test_frame_cache."""

from __future__ import annotations

from spd_ros.frame_cache import FrameCache

S = 1_000_000_000  # ns per s


def test_re_put_stamp_replaces_and_becomes_newest() -> None:
    cache: FrameCache[str] = FrameCache(2)
    cache.put(1 * S, "a")
    cache.put(2 * S, "b")
    cache.put(1 * S, "a2")  # the same stamp again (e.g. a replayed frame): one entry, now the newest
    assert len(cache) == 2 and cache.newest() == (1 * S, "a2")
    cache.put(3 * S, "c")  # evicts the least recently put: stamp 2, not the re-put stamp 1
    assert cache.find(2 * S, 0) is None and cache.find(1 * S, 0) == (1 * S, "a2")


def test_find_takes_the_nearest_within_tolerance() -> None:
    cache: FrameCache[str] = FrameCache(4)
    for s, name in ((10, "a"), (20, "b"), (30, "c")):
        cache.put(s, name)
    assert cache.find(14, 10) == (10, "a") and cache.find(16, 10) == (20, "b")
    assert cache.find(25, 4) is None  # 5 from both neighbours
    assert cache.find(0, 10) == (10, "a") and cache.find(41, 10) is None
    assert not cache.may_arrive(35, 10) and cache.may_arrive(41, 10)  # only stamps past the newest may come
