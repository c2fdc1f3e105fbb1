"""Exposure book: what we hold and what we have committed, filled or still in flight.

Risk caps count in-flight orders at their worst-case notional, so a burst of decisions can never overshoot a cap
while the venue has not answered yet. Caps limit opening (BUY) notional; SELLs only reduce positions.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from copier.types import OrderIntent, Side

DAY_S = 86400


def bucket(ts: float, width_s: float) -> int:
    return int(ts // width_s) * int(width_s)


@dataclass(frozen=True, slots=True)
class ExposureRow:
    """One order as persisted, for restoring the book at start-up."""
    intent_id: str
    condition_id: str
    asset: str
    side: Side
    decided_at: float
    notional: float        # worst-case notional while in flight
    size: float
    filled_size: float
    avg_price: float
    in_flight: bool


@dataclass
class _Reservation:
    condition_id: str
    asset: str
    side: Side
    size: float
    notional: float
    window: int
    day: int


class ExposureBook:
    def __init__(self, window_s: int = 900) -> None:
        """window_s: the market window the per-window cap applies to (markets.window_seconds, 900 s live)."""
        self.window_s = window_s
        self._inflight: dict[str, _Reservation] = {}
        self._position: dict[str, float] = defaultdict(float)          # asset -> shares held
        self._market_cost: dict[str, float] = defaultdict(float)       # condition_id -> filled buy cost - sell proceeds
        self._window_spend: dict[int, float] = defaultdict(float)      # filled BUY notional per 15m window
        self._day_spend: dict[int, float] = defaultdict(float)         # filled BUY notional per UTC day

    # ---- queries (pure reads, used by decision) ----------------------------------------------------------
    def position(self, asset: str) -> float:
        """Shares we could sell now: held minus in-flight sells."""
        selling = sum(r.size for r in self._inflight.values() if r.asset == asset and r.side is Side.SELL)
        return max(0.0, self._position[asset] - selling)

    def market_notional(self, condition_id: str) -> float:
        inflight = sum(r.notional for r in self._inflight.values()
                       if r.condition_id == condition_id and r.side is Side.BUY)
        return max(0.0, self._market_cost[condition_id]) + inflight

    def window_notional(self, ts: float) -> float:
        w = bucket(ts, self.window_s)
        return self._window_spend[w] + sum(r.notional for r in self._inflight.values()
                                           if r.window == w and r.side is Side.BUY)

    def day_notional(self, ts: float) -> float:
        d = bucket(ts, DAY_S)
        return self._day_spend[d] + sum(r.notional for r in self._inflight.values()
                                        if r.day == d and r.side is Side.BUY)

    def in_flight(self) -> int:
        return len(self._inflight)

    # ---- updates -----------------------------------------------------------------------------------------
    def reserve(self, intent: OrderIntent) -> None:
        self._inflight[intent.intent_id] = _Reservation(
            intent.condition_id, intent.asset, intent.side, intent.size, intent.notional,
            bucket(intent.decided_at, self.window_s), bucket(intent.decided_at, DAY_S))

    def settle(self, intent_id: str, filled_size: float, avg_price: float) -> None:
        r = self._inflight.pop(intent_id, None)
        if r is None:
            return
        self._apply_fill(r, filled_size, avg_price)

    def release(self, intent_id: str) -> None:
        self._inflight.pop(intent_id, None)

    def restore(self, rows) -> None:
        for row in rows:
            r = _Reservation(row.condition_id, row.asset, row.side, row.size, row.notional,
                             bucket(row.decided_at, self.window_s), bucket(row.decided_at, DAY_S))
            if row.in_flight:
                self._inflight[row.intent_id] = r
            elif row.filled_size > 0:
                self._apply_fill(r, row.filled_size, row.avg_price)

    def _apply_fill(self, r: _Reservation, filled_size: float, avg_price: float) -> None:
        if filled_size <= 0:
            return
        cost = filled_size * avg_price
        if r.side is Side.BUY:
            self._position[r.asset] += filled_size
            self._market_cost[r.condition_id] += cost
            self._window_spend[r.window] += cost
            self._day_spend[r.day] += cost
        else:
            self._position[r.asset] = max(0.0, self._position[r.asset] - filled_size)
            self._market_cost[r.condition_id] -= cost
