"""Pairs colour frames with depth frames by stamp (message_filters' ApproximateTime, for two topics,
with no dependency on message_filters).

Depth frames are buffered as they arrive. A colour frame is paired with the buffered depth frame
nearest in stamp when the two differ by at most ``tolerance`` seconds (ApproximateTime's ``slop``);
a depth frame is used at most once, and older ones are dropped with it, as in ApproximateTime.
When no depth frame stamped at or after the colour frame has arrived yet, :meth:`pair` waits up
to ``wait`` seconds for one (depth usually arrives within a frame of its colour image; no wait
when no depth frame came in the last second). Unlike a
synchroniser, a colour frame without a depth partner is not held back: the caller still publishes
its 2-D keypoints (with invalid 3-D positions) and the frame is counted as unpaired.

Stamps are integer nanoseconds; no ROS import, so it is tested on its own.
"""
from __future__ import annotations

import threading
import time
from collections import deque


class StampPairer:
    def __init__(self, tolerance: float = 0.02, capacity: int = 30, wait: float = 0.05) -> None:
        self.tolerance_ns = int(round(tolerance * 1e9))
        self.wait = float(wait)
        self._buffer: deque = deque(maxlen=max(1, int(capacity)))   # (stamp_ns, item), arrival order
        self._cond = threading.Condition()
        self.paired = 0
        self.unpaired = 0
        self.last_offset_s = float("nan")   # depth stamp - colour stamp of the last pair
        self._last_arrival = -1e9             # monotonic time of the newest depth frame

    def set_tolerance(self, tolerance: float) -> None:
        self.tolerance_ns = int(round(tolerance * 1e9))

    def add(self, stamp_ns: int, item) -> None:
        with self._cond:
            self._buffer.append((int(stamp_ns), item))
            self._last_arrival = time.monotonic()
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._buffer.clear()

    def has_after(self, stamp_ns: int) -> bool:
        """Whether a depth frame stamped at or after `stamp_ns` is buffered (then no later one can
        be nearer to a colour frame stamped before it)."""
        with self._cond:
            return any(s >= stamp_ns for s, _ in self._buffer)

    def pair(self, stamp_ns: int, wait: float | None = None):
        """The depth item for the colour frame stamped `stamp_ns`, or None (counted unpaired)."""
        stamp_ns = int(stamp_ns)
        with self._cond:
            # wait only while depth is streaming: a silent depth topic must not slow every frame
            if time.monotonic() - self._last_arrival < 1.0:
                self._cond.wait_for(lambda: any(s >= stamp_ns for s, _ in self._buffer),
                                    timeout=self.wait if wait is None else wait)
            best = None
            for index, (s, item) in enumerate(self._buffer):
                offset = abs(s - stamp_ns)
                if offset <= self.tolerance_ns and (best is None or offset < best[0]):
                    best = (offset, index, s, item)
            if best is None:
                self.unpaired += 1
                return None
            _, index, s, item = best
            for _ in range(index + 1):  # used once; anything older can no longer be nearer
                self._buffer.popleft()
            self.paired += 1
            self.last_offset_s = (s - stamp_ns) * 1e-9
            return item
