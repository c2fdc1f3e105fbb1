"""Exposure book: what we hold and what we have committed, filled or still in flight.

Risk caps count in-flight orders at their worst-case cost (size x price cap + the largest taker fee), so a burst of
decisions can never overshoot a cap while the venue has not answered yet; a fill replaces the reservation with what
it really cost, fee included, which is never more. Caps limit opening (BUY) cost; SELLs only reduce positions.

The window cap holds on two clocks: any 15 minutes of wall time (a sliding window over decision instants, not a
clock bucket a burst can straddle) and one market window (every market that ends at the same instant).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from copier.config import DAY_WINDOWS
from copier.fees import taker_fee_per_share
from copier.types import OrderIntent, Side

DAY_S = 86400


def bucket(ts: float, width_s: float) -> int:
    return int(ts // width_s) * int(width_s)


def fill_cost(side: Side, filled_size: float, avg_price: float, fee_rate: float, fee_exponent: float) -> float:
    """What a fill moved in pUSD: a BUY pays notional + taker fee, a SELL receives notional - taker fee. The fee at
    the average price bounds the sum of the fees of the single fills from above (p(1-p) is concave)."""
    fee = filled_size * taker_fee_per_share(avg_price, fee_rate, fee_exponent)
    notional = filled_size * avg_price
    return notional + fee if side is Side.BUY else notional - fee


@dataclass(frozen=True, slots=True)
class ExposureRow:
    """One order as persisted, for restoring the book at start-up."""
    intent_id: str
    condition_id: str
    asset: str
    side: Side
    decided_at: float
    notional: float        # worst-case cost while in flight, fee included
    size: float
    filled_size: float
    avg_price: float
    in_flight: bool
    market_end_ts: float
    fee_rate: float
    fee_exponent: float


@dataclass
class _Order:
    condition_id: str
    asset: str
    side: Side
    size: float
    cost: float            # reservation while in flight; what it cost once settled (0 if nothing filled)
    decided_at: float
    market_end: float
    in_flight: bool
    fee_rate: float
    fee_exponent: float


class ExposureBook:
    def __init__(self, window_s: int = 900) -> None:
        """window_s: the length of the window cap (markets.window_seconds, 900 s live)."""
        self.window_s = window_s
        self._orders: dict[str, _Order] = {}
        self._recent: list[str] = []                                   # BUY intent ids near the sliding window
        self._position: dict[str, float] = defaultdict(float)          # asset -> shares held
        self._selling: dict[str, float] = defaultdict(float)           # asset -> shares in in-flight SELLs
        self._buying: dict[str, int] = defaultdict(int)                # asset -> in-flight BUY orders
        self._market_cost: dict[str, float] = defaultdict(float)       # condition_id -> buy cost - sell proceeds
        self._market_window: dict[float, float] = defaultdict(float)   # market end -> BUY cost
        self._day: dict[int, float] = defaultdict(float)               # day of markets -> BUY cost
        self._next_forget = 0.0
        self._market_day_s = DAY_WINDOWS * window_s                     # a day of markets: 86,400 s live

    # ---- queries (pure reads, used by decision) ----------------------------------------------------------
    def position(self, asset: str) -> float:
        """Shares we could sell now: held minus in-flight sells."""
        return max(0.0, self._position[asset] - self._selling[asset])

    def buying(self, asset: str) -> bool:
        """Whether BUY orders on this asset are still in flight (their shares may yet arrive)."""
        return self._buying[asset] > 0

    def market_notional(self, condition_id: str) -> float:
        return max(0.0, self._market_cost[condition_id])

    def rolling_notional(self, ts: float) -> float:
        """BUY cost decided within window_s either side of ts: every window_s span that contains ts lies inside,
        so a decision that fits under it fits every span, even when decisions are recorded slightly out of order."""
        self._prune(ts)
        return sum(o.cost for iid in self._recent if abs((o := self._orders[iid]).decided_at - ts) < self.window_s)

    def market_window_notional(self, market_end: float) -> float:
        return self._market_window[market_end]

    def day_notional(self, ts: float) -> float:
        """BUY cost decided in the day of ts: the UTC day live; a day of markets when a simulator runs market time
        faster (the daily cap then holds per simulated day, not once for a whole accelerated week)."""
        return self._day[bucket(ts, self._market_day_s)]

    def in_flight(self) -> int:
        return sum(1 for o in self._orders.values() if o.in_flight)

    # ---- updates -----------------------------------------------------------------------------------------
    def reserve(self, intent: OrderIntent) -> None:
        self._add(intent.intent_id, _Order(intent.condition_id, intent.asset, intent.side, intent.size,
                                           intent.notional if intent.side is Side.BUY else 0.0, intent.decided_at,
                                           intent.market_end_ts, True, intent.fee_rate, intent.fee_exponent))

    def settle(self, intent_id: str, filled_size: float, avg_price: float) -> None:
        """The order is final: filled_size shares moved at avg_price (its taker fee is added here)."""
        o = self._orders.get(intent_id)
        if o is None or not o.in_flight:
            return
        self._end_flight(o)
        filled_cost = fill_cost(o.side, filled_size, avg_price, o.fee_rate, o.fee_exponent) if filled_size > 0 else 0.0
        if o.side is Side.BUY:
            self._move_cost(o, filled_cost - o.cost)
            self._position[o.asset] += filled_size
        else:
            self._position[o.asset] = max(0.0, self._position[o.asset] - filled_size)
            self._market_cost[o.condition_id] -= filled_cost

    def release(self, intent_id: str) -> None:
        """The order did not execute at all."""
        self.settle(intent_id, 0.0, 0.0)

    def restore(self, rows: Iterable[ExposureRow]) -> None:
        for row in rows:
            filled_cost = fill_cost(row.side, row.filled_size, row.avg_price, row.fee_rate, row.fee_exponent)
            cost = row.notional if row.in_flight else filled_cost
            self._add(row.intent_id, _Order(row.condition_id, row.asset, row.side, row.size,
                                            cost if row.side is Side.BUY else 0.0, row.decided_at,
                                            row.market_end_ts, row.in_flight, row.fee_rate, row.fee_exponent))
            if row.in_flight:
                continue
            if row.side is Side.BUY:
                self._position[row.asset] += row.filled_size
            else:
                self._position[row.asset] = max(0.0, self._position[row.asset] - row.filled_size)
                self._market_cost[row.condition_id] -= filled_cost

    # ---- internals ---------------------------------------------------------------------------------------
    def _add(self, intent_id: str, o: _Order) -> None:
        if intent_id in self._orders:
            return
        self._orders[intent_id] = o
        if o.in_flight:
            if o.side is Side.BUY:
                self._buying[o.asset] += 1
            else:
                self._selling[o.asset] += o.size
        if o.side is Side.BUY:
            self._recent.append(intent_id)
            cost, o.cost = o.cost, 0.0
            self._move_cost(o, cost)

    def _end_flight(self, o: _Order) -> None:
        o.in_flight = False
        if o.side is Side.BUY:
            self._buying[o.asset] -= 1
        else:
            self._selling[o.asset] -= o.size

    def _move_cost(self, o: _Order, delta: float) -> None:
        o.cost += delta
        self._market_cost[o.condition_id] += delta
        self._market_window[o.market_end] += delta
        self._day[bucket(o.decided_at, self._market_day_s)] += delta

    def _prune(self, ts: float) -> None:
        """Forget, for the sliding window, BUYs far older than any window that can still matter; every 4 windows
        (an hour live), forget settled orders and market windows older than two days of markets, the tokens and
        markets no order left names (a restart, which restores a day of orders, knows no more of them), and days
        older than two (the daily cap counts today's)."""
        horizon = ts - 2 * self.window_s
        if self._recent and self._orders[self._recent[0]].decided_at < horizon:
            self._recent = [iid for iid in self._recent if self._orders[iid].decided_at >= horizon]
        if ts < self._next_forget:
            return
        self._next_forget = ts + 4 * self.window_s
        old = ts - 2 * self._market_day_s
        for iid in [iid for iid, o in self._orders.items() if not o.in_flight and o.decided_at < old]:
            del self._orders[iid]
        self._recent = [iid for iid in self._recent if iid in self._orders]     # decided out of order, long ago
        for end in [e for e in self._market_window if e < old]:
            del self._market_window[end]
        for day in [d for d in self._day if d < ts - 2 * self._market_day_s]:
            del self._day[day]
        assets = {o.asset for o in self._orders.values()}
        markets = {o.condition_id for o in self._orders.values()}
        for table in (self._position, self._selling, self._buying):
            for asset in [a for a in table if a not in assets]:
                del table[asset]
        for cid in [c for c in self._market_cost if c not in markets]:
            del self._market_cost[cid]
