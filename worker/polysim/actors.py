"""The market's other participants: background makers and takers, and the source wallet we copy.

Background makers keep `maker_levels` levels on both sides of every listed market around a fair price (fixed per
market, or following the oracle with the `walk` model), posting as either outcome so many fills are mints/merges
as on the real venue. Background takers send FAK orders at `taker_rate` per second: the RTDS firehose.
The source wallet trades like the PRD describes (bursts of small BUYs on 15-minute crypto markets, sometimes both
outcomes, sometimes sells, some near expiry, as taker and as maker), scripted or seeded-random.
"""
from __future__ import annotations

import asyncio
import random
from typing import Callable

from polysim.book import UNIT, units
from polysim.events import Match, SimMarket
from polysim.exchange import EPS, Exchange, Order, Reject
from polysim.scenario import Background, Source, Step
from polysim.views import owner_id


def _id(rng: random.Random) -> str:
    return f"0x{rng.getrandbits(256):064x}"


class BackgroundTraders:
    def __init__(self, ex: Exchange, cfg: Background, *, price_model: str, rng: random.Random,
                 now: Callable[[], float]):
        self.ex = ex
        self.cfg = cfg
        self.price_model = price_model
        self.rng = rng
        self.now = now
        self.wallets = [f"0x{rng.getrandbits(160):040x}" for _ in range(max(1, cfg.wallets))]
        self._pool = set(self.wallets)
        self._fair: dict[str, float] = {}

    def is_background(self, o: Order) -> bool:
        return not o.api and o.wallet in self._pool

    def order(self, m: SimMarket, bid: bool, bu: int, size: float, order_type: str, now: float,
              wallet: str | None = None, outcome_index: int | None = None) -> Order:
        """A background order at an Up-terms price, posted as either outcome (a bid on Up = an ask on Down)."""
        idx = self.rng.randint(0, 1) if outcome_index is None else outcome_index
        side = ("BUY" if bid else "SELL") if idx == 0 else ("SELL" if bid else "BUY")
        price = bu / UNIT if idx == 0 else (UNIT - bu) / UNIT
        w = wallet or self.rng.choice(self.wallets)
        self.ex.wallet(w)
        return Order(_id(self.rng), owner_id(w), w, m, m.token_ids[idx], side, round(price, 6), size, order_type, now)

    # ---- makers ------------------------------------------------------------------------------------------
    def fair_up(self, m: SimMarket, now: float) -> int:
        tick = m.tick_size
        if self.price_model == "walk" and m.state == "trading":
            f = self.ex.oracle.fair_up(m.asset_symbol, m.window_start, now)
        else:
            f = self._fair.setdefault(m.condition_id, self.rng.uniform(0.35, 0.65))
        f = min(1 - tick, max(tick, round(f / tick) * tick))
        return units(f)

    def quote(self, now: float) -> None:
        if len(self._fair) > 4 * len(self.ex.markets):          # forget the fair prices of forgotten windows
            self._fair = {c: f for c, f in self._fair.items() if c in self.ex.by_condition}
        for m in list(self.ex.markets.values()):
            if self.ex.accepting(m, now):
                self._quote(m, now)

    def _quote(self, m: SimMarket, now: float) -> None:
        book = self.ex.books[m.condition_id]
        fair, tick, n = self.fair_up(m, now), units(m.tick_size), self.cfg.maker_levels
        want_bids = {fair - k * tick for k in range(1, n + 1) if 0 < fair - k * tick < UNIT}
        want_asks = {fair + k * tick for k in range(n) if 0 < fair + k * tick < UNIT}
        for side, want in ((book.bids, want_bids), (book.asks, want_asks)):
            for price in [p for p in side.prices if p not in want]:
                for o in [o for o in side.levels[price] if self.is_background(o)]:
                    self.ex.cancel(o, now, publish_book=False)
        for bid, want, side in ((True, want_bids, book.bids), (False, want_asks, book.asks)):
            for price in sorted(want):
                if price not in side.levels:
                    size = float(round(self.rng.uniform(*self.cfg.maker_size)))
                    try:
                        self.ex.execute(self.order(m, bid, price, size, "GTC", now), now)
                    except Reject:
                        pass
        self.ex.publish_book(m, now)

    # ---- takers ------------------------------------------------------------------------------------------
    def take_one(self, now: float, m: SimMarket | None = None) -> Match | None:
        trading = [m] if m else [m for m in self.ex.markets.values() if m.state == "trading"
                                 and self.ex.accepting(m, now)]
        if not trading:
            return None
        m = self.rng.choice(trading)
        book = self.ex.books[m.condition_id]
        bid = self.rng.random() < 0.5
        best = (book.asks if bid else book.bids).best()
        if best is None:
            return None
        reach = self.rng.randint(0, 2) * units(m.tick_size)
        cap = min(UNIT - units(m.tick_size), best + reach) if bid else max(units(m.tick_size), best - reach)
        size = round(self.rng.uniform(*self.cfg.taker_size), 2)
        try:
            return self.ex.execute(self.order(m, bid, cap, size, "FAK", now), now)
        except Reject:
            return None

    def hit(self, target: Order, now: float) -> Match | None:
        """A background taker that trades through everything ahead of `target` and fills it completely."""
        book = self.ex.books[target.market.condition_id]
        side = book.side(target.bid)
        ahead = sum(side.sizes[p] for p in side.prices if (p > target.bu if target.bid else p < target.bu))
        for o in side.levels.get(target.bu, ()):
            if o is target:
                break
            ahead += o.remaining
        try:
            return self.ex.execute(self.order(target.market, not target.bid, target.bu, round(ahead + target.remaining,
                                                                                              6), "FAK", now), now)
        except Reject:
            return None


