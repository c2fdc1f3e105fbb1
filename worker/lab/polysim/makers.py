"""The background makers' quoting rules: a ladder of levels around a fair price, re-quoted with a latency.

Per market the makers keep `maker_levels` levels on each side, one tick apart, the best bid and the best ask
bracketing their fair price (in Up terms: both outcomes share one book, so Up and Down stay complements), a thin
best level and thicker levels behind it, each level shared by `makers_per_level` makers. A maker whose order a
taker took posts it again only after its re-quote delay (a floor plus an exponential tail). Informed taker flow
(the source wallet, API wallets) is different: the makers it took do not offer that price again while it stays on
their ladder, and once they have seen it (after a re-quote delay) they move their fair price in its direction, by
`impact_per_share` per share and at least past the deepest level it emptied. So a burst of BUYs leaves the levels
it took empty, then finds the ladder re-quoted higher, never restored. Calibration and sources: docs/polysim.md.

Pure functions and plain state; `actors.BackgroundTraders` applies the plans to the exchange.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from polysim.book import UNIT, units
from polysim.exchange import Order
from polysim.scenario import Background

Slot = tuple[bool, int, int]        # one maker's place: (a bid in Up terms, price in Up-terms micro-units, maker index)
NOT_AGAIN = math.inf                # the refill deadline of a maker informed flow took: not at this price again


@dataclass(frozen=True)
class Seen:
    """Informed flow, as the makers will have seen it at `at`: a shift of their fair price, and the deepest level
    it emptied (their fair price moves to it at least, for a buy; just below it, for a sell)."""
    at: float
    shift: float
    buy: bool
    emptied: float | None = None


@dataclass
class Desk:
    """One market's makers: their resting orders, their view of the fair price, what they have not reacted to."""
    base: float                                                  # the static model's fair price (Up terms)
    impact: float = 0.0                                          # fair-price shift from flow the makers have seen
    unseen: list[Seen] = field(default_factory=list)
    refill_at: dict[Slot, float] = field(default_factory=dict)   # a taken maker: no re-post before then
    resting: dict[Slot, Order] = field(default_factory=dict)     # each maker's order on its level

    def catch_up(self, now: float, base: float) -> None:
        """Fold in the informed flow seen by `now` (against the model's price `base`); forget refill deadlines that
        have passed."""
        due = sorted((x for x in self.unseen if x.at <= now), key=lambda x: x.at)
        if due:
            self.unseen = [x for x in self.unseen if x.at > now]
            for x in due:
                self.impact += x.shift
                if x.emptied is not None and x.buy:
                    self.impact = max(self.impact, x.emptied - base)
                elif x.emptied is not None:
                    self.impact = min(self.impact, x.emptied - base - 1 / UNIT)
        if self.refill_at:
            self.refill_at = {slot: at for slot, at in self.refill_at.items() if at > now}

    def taken(self, order_hash: str, until: float) -> None:
        """A fill of one of the makers' orders: that maker posts nothing on its level before `until`."""
        for slot, o in self.resting.items():
            if o.order_hash == order_hash:
                self.refill_at[slot] = max(until, self.refill_at.get(slot, until))
                return


def ladder(fair: float, tick: int, levels: int) -> tuple[list[int], list[int]]:
    """(bids, asks) in Up-terms micro-units, best first, one tick apart; the best bid and ask bracket `fair`."""
    best_bid = min(max((units(fair) // tick) * tick, tick), UNIT - 2 * tick)
    bids = [p for p in (best_bid - k * tick for k in range(levels)) if p > 0]
    asks = [p for p in (best_bid + (k + 1) * tick for k in range(levels)) if p < UNIT]
    return bids, asks


def plan(bids: list[int], asks: list[int], makers: int, present: set[Slot], refill_at: dict[Slot, float],
         now: float) -> tuple[list[Slot], list[tuple[Slot, int]], list[Slot]]:
    """(orders to cancel, [(order to post, its level's depth index)], refill deadlines to forget): an order off the
    ladder goes at once; a maker missing from its ladder level posts again unless it was taken and has not reacted
    yet; the deadline of a maker whose level left the ladder no longer holds."""
    want = {(bid, p, k): i for bid, prices in ((True, bids), (False, asks)) for i, p in enumerate(prices)
            for k in range(makers)}
    cancel = [slot for slot in present if slot not in want]
    post = [(slot, i) for slot, i in want.items() if slot not in present and refill_at.get(slot, now) <= now]
    return cancel, post, [slot for slot in refill_at if slot not in want]


def order_size(rng: random.Random, depth_index: int, cfg: Background) -> float:
    """One maker's shares on a level: its share of a level size drawn log-uniformly in `touch_size` for the best
    level, in `maker_size` behind it."""
    lo, hi = cfg.touch_size if depth_index == 0 else cfg.maker_size
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))) / cfg.makers_per_level, 2)


def requote_delay(rng: random.Random, cfg: Background) -> float:
    """Seconds from a fill until the makers react to it: the floor plus an exponential tail."""
    return cfg.requote_min_s + (rng.expovariate(1.0 / cfg.requote_mean_s) if cfg.requote_mean_s > 0 else 0.0)
