"""Automatic circuit breaker: a reason to HALT when the error rate or the p95 copy delay breaches its bound.

Pure: the caller passes `now`; it keeps a sliding window of recent order outcomes.
"""
from __future__ import annotations

import math
from collections import deque

from copier.config import RiskConfig


class CircuitBreaker:
    def __init__(self, risk_cfg: RiskConfig) -> None:
        self.cfg = risk_cfg
        self._orders: deque[tuple[float, bool, float]] = deque()

    def record_order(self, ok: bool, delay_ms: float, now: float) -> str:
        self._orders.append((now, ok, delay_ms))
        while self._orders and self._orders[0][0] < now - self.cfg.breaker_window_s:
            self._orders.popleft()
        n = len(self._orders)
        if n < self.cfg.breaker_min_orders:
            return ""
        failed = sum(1 for _, good, _ in self._orders if not good)
        rate = failed / n
        if rate > self.cfg.breaker_max_error_rate:
            return (f"error rate {rate:.2f} > {self.cfg.breaker_max_error_rate:.2f} over {n} orders in "
                    f"{self.cfg.breaker_window_s:g}s")
        delays = sorted(d for _, _, d in self._orders)
        p95 = delays[max(0, math.ceil(0.95 * n) - 1)]
        if p95 > self.cfg.breaker_max_p95_ms:
            return f"p95 copy delay {p95:.0f}ms > {self.cfg.breaker_max_p95_ms:g}ms over {n} orders"
        return ""
