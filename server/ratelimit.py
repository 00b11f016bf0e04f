"""A per-process limit on failed token checks per client address; requests over it get HTTP 429."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

MAX_FAILURES = 30
WINDOW_SECONDS = 60.0
MAX_TRACKED_ADDRESSES = 10_000


class FailureLimiter:
    """Count failed authentications per address over a sliding window.

    An address with ``max_failures`` failures in the last ``window`` seconds
    is blocked until the oldest of them leaves the window, so guessing tokens
    costs a minute per ``max_failures`` guesses per server process.
    """

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_SECONDS,
                 max_addresses: int = MAX_TRACKED_ADDRESSES):
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.get(address)
            if failures is None:
                return False
            self._expire(failures, now)
            return len(failures) >= self.max_failures

    def record_failure(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.pop(address, None) or deque()
            self._expire(failures, now)
            failures.append(now)
            self._failures[address] = failures
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()

    def _expire(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window:
            failures.popleft()
