"""The market's other participants: background makers and takers, and the source wallet we copy.

Background makers keep a ladder of `maker_levels` levels on both sides of every listed market around their fair
price (fixed per market, or following the oracle with the `walk` model, shifted by informed flow), posting as either
outcome so many fills are mints/merges as on the real venue; a level a taker empties comes back only after a
re-quote delay (rules in makers.py). Background takers send FAK orders at `taker_rate` per second: the RTDS firehose.
The source wallet trades like the PRD describes (bursts of small BUYs on 15-minute crypto markets, sometimes both
outcomes, sometimes sells, some near expiry, as taker and as maker), scripted or seeded-random.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from polysim.book import UNIT, units
from polysim.events import Hub, Match, SimMarket, WalletFill
from polysim.exchange import EPS, Exchange, Order, Reject
from polysim.makers import NOT_AGAIN, Desk, Seen, ladder, order_size, plan, requote_delay
from polysim.scenario import Background, Source, Step
from polysim.views import owner_id

# A reaction timer fires on the loop's monotonic clock, the deadline is on the wall clock: a few ms of slack keep
# a timer that fires a hair early from missing its own deadline.
TIMER_SLACK_S = 0.005


def _id(rng: random.Random) -> str:
    return f"0x{rng.getrandbits(256):064x}"


def _up_terms(f: WalletFill) -> tuple[bool, int]:
    """(a bid, price in micro-units) of a fill in Up terms: BUY Up at p is a bid at p, BUY Down at p an ask at 1 - p."""
    up = f.outcome_index == 0
    return (f.side == "BUY") == up, (units(f.price) if up else UNIT - units(f.price))


class BackgroundTraders:
    def __init__(self, ex: Exchange, cfg: Background, *, price_model: str, rng: random.Random,
                 now: Callable[[], float], later: Callable[[float, Callable[[], None]], None] = Hub.later):
        self.ex = ex
        self.cfg = cfg
        self.price_model = price_model
        self.rng = rng
        self.now = now
        self.later = later
        self.wallets = [f"0x{rng.getrandbits(160):040x}" for _ in range(max(1, cfg.wallets))]
        self._pool = set(self.wallets)
        self._desks: dict[str, Desk] = {}

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
    def _desk(self, m: SimMarket) -> Desk:
        desk = self._desks.get(m.condition_id)
        if desk is None:
            desk = self._desks[m.condition_id] = Desk(base=self.rng.uniform(0.35, 0.65))
        return desk

    def _base(self, m: SimMarket, desk: Desk, now: float) -> float:
        """The price model's fair price of Up, before informed flow."""
        if self.price_model == "walk" and m.state == "trading":
            return self.ex.oracle.fair_up(m.asset_symbol, m.window_start, now)
        return desk.base

    def quote(self, now: float) -> None:
        if len(self._desks) > 4 * len(self.ex.markets):          # forget the desks of forgotten windows
            self._desks = {c: d for c, d in self._desks.items() if c in self.ex.by_condition}
        for m in list(self.ex.markets.values()):
            if self.ex.accepting(m, now):
                self._quote(m, now)

    def _quote(self, m: SimMarket, now: float) -> None:
        desk = self._desk(m)
        base = self._base(m, desk, now)
        desk.catch_up(now, base)
        fair = min(1 - m.tick_size, max(m.tick_size, base + desk.impact))
        bids, asks = ladder(fair, units(m.tick_size), self.cfg.maker_levels)
        desk.resting = {slot: o for slot, o in desk.resting.items() if o.status == "LIVE"}
        cancel, post, forget = plan(bids, asks, self.cfg.makers_per_level, set(desk.resting), desk.refill_at, now)
        for slot in forget:
            del desk.refill_at[slot]
        for slot in cancel:
            self.ex.cancel(desk.resting.pop(slot), now, publish_book=False)
        for slot, depth in post:
            bid, price, _ = slot
            o = self.order(m, bid, price, order_size(self.rng, depth, self.cfg), "GTC", now)
            try:
                self.ex.execute(o, now)
            except Reject:
                continue
            if o.status == "LIVE":
                desk.resting[slot] = o
        self.ex.publish_book(m, now)

    def on_match(self, match: Match) -> None:
        """How the makers take a trade. A maker an uninformed taker took posts again after its re-quote delay. One
        an informed taker (not one of ours) took does not offer that price again; the desk sees the informed trade
        after a re-quote delay and from then on quotes around a fair price moved in its direction."""
        m = match.market
        desk = self._desks.get(m.condition_id)
        if desk is None:
            return
        taker = match.taker
        informed = self.cfg.informed_flow and taker.wallet not in self._pool
        for f in match.makers:
            if f.wallet not in self._pool:
                continue
            if informed:
                desk.taken(f.order_hash, NOT_AGAIN)
            else:
                delay = requote_delay(self.rng, self.cfg)
                desk.taken(f.order_hash, match.match_time + delay)
                self._react(m, delay)
        if informed:
            delay = requote_delay(self.rng, self.cfg)
            buy = _up_terms(taker)[0]
            shift = self.cfg.impact_per_share * taker.size * (1.0 if buy else -1.0)
            desk.unseen.append(Seen(match.match_time + delay, shift, buy, self._emptied(match, buy)))
            self._react(m, delay)

    def _emptied(self, match: Match, buy: bool) -> float | None:
        """The deepest price (Up terms) the trade left without any order, if any."""
        side = self.ex.books[match.market.condition_id].side(not buy)
        gone = [p for _, p in map(_up_terms, match.makers) if p not in side.levels]
        if not gone:
            return None
        return (max(gone) if buy else min(gone)) / UNIT

    def _react(self, m: SimMarket, delay: float) -> None:
        self.later(delay + TIMER_SLACK_S, lambda: self._requote(m))

    def _requote(self, m: SimMarket) -> None:
        now = self.now()
        if self.ex.accepting(m, now) and m.condition_id in self._desks:
            self._quote(m, now)

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
        self.paused = False                 # POST /_sim/source: the random source starts no burst while set

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
            if self.paused:
                continue
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
            if self.paused or not self.ex.accepting(m, self.now()):
                return
            self._safe_fill(outcome=outcome, side="SELL" if sell else "BUY", size=size, role=role, market=m)
            await asyncio.sleep(self.rng.uniform(*c.burst_gap_ms) / 1000)
