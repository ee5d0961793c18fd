"""Rate and latency bookkeeping for diagnostics, and per-problem log throttling."""
from __future__ import annotations

import re
import threading
import time
from collections import deque


class WindowStats:
    """Event rate and value statistics over a sliding time window (thread-safe)."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._events: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()
        self.total = 0

    def add(self, value: float = 0.0) -> None:
        now = self._clock()
        with self._lock:
            self._events.append((now, float(value)))
            self.total += 1
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()

    def snapshot(self) -> dict[str, float]:
        """rate (events/s over the window), mean / max / last value, count in the window."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            values = [v for _, v in self._events]
        if not values:
            return {"rate": 0.0, "mean": 0.0, "max": 0.0, "last": 0.0, "count": 0}
        return {"rate": len(values) / self.window_s, "mean": sum(values) / len(values),
                "max": max(values), "last": values[-1], "count": len(values)}


class ProblemThrottle:
    """Say each kind of problem at most once per `period_s`; kinds differ by their message with
    the numbers taken out, so "data size 10 != ..." and "data size 12 != ..." are one kind while a
    different problem is still reported at once."""

    def __init__(self, period_s: float = 5.0, clock=time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def should_report(self, message: str) -> bool:
        key = re.sub(r"\d+", "#", message)
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                return False
            self._last[key] = now
            return True


class RateLimiter:
    """Spaces out work to at most `max_rate` per second (0 or less: unlimited)."""

    def __init__(self, max_rate: float = 0.0, clock=time.monotonic) -> None:
        self.max_rate = max_rate
        self._clock = clock
        self._next = 0.0

    def wait_time(self) -> float:
        """Seconds to wait before the next piece of work may start."""
        if self.max_rate <= 0:
            return 0.0
        return max(0.0, self._next - self._clock())

    def mark(self) -> None:
        """Record that work starts now."""
        if self.max_rate > 0:
            self._next = self._clock() + 1.0 / self.max_rate
