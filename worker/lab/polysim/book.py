"""One price-time-priority book per binary market, kept in the first outcome's terms.

Polymarket's two outcome books are one book: a BUY of Up at p rests on the same level as a SELL of Down at 1 - p,
and a BUY of Down can fill against a BUY of Up (a mint). So every order lives in a single book as a bid or an ask
in Up terms, and each token's view (what /book and the market websocket show) is derived from it.
Prices are integer micro-units (1e-6) so levels compare exactly.
"""
from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from typing import Protocol

UNIT = 1_000_000


def units(price: float) -> int:
    return int(round(price * UNIT))


class Resting(Protocol):
    bu: int                 # price in Up terms, micro-units
    bid: bool               # a bid in Up terms (BUY Up or SELL Down)

    @property
    def remaining(self) -> float: ...


class BookSide:
    __slots__ = ("is_bid", "levels", "prices", "sizes")

    def __init__(self, is_bid: bool):
        self.is_bid = is_bid
        self.levels: dict[int, deque] = {}
        self.prices: list[int] = []         # ascending
        self.sizes: dict[int, float] = {}

    def add(self, o: Resting) -> None:
        q = self.levels.get(o.bu)
        if q is None:
            q = self.levels[o.bu] = deque()
            bisect.insort(self.prices, o.bu)
            self.sizes[o.bu] = 0.0
        q.append(o)
        self.sizes[o.bu] = round(self.sizes[o.bu] + o.remaining, 6)

    def reduce(self, price: int, qty: float) -> None:
        self.sizes[price] = round(self.sizes[price] - qty, 6)

    def remove(self, o: Resting) -> None:
        q = self.levels.get(o.bu)
        if q is None:
            return
        try:
            q.remove(o)
        except ValueError:
            return
        self.sizes[o.bu] = round(self.sizes[o.bu] - o.remaining, 6)
        if not q:
            self._drop_level(o.bu)

    def pop_filled(self, price: int, o: Resting) -> None:
        """Remove a fully filled order (its size was already taken off the level)."""
        q = self.levels[price]
        q.remove(o)
        if not q:
            self._drop_level(price)

    def _drop_level(self, price: int) -> None:
        del self.levels[price]
        del self.sizes[price]
        i = bisect.bisect_left(self.prices, price)
        del self.prices[i]

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def best_first(self) -> Iterator[int]:
        return iter(list(reversed(self.prices)) if self.is_bid else list(self.prices))

    def top(self, depth: int) -> list[tuple[int, float]]:
        ps = self.prices[-depth:][::-1] if self.is_bid else self.prices[:depth]
        return [(p, self.sizes[p]) for p in ps]

    def size_at(self, price: int) -> float:
        return self.sizes.get(price, 0.0)

    def orders(self) -> Iterator:
        for q in self.levels.values():
            yield from q


class Book:
    """Bids and asks in Up terms, plus the levels touched since the last `flush_changes`."""

    __slots__ = ("bids", "asks", "_dirty", "last_trade_price")

    def __init__(self):
        self.bids = BookSide(True)
        self.asks = BookSide(False)
        self._dirty: dict[tuple[bool, int], None] = {}
        self.last_trade_price: list[float] = [0.5, 0.5]     # per outcome index

    def side(self, is_bid: bool) -> BookSide:
        return self.bids if is_bid else self.asks

    def touch(self, is_bid: bool, price: int) -> None:
        self._dirty[(is_bid, price)] = None

    def flush_changes(self) -> list[tuple[bool, int, float]]:
        """[(is_bid, price units, new level size)] in Up terms; size 0 means the level is gone."""
        out = [(b, p, self.side(b).size_at(p)) for b, p in self._dirty]
        self._dirty.clear()
        return out

    # ---- per-token views ---------------------------------------------------------------------------------
    def levels(self, outcome_index: int, side: str, depth: int = 1_000) -> list[tuple[int, float]]:
        """(price units in this token's terms, size) best first; side BUY = this token's bids."""
        if outcome_index == 0:
            return (self.bids if side == "BUY" else self.asks).top(depth)
        mirrored = (self.asks if side == "BUY" else self.bids).top(depth)
        return [(UNIT - p, s) for p, s in mirrored]

    def best(self, outcome_index: int) -> tuple[int | None, int | None]:
        b, a = self.bids.best(), self.asks.best()
        if outcome_index == 0:
            return b, a
        return (UNIT - a if a is not None else None), (UNIT - b if b is not None else None)
