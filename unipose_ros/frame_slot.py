"""A one-frame mailbox between the image callback and the inference worker.

The detector must never build a backlog: it processes the newest frame only. The callback puts
every frame here; a frame that arrives while the previous one still waits replaces it and is
counted as dropped. The worker takes whatever is newest when it becomes free.
"""
from __future__ import annotations

import threading
from typing import Any


class LatestFrameSlot:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._has_item = False
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store `item`; returns True when it replaced a frame that was never processed."""
        with self._cond:
            replaced = self._has_item
            self._item, self._has_item = item, True
            self.received += 1
            if replaced:
                self.dropped += 1
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The newest frame, waiting up to `timeout` s; None on timeout or after close()."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if self._closed and not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def clear(self) -> None:
        """Forget a waiting frame (it is not counted as dropped: processing was stopped)."""
        with self._cond:
            self._item, self._has_item = None, False

    def close(self) -> None:
        """Wake the worker for good; take() returns None from now on once the slot is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
