"""The background makers' quoting rules: a ladder of levels around a fair price, re-quoted with a latency.

Per market the makers keep `maker_levels` levels on each side, one tick apart, the best bid and the best ask
bracketing their fair price (in Up terms: both outcomes share one book, so Up and Down stay complements). A thin
best level and thicker levels behind it, as recorded books show. A level a taker empties comes back only after a
re-quote delay (a floor plus an exponential tail), and informed taker flow (the source wallet, API wallets) moves
the fair price in its own direction by `impact_per_share` per share, once the makers have seen it (after the same
kind of delay): a burst of BUYs leaves the levels it took empty for a while, then finds the ladder re-quoted
higher rather than restored. Calibration and sources: docs/polysim.md, "Liquidity".

Pure functions and plain state; `actors.BackgroundTraders` applies the plans to the exchange.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from polysim.book import UNIT, units
from polysim.exchange import Order
from polysim.scenario import Background

Level = tuple[bool, int]            # (a bid in Up terms, price in Up-terms micro-units)
Slot = tuple[bool, int, int]        # one maker's place on a level: (bid, price, maker index on the level)


@dataclass
class Desk:
    """One market's makers: their resting orders, their view of the fair price, what they have not reacted to."""
    base: float                                                  # the static model's fair price (Up terms)
    impact: float = 0.0                                          # fair-price shift from flow the makers have seen
    unseen: list[tuple[float, float]] = field(default_factory=list)     # (seen at, shift) of flow not seen yet
    refill_at: dict[Slot, float] = field(default_factory=dict)          # a taken order: no re-post before then
    resting: dict[Slot, Order] = field(default_factory=dict)            # each maker's order on its level

    def catch_up(self, now: float) -> None:
        """Fold in the flow seen by `now`; forget refill deadlines that have passed."""
        if self.unseen:
            self.impact += sum(shift for at, shift in self.unseen if at <= now)
            self.unseen = [(at, shift) for at, shift in self.unseen if at > now]
        if self.refill_at:
            self.refill_at = {lv: at for lv, at in self.refill_at.items() if at > now}

    def taken(self, order_hash: str, seen_at: float) -> None:
        """A fill of one of the makers' orders: that maker re-posts nothing before it has reacted."""
        for slot, o in self.resting.items():
            if o.order_hash == order_hash:
                self.refill_at[slot] = max(seen_at, self.refill_at.get(slot, seen_at))
                return

    def informed(self, shift: float, seen_at: float) -> None:
        self.unseen.append((seen_at, shift))


def ladder(fair: float, tick: int, levels: int) -> tuple[list[int], list[int]]:
    """(bids, asks) in Up-terms micro-units, best first, one tick apart; the best bid and ask bracket `fair`."""
    best_bid = min(max((units(fair) // tick) * tick, tick), UNIT - 2 * tick)
    bids = [p for p in (best_bid - k * tick for k in range(levels)) if p > 0]
    asks = [p for p in (best_bid + (k + 1) * tick for k in range(levels)) if p < UNIT]
    return bids, asks


def plan(bids: list[int], asks: list[int], makers: int, present: set[Slot], refill_at: dict[Slot, float],
         now: float) -> tuple[list[Slot], list[tuple[Slot, int]]]:
    """(orders to cancel, [(order to post, its level's depth index)]): an order off the ladder goes at once, a
    maker missing from its ladder level posts again unless its order was taken and it has not reacted yet."""
    want = {(bid, p, k): i for bid, prices in ((True, bids), (False, asks)) for i, p in enumerate(prices)
            for k in range(makers)}
    cancel = [slot for slot in present if slot not in want]
    post = [(slot, i) for slot, i in want.items() if slot not in present and refill_at.get(slot, now) <= now]
    return cancel, post


def order_size(rng: random.Random, depth_index: int, cfg: Background) -> float:
    """One maker's shares on a level: its share of a level size drawn log-uniformly in `touch_size` for the best
    level, in `maker_size` behind it."""
    lo, hi = cfg.touch_size if depth_index == 0 else cfg.maker_size
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))) / cfg.makers_per_level, 2)


def requote_delay(rng: random.Random, cfg: Background) -> float:
    """Seconds from a fill until the makers react to it: the floor plus an exponential tail."""
    return cfg.requote_min_s + (rng.expovariate(1.0 / cfg.requote_mean_s) if cfg.requote_mean_s > 0 else 0.0)
