"""The only module that reads the wall clock or sleeps. Everything else gets a Clock injected."""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Protocol

import gevent


class Clock(Protocol):
    def now(self) -> float: ...            # wall clock, epoch seconds
    def now_ns(self) -> int: ...           # wall clock, epoch nanoseconds
    def monotonic(self) -> float: ...      # seconds, for durations only
    def sleep(self, seconds: float) -> None: ...


class LiveClock:
    def now(self) -> float:
        return time.time()

    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)


class FakeClock:
    """Deterministic clock for tests: time moves only when advance() is called."""

    def __init__(self, start: float = 1_800_000_000.0):
        self._now = start
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    def now(self) -> float:
        return self._now

    def now_ns(self) -> int:
        return int(round(self._now * 1e9))

    def monotonic(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, fn))

    def advance(self, seconds: float) -> None:
        target = self._now + max(0.0, seconds)
        while self._timers and self._timers[0][0] <= target:
            when, _, fn = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            fn()
        self._now = target
