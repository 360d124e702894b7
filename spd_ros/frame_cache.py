"""Ring buffer of encoded frames keyed by header stamp (pure Python, thread-safe)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class FrameCache(Generic[T]):
    """The last ``capacity`` frames by stamp (ns); the oldest goes when a new one arrives."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._frames: OrderedDict[int, T] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, stamp_ns: int, frame: T) -> None:
        with self._lock:
            self._frames.pop(stamp_ns, None)
            self._frames[stamp_ns] = frame
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)

    def newest(self) -> tuple[int, T] | None:
        with self._lock:
            return next(reversed(self._frames.items()), None)

    def find(self, stamp_ns: int, tolerance_ns: int) -> tuple[int, T] | None:
        """The cached frame nearest to ``stamp_ns`` within ``tolerance_ns``, else None."""
        with self._lock:
            if not self._frames:
                return None
            best = min(self._frames, key=lambda s: abs(s - stamp_ns))
            return (best, self._frames[best]) if abs(best - stamp_ns) <= tolerance_ns else None

    def may_arrive(self, stamp_ns: int, tolerance_ns: int) -> bool:
        """True when a frame with this stamp could still come (newer than everything cached)."""
        with self._lock:
            return not self._frames or stamp_ns > next(reversed(self._frames)) + tolerance_ns

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
