"""`python -m polysim.calibrate [--scenario FILE|prd] [--seconds 900]`: the liquidity model's books beside the
recorded ones.

Drives the exchange and the background traders on a simulated clock (no sockets, no sleeping): takers at the
scenario's rate, the makers' quoting every quarter second and their delayed reactions to fills. Each trading
market's books are sampled once a simulated second. Prints the spread distribution and the sizes at the best level
and behind it, and the makers' re-quote delay distribution, each beside the figure recorded on the real venue
(sources in docs/polysim.md, "Liquidity").
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

from polysim import scenario as scenarios
from polysim.actors import BackgroundTraders
from polysim.book import UNIT
from polysim.events import MATCH, Hub, Match
from polysim.exchange import Exchange
from polysim.scenario import Background, Scenario
from polysim.truth import GroundTruth

# Ten two-sided full-depth books of BTC and ETH 15-minute Up/Down markets (Dec 2025 - Jan 2026): the spread was one
# tick in 8 of 10; sizes are quartiles (shares) at the best level and at levels 2-5 of both sides.
RECORDED_ONE_TICK_SHARE = 0.8
RECORDED_TOUCH_QUARTILES = (43.0, 134.0, 467.0)
RECORDED_BEHIND_QUARTILES = (412.0, 700.0, 1394.0)
# Share of a swept book's depth back after t seconds (aggregated over many sweeps of BTC 15-minute books).
RECORDED_RECOVERY = {0.5: (0.10, 0.20), 1.0: (0.25, 0.40), 2.0: (0.50, 0.65), 5.0: (0.75, 0.85), 10.0: (0.85, 0.95)}
START = 1_800_000_010.0           # any epoch second a little after a window boundary
QUOTE_EVERY_S = 0.25              # the server's clock period (server.CLOCK_S)


@dataclass(frozen=True)
class BookStats:
    samples: int
    spread_ticks: dict[int, float]                  # share of samples with this spread (one-sided books excluded)
    touch_quartiles: tuple[float, float, float]     # shares at the best level
    behind_quartiles: tuple[float, float, float]    # shares at levels 2-5
    maker_rows_per_match: float                     # maker fills per trade: RTDS `trades` rows beyond the taker's


class SimClock:
    """A simulated wall clock with timers, standing in for the event loop."""

    def __init__(self, start: float):
        self.t = start
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._n = 0

    def now(self) -> float:
        return self.t

    def later(self, delay_s: float, fn: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self._timers, (self.t + max(0.0, delay_s), self._n, fn))

    def next_timer(self) -> float:
        return self._timers[0][0] if self._timers else math.inf

    def fire(self) -> None:
        at, _, fn = heapq.heappop(self._timers)
        self.t = at
        fn()


def requote_cdf(cfg: Background, t: float) -> float:
    """P(a maker has re-posted within t seconds of the fill that took its order)."""
    if t < cfg.requote_min_s:
        return 0.0
    return 1.0 if cfg.requote_mean_s <= 0 else 1.0 - math.exp(-(t - cfg.requote_min_s) / cfg.requote_mean_s)


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3 if xs else [0.0] * 3
    return round(q[0], 1), round(q[1], 1), round(q[2], 1)


def measure(s: Scenario, seconds: float) -> BookStats:
    clock = SimClock(START)
    hub = Hub()
    ex = Exchange(hub, s, rng=random.Random(f"{s.seed}:exchange"), truth=GroundTruth(None, clock.now))
    bg = BackgroundTraders(ex, s.background, price_model=s.markets.price_model,
                           rng=random.Random(f"{s.seed}:background"), now=clock.now, later=clock.later)
    hub.subscribe(MATCH, bg.on_match)
    rows = [0, 0]

    def count(match: Match) -> None:
        rows[0] += 1
        rows[1] += len(match.makers)

    hub.subscribe(MATCH, count)
    rng = random.Random(f"{s.seed}:sim")
    rate = s.background.taker_rate
    take_at = START + rng.expovariate(rate) if rate > 0 else math.inf
    quote_at, sample_at, end = START, START + 5.0, START + seconds
    spreads: list[int] = []
    touch: list[float] = []
    behind: list[float] = []
    while clock.t < end:
        t = min(take_at, quote_at, sample_at, clock.next_timer())
        if t == clock.next_timer():
            clock.fire()
            continue
        clock.t = t
        if t == quote_at:
            ex.tick(t)
            bg.quote(t)
            quote_at += QUOTE_EVERY_S
        elif t == take_at:
            bg.take_one(t)
            take_at += rng.expovariate(rate)
        else:
            sample_at += 1.0
            for m in ex.markets.values():
                if m.state != "trading":
                    continue
                book = ex.books[m.condition_id]
                for idx in (0, 1):
                    bids, asks = book.levels(idx, "BUY", 5), book.levels(idx, "SELL", 5)
                    if bids and asks:
                        spreads.append(round((asks[0][0] - bids[0][0]) / (m.tick_size * UNIT)))
                        touch += [bids[0][1], asks[0][1]]
                        behind += [size for _, size in bids[1:] + asks[1:]]
    n = len(spreads)
    return BookStats(samples=n, spread_ticks={k: round(spreads.count(k) / n, 3) for k in sorted(set(spreads))},
                     touch_quartiles=_quartiles(touch), behind_quartiles=_quartiles(behind),
                     maker_rows_per_match=round(rows[1] / rows[0], 2) if rows[0] else 0.0)


def report(s: Scenario, stats: BookStats) -> str:
    lines = [f"scenario {s.name!r}: {stats.samples} book samples, {s.background.taker_rate:g} takers/s",
             f"spread one tick: {stats.spread_ticks.get(1, 0.0):.0%} (recorded {RECORDED_ONE_TICK_SHARE:.0%}); "
             f"all: {stats.spread_ticks}",
             f"best level shares q1/median/q3: {stats.touch_quartiles} (recorded {RECORDED_TOUCH_QUARTILES})",
             f"levels 2-5 shares q1/median/q3: {stats.behind_quartiles} (recorded {RECORDED_BEHIND_QUARTILES})",
             f"maker fills per trade: {stats.maker_rows_per_match}",
             "re-quoted within t s: " + ", ".join(
                 f"{t:g}s {requote_cdf(s.background, t):.0%} (recorded {lo:.0%}-{hi:.0%})"
                 for t, (lo, hi) in RECORDED_RECOVERY.items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="polysim.calibrate")
    p.add_argument("--scenario", default=None, help="scenario file or preset (default: the defaults)")
    p.add_argument("--seconds", type=float, default=900.0, help="simulated seconds")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = p.parse_args(argv)
    try:
        s = scenarios.load(args.scenario)
    except scenarios.ScenarioError as exc:
        print(f"polysim.calibrate: {exc}")
        return 2
    stats = measure(s, args.seconds)
    print(json.dumps(asdict(stats)) if args.json else report(s, stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