class SourceTrader:
    def __init__(self, ex: Exchange, bg: BackgroundTraders, cfg: Source, *, rng: random.Random,
                 now: Callable[[], float], window_s: float):
        self.ex = ex
        self.bg = bg
        self.cfg = cfg
        self.rng = rng
        self.now = now
        self.window_s = window_s
        self.wallet = cfg.wallet.lower()
        self.fills = 0

    def fill(self, *, asset: str = "btc", outcome: str = "Up", side: str = "BUY", size: float = 10.0,
             price: float | None = None, role: str = "taker", window: str = "current",
             market: SimMarket | None = None) -> tuple[SimMarket, str, Match | None]:
        """One source-wallet fill now, as taker (a FAK through the book) or as maker (a resting order that a
        background taker then fills). Returns (market, token, the match with the source's fill or None)."""
        now = self.now()
        m = market or self.ex.market_for(asset, now, window)
        token = m.token_ids[m.outcomes.index(outcome)]
        idx = m.token_ids.index(token)
        self.ex.wallet(self.wallet)
        book = self.ex.books[m.condition_id]
        bid_best, ask_best = book.best(idx)
        tick = units(m.tick_size)
        if role == "maker":
            if price is None:
                if side == "BUY":
                    p = bid_best + tick if bid_best is not None and ask_best is not None and \
                        bid_best + tick < ask_best else (bid_best or units(0.5) - tick)
                else:
                    p = ask_best - tick if bid_best is not None and ask_best is not None and \
                        ask_best - tick > bid_best else (ask_best or units(0.5) + tick)
                price = p / UNIT
            o = Order(_id(self.rng), owner_id(self.wallet), self.wallet, m, token, side, round(price, 6), size, "GTC",
                      now)
            try:
                first = self.ex.execute(o, now)
            except Reject:
                return m, token, None
            match = first if o.remaining <= EPS else self.bg.hit(o, now)
        else:
            if price is None:
                price = (1 - m.tick_size) if side == "BUY" else m.tick_size
            o = Order(_id(self.rng), owner_id(self.wallet), self.wallet, m, token, side, round(price, 6), size, "FAK",
                      now)
            try:
                match = self.ex.execute(o, now)
            except Reject:
                match = None
        if match is not None:
            self.fills += 1
        return m, token, match

    async def run(self) -> None:
        if self.cfg.mode == "random":
            await self._random()
        elif self.cfg.mode == "script":
            await self._script(self.cfg.script)

    async def _script(self, steps: tuple[Step, ...]) -> None:
        started = self.now()
        due = sorted((started + s.at, i) for i, s in enumerate(steps))
        while due:
            at, i = due.pop(0)
            await asyncio.sleep(max(0.0, at - self.now()))
            s = steps[i]
            self._safe_fill(asset=s.asset, outcome=s.outcome, side=s.side, size=s.size, price=s.price, role=s.role,
                            window=s.window)
            if s.every:
                due.append((at + s.every, i))
                due.sort()

    def _safe_fill(self, **kw) -> None:
        try:
            self.fill(**kw)
        except (KeyError, ValueError):
            pass                                   # the window rotated away between choice and fill

    async def _random(self) -> None:
        rate = self.cfg.bursts_per_window / self.window_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.rng.expovariate(rate))
            now = self.now()
            start = self.ex.window_start(now)
            left = start + self.window_s - now
            if self.rng.random() < self.cfg.near_expiry_p and left > 0.1 * self.window_s:
                delay = left - self.rng.uniform(0.02, 0.1) * self.window_s     # the last 10% of this window
            else:
                delay = 0.0
            loop.call_later(delay, lambda: loop.create_task(self._burst()))

    async def _burst(self) -> None:
        c = self.cfg
        asset = self.rng.choice(self.ex.cfg.assets)
        try:
            m = self.ex.market_for(asset, self.now())
        except KeyError:
            return
        both = self.rng.random() < c.both_outcomes_p
        first = self.rng.choice(m.outcomes)
        for k in range(self.rng.randint(*c.burst_fills)):
            outcome = m.outcomes[(m.outcomes.index(first) + k) % 2] if both else first
            token = m.token_ids[m.outcomes.index(outcome)]
            size = round(self.rng.uniform(*c.size), 2)
            w = self.ex.wallets.get(self.wallet)
            sell = self.rng.random() < c.sell_p and w is not None and w.held(token) >= size
            role = "maker" if self.rng.random() < c.maker_p else "taker"
            if not self.ex.accepting(m, self.now()):
                return
            self._safe_fill(outcome=outcome, side="SELL" if sell else "BUY", size=size, role=role, market=m)
            await asyncio.sleep(self.rng.uniform(*c.burst_gap_ms) / 1000)
