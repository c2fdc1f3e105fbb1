"""The simulated venue: rotating 15-minute Up/Down markets, one book per market (see book.py), wallets with
balances, locked funds and positions, the matching engine, fees, tick-size changes and market resolution.

Pure state: every method takes `now`; the hub carries the consequences (matches, book changes, order and market
lifecycle) to the feed surfaces, which apply their own delays. Times are wall-clock seconds; `speed` shortens a
window from 900 s to 900/speed s and slugs carry the real start time of the shortened window.
"""
from __future__ import annotations

import hashlib
import heapq
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from polysim.book import UNIT, Book, units
from polysim.events import (
    BOOK,
    MARKET_CREATED,
    MARKET_STATE,
    MATCH,
    ORDER,
    TICK_SIZE,
    WALLET_CREATED,
    BookUpdate,
    Hub,
    Match,
    OrderUpdate,
    SimMarket,
    WalletFill,
)
from polysim.oracle import Oracle
from polysim.scenario import Scenario
from polysim.truth import GroundTruth

NAMES = {"btc": "Bitcoin", "eth": "Ethereum", "sol": "Solana", "xrp": "XRP"}
EPS = 1e-9
TICK_SLACK = 0.011          # in ticks
KEEP_RESOLVED_WINDOWS = 20
_ET = ZoneInfo("America/New_York")

ERR_BALANCE = "not enough balance / allowance"
ERR_FAK = "no orders found to match with FAK order. FAK orders are partially filled or killed if no match is found."
ERR_FOK = "order couldn't be fully filled. FOK orders are fully filled or killed."
ERR_NOT_READY = "the market is not yet ready to process new orders"
ERR_POST_ONLY_CROSS = "invalid post-only order: order crosses book"
ERR_POST_ONLY_TYPE = "invalid post-only order: only GTC and GTD orders can be post-only"
ERR_EXPIRATION = "invalid expiration"


def fmt(x: float) -> str:
    """Decimal string the way the CLOB prints prices and sizes: no exponent, no trailing zeros."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def title(asset: str, start: float, end: float) -> str:
    a, b = datetime.fromtimestamp(start, _ET), datetime.fromtimestamp(end, _ET)
    hm = lambda d: d.strftime("%I:%M%p").lstrip("0")  # noqa: E731 - tiny formatter
    return f"{NAMES[asset]} Up or Down - {a.strftime('%B')} {a.day}, {hm(a)}-{hm(b)} ET"


class Reject(Exception):
    """The venue refuses an order; `message` is the exact error text the real CLOB sends."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(eq=False)
class Order:
    order_hash: str
    owner: str                   # API key, or "bg-maker" / "bg-taker" / "source"
    wallet: str                  # funder (maker) address, lowercase
    market: SimMarket
    token_id: str
    side: str                    # BUY | SELL
    price: float                 # in this token's terms
    size: float                  # shares
    order_type: str              # GTC | GTD | FOK | FAK
    created: float
    expiration: float = 0.0      # GTD: unix seconds (the venue expires it a minute early)
    post_only: bool = False
    api: bool = False            # placed through the CLOB REST with an API key
    matched: float = 0.0
    status: str = "LIVE"
    trade_ids: list[str] = field(default_factory=list)
    outcome_index: int = 0
    bid: bool = True             # a bid in Up terms (BUY Up or SELL Down)
    bu: int = 0                  # price in Up terms, micro-units

    def __post_init__(self):
        self.outcome_index = self.market.token_ids.index(self.token_id)
        buy = self.side == "BUY"
        self.bid = buy if self.outcome_index == 0 else not buy
        pu = units(self.price)
        self.bu = pu if self.outcome_index == 0 else UNIT - pu

    @property
    def remaining(self) -> float:
        return round(self.size - self.matched, 6)

    @property
    def outcome(self) -> str:
        return self.market.outcomes[self.outcome_index]


@dataclass
class Position:
    size: float = 0.0
    cost: float = 0.0            # cost basis of the shares held
    bought: float = 0.0
    realized: float = 0.0
    fees: float = 0.0            # taker fees paid on the buys (pUSD; not part of the cost basis)
    first_at: float = 0.0        # first fill, last fill (epoch s)
    last_at: float = 0.0


@dataclass(frozen=True)
class Moved:
    """What one fill changed in an accounted wallet (each field a difference), so a failed trade is undone exactly."""
    wallet: str
    token: str
    cash: float                  # pUSD balance
    size: float
    cost: float
    realized: float
    bought: float
    fees: float


@dataclass
class Settled:
    """What a redemption or merge did to one wallet's position in a market (kept to undo it on a reorg)."""
    burned: list[float] = field(default_factory=lambda: [0.0, 0.0])     # tokens per outcome
    costs: list[float] = field(default_factory=lambda: [0.0, 0.0])      # cost basis that left, per outcome
    realized: list[float] = field(default_factory=lambda: [0.0, 0.0])   # realized PnL added, per outcome
    payout: float = 0.0                                                 # pUSD paid to the wallet


@dataclass(eq=False)
class Wallet:
    address: str
    balance: float
    checked: bool                # balance and allowance enforced (API wallets)
    tracked: bool                # positions kept (API wallets, the source wallet)
    locked: float = 0.0          # pUSD held by resting BUY orders
    locked_shares: dict[str, float] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)

    def held(self, token: str) -> float:
        p = self.positions.get(token)
        return p.size if p else 0.0


class Exchange:
    def __init__(self, hub: Hub, scenario: Scenario, *, rng: random.Random, truth: GroundTruth):
        self.hub = hub
        self.cfg = scenario.markets
        self.window_s = scenario.window_s
        self.rng = rng
        self.truth = truth
        self.source_wallet = scenario.source.wallet.lower()
        self.api_balance = scenario.clob.balance
        self.trade_fail_rate = scenario.feeds.trade_fail_rate
        self.force_fail = 0                                  # the `trade_fail` fault
        self.oracle = Oracle(rng, self.cfg.assets, window_s=self.window_s,
                             sigma_per_window=self.cfg.sigma_per_window)
        self.markets: dict[str, SimMarket] = {}              # slug -> market
        self.by_token: dict[str, SimMarket] = {}
        self.by_condition: dict[str, SimMarket] = {}
        self.books: dict[str, Book] = {}                     # condition id -> book
        self.orders: dict[str, Order] = {}                   # API orders by hash (lookups, duplicates)
        self.wallets: dict[str, Wallet] = {}
        self.matches = 0
        self._expiries: list[tuple[float, str]] = []
        self._n = 0

    # ---- markets -----------------------------------------------------------------------------------------
    def window_start(self, now: float, k: int = 0) -> int:
        return int((now // self.window_s + k) * self.window_s)

    def tick(self, now: float) -> None:
        """Advance the market clock: oracle, listings, closes, resolutions, GTD expiries."""
        self.oracle.step(now)
        for k in range(self.cfg.listed_windows):
            start = self.window_start(now, k)
            for asset in self.cfg.assets:
                if f"{asset}-updown-15m-{start}" not in self.markets:
                    self._create(asset, start, now)
        for m in list(self.markets.values()):
            if m.state == "created" and now >= m.window_start:
                m.state = "trading"
                m.start_price = self.oracle.mark_start(m.asset_symbol, m.window_start)
                self.hub.publish(MARKET_STATE, m)
            if m.state == "trading" and now >= m.window_end:
                self._close(m, now)
            if m.state == "closed" and now >= m.window_end + self.window_s * self.cfg.resolve_after:
                self._resolve(m, now)
            if m.state == "resolved" and now >= m.window_end + self.window_s * KEEP_RESOLVED_WINDOWS \
                    and not self._held_by_api_wallet(m):
                self._forget(m)
        while self._expiries and self._expiries[0][0] <= now:
            _, h = heapq.heappop(self._expiries)
            o = self.orders.get(h)
            if o is not None and o.status == "LIVE":
                self.cancel(o, now)

    def _create(self, asset: str, start: int, now: float) -> None:
        self._n += 1
        seed = f"{asset}:{start}".encode()
        cid = "0x" + hashlib.sha256(seed + b"cid").hexdigest()
        tokens = [str(int.from_bytes(hashlib.sha256(seed + o).digest()[:30], "big")) for o in (b"up", b"down")]
        version = "v2" if self.cfg.v2_every and self._n % self.cfg.v2_every == 0 else "v1"
        slug = f"{asset}-updown-15m-{start}"
        m = SimMarket(condition_id=cid, question_id="0x" + hashlib.sha256(seed + b"q").hexdigest(), slug=slug,
                      event_slug=slug, event_id=str(400000 + self._n), market_id=str(1600000 + self._n),
                      title=title(asset, start, start + self.window_s), asset_symbol=asset,
                      window_start=float(start), window_end=float(start) + self.window_s, created_at=now,
                      token_ids=tokens, tick_size=self.cfg.tick_size, min_size=self.cfg.min_size,
                      neg_risk=self.cfg.neg_risk, version=version, fee_rate=self.cfg.fee_rate,
                      fee_exponent=self.cfg.fee_exponent, base_fee_bps=self.cfg.base_fee_bps,
                      taker_delay_ms=self.cfg.taker_delay_ms, seconds_delay=self.cfg.seconds_delay)
        self.markets[slug] = m
        self.by_condition[cid] = m
        for t in tokens:
            self.by_token[t] = m
        self.books[cid] = Book()
        self.hub.publish(MARKET_CREATED, m)

    def _close(self, m: SimMarket, now: float) -> None:
        m.state = "closed"
        if m.start_price is None:                    # closed before it ever traded (a forced resolution)
            m.start_price = self.oracle.mark_start(m.asset_symbol, m.window_start)
        m.end_price = self.oracle.twap(m.asset_symbol, min(now, m.window_end))
        book = self.books[m.condition_id]
        for o in list(book.bids.orders()) + list(book.asks.orders()):
            self.cancel(o, now, publish_book=False)
        self.publish_book(m, now)
        self.hub.publish(MARKET_STATE, m)
        self.truth.record("market", slug=m.slug, condition_id=m.condition_id, state="closed")

    def _resolve(self, m: SimMarket, now: float, winner: int | None = None) -> None:
        """The oracle reports the payout: Up wins when the settlement TWAP is at or above the price to beat (or
        `winner`, forced). Nobody is paid here: winning tokens are worth 1 pUSD each once redeemed on chain."""
        m.state = "resolved"
        m.resolved_at = now
        assert m.start_price is not None and m.end_price is not None
        m.winner = winner if winner is not None else 0 if m.end_price >= m.start_price else 1
        self.hub.publish(MARKET_STATE, m)
        self.truth.record("market", slug=m.slug, condition_id=m.condition_id, state="resolved",
                          winner=m.outcomes[m.winner], start_price=m.start_price, end_price=m.end_price,
                          forced=winner is not None)

    def resolve_now(self, m: SimMarket, now: float, winner: int | None = None) -> None:
        """Close (if still open) and resolve a market at once; `winner` forces the outcome index."""
        if m.state == "resolved":
            raise ValueError(f"{m.slug} is already resolved")
        if m.state in ("created", "trading"):
            self._close(m, now)
        self._resolve(m, now, winner)

    def _held_by_api_wallet(self, m: SimMarket) -> bool:
        """A resolved market stays known while an API wallet still holds its tokens: a redemption has no deadline.
        (Not the simulated source wallet: it holds tokens of nearly every market and never redeems.)"""
        return any(w.held(t) > EPS for w in self.wallets.values() if w.checked for t in m.token_ids)

    def _forget(self, m: SimMarket) -> None:
        del self.markets[m.slug]
        del self.by_condition[m.condition_id]
        del self.books[m.condition_id]
        for t in m.token_ids:
            del self.by_token[t]
        self.oracle.forget(m.asset_symbol, m.window_start)

    def market_for(self, asset: str, now: float, window: str = "current") -> SimMarket:
        return self.markets[f"{asset}-updown-15m-{self.window_start(now, 1 if window == 'next' else 0)}"]

    def accepting(self, m: SimMarket, now: float) -> bool:
        return m.state in ("created", "trading") and now < m.window_end

    # ---- wallets -----------------------------------------------------------------------------------------
    def wallet(self, address: str, *, api: bool = False) -> Wallet:
        a = address.lower()
        w = self.wallets.get(a)
        if w is None:
            if api:
                w = Wallet(a, self.api_balance, checked=True, tracked=True)
            else:                     # the source (tracked) and background traders: funds never run out
                w = Wallet(a, 1e12, checked=False, tracked=a == self.source_wallet)
            self.wallets[a] = w
            if api:
                self.hub.publish(WALLET_CREATED, w)
        elif api and not w.checked:
            w.checked = w.tracked = True
            w.balance = self.api_balance
            self.hub.publish(WALLET_CREATED, w)
        return w

    def fund(self, address: str, pusd: float) -> Wallet:
        """Add pUSD to a wallet we account for (created empty if new: it starts with what it is funded)."""
        a = address.lower()
        w = self.wallets.get(a)
        if w is None or not w.checked:
            w = self.wallets[a] = Wallet(a, 0.0, checked=True, tracked=True, positions=w.positions if w else {})
        w.balance = round(w.balance + pusd, 6)
        return w

    # ---- on-chain position actions (the collateral adapters' effects; the chain decides when they happen) ----
    def redeem(self, address: str, m: SimMarket) -> Settled:
        """Burn every token of a resolved market the wallet holds, pay 1 pUSD per winning token.
        Nothing held: nothing burned, nothing paid."""
        assert m.winner is not None
        out = Settled()
        w = self.wallets.get(address.lower())
        if w is None or not w.tracked:
            return out
        for i, t in enumerate(m.token_ids):
            p = w.positions.get(t)
            if p is None or p.size <= EPS:
                continue
            paid = p.size if i == m.winner else 0.0
            out.burned[i], out.costs[i], out.realized[i] = p.size, p.cost, round(paid - p.cost, 6)
            out.payout = round(out.payout + paid, 6)
            p.realized = round(p.realized + out.realized[i], 6)
            p.size, p.cost = 0.0, 0.0
        w.balance = round(w.balance + out.payout, 6)
        return out

    def merge(self, address: str, m: SimMarket, amount: float) -> Settled:
        """Burn `amount` of each outcome (one full set per unit) and pay 1 pUSD per set; the caller checked the
        holdings. Each side's cost basis leaves at its average and the pUSD is split between the sides in
        proportion to it (evenly when neither side cost anything)."""
        w = self.wallets[address.lower()]
        held = [w.positions[t] for t in m.token_ids]
        avgs = [p.cost / p.size if p.size > EPS else 0.0 for p in held]
        total = sum(avgs)
        out = Settled(payout=round(amount, 6))
        for i, (p, avg) in enumerate(zip(held, avgs, strict=True)):
            share = amount * (avg / total if total > 0 else 0.5)
            out.burned[i], out.costs[i] = amount, round(min(p.cost, amount * avg), 6)
            out.realized[i] = round(share - out.costs[i], 6)
            p.realized = round(p.realized + out.realized[i], 6)
            p.cost = round(p.cost - out.costs[i], 6)
            p.size = round(p.size - amount, 6)
        w.balance = round(w.balance + out.payout, 6)
        return out

    def undo(self, address: str, m: SimMarket, done: Settled) -> None:
        """Reverse a redemption or merge whose block was orphaned (its transaction goes back to the pool)."""
        w = self.wallets[address.lower()]
        for i, t in enumerate(m.token_ids):
            if done.burned[i] > EPS:
                p = w.positions.setdefault(t, Position())
                p.size = round(p.size + done.burned[i], 6)
                p.cost = round(p.cost + done.costs[i], 6)
                p.realized = round(p.realized - done.realized[i], 6)
        w.balance = round(w.balance - done.payout, 6)

    def fee(self, m: SimMarket, size: float, price: float) -> float:
        return size * m.fee_rate * (price * (1.0 - price)) ** m.fee_exponent

    # ---- order checks ------------------------------------------------------------------------------------
    def marketable(self, o: Order) -> bool:
        book = self.books.get(o.market.condition_id)
        if book is None:
            return False
        best = (book.asks if o.bid else book.bids).best()
        return best is not None and (best <= o.bu if o.bid else best >= o.bu)

    def validate(self, o: Order, now: float) -> None:
        """The venue's order checks, in the order it applies them. Raises Reject with the real text."""
        m = o.market
        if not self.accepting(m, now):
            raise Reject(ERR_NOT_READY)
        # Market orders priced from rounded amounts (SDK: shares = dollars / price, 4 dp) imply a price a hair off
        # the grid; anything a tenth of a tick or more off is a real tick violation. The range [tick, 1 - tick]
        # gets the same slack: the SDKs sign a BUY capped at 1 - tick as e.g. 0.990001 (the official SDK's notes
        # say the signed price may sit fractionally above the cap), and the venue accepts it.
        steps = o.price / m.tick_size
        slack = TICK_SLACK * m.tick_size
        if abs(steps - round(steps)) > TICK_SLACK or not m.tick_size - slack <= o.price <= 1 - m.tick_size + slack:
            raise Reject(f"order {o.order_hash} is invalid. Price ({fmt(o.price)}) breaks minimum tick size rule: "
                         f"{fmt(m.tick_size)}")
        marketable = self.marketable(o)
        if o.post_only:
            if o.order_type not in ("GTC", "GTD"):
                raise Reject(ERR_POST_ONLY_TYPE)
            if marketable:
                raise Reject(ERR_POST_ONLY_CROSS)
        if marketable and o.side == "BUY" and o.order_type in ("FOK", "FAK"):
            if o.size * o.price < self.cfg.min_marketable_buy_usd - EPS:
                raise Reject(f"invalid amount for a marketable BUY order (${fmt(round(o.size * o.price, 4))}), "
                             f"min size: ${fmt(self.cfg.min_marketable_buy_usd)}")
        elif o.size < m.min_size - EPS:
            raise Reject(f"order {o.order_hash} is invalid. Size ({fmt(o.size)}) lower than the minimum: "
                         f"{fmt(m.min_size)}")
        if o.order_type == "GTD" and o.expiration <= now + 60:
            raise Reject(ERR_EXPIRATION)
        w = self.wallet(o.wallet)
        if w.checked:
            if o.side == "BUY":
                need = o.size * o.price + (self.fee(m, o.size, o.price) if marketable else 0.0)
                if w.balance - w.locked < need - 1e-6:
                    raise Reject(ERR_BALANCE)
            elif w.held(o.token_id) - w.locked_shares.get(o.token_id, 0.0) < o.size - 1e-6:
                raise Reject(ERR_BALANCE)

    def available(self, o: Order) -> float:
        """Shares another wallet offers within o's limit price (what a FOK could fill)."""
        book = self.books[o.market.condition_id]
        opp = book.asks if o.bid else book.bids
        total = 0.0
        for price in opp.best_first():
            if (price > o.bu) if o.bid else (price < o.bu):
                break
            total += sum(mk.remaining for mk in opp.levels[price] if mk.wallet != o.wallet)
            if total >= o.size - EPS:
                break
        return total

    # ---- execution ---------------------------------------------------------------------------------------
    def execute(self, o: Order, now: float) -> Match | None:
        """Match o against the book, rest the remainder of a GTC/GTD; FOK/FAK that cannot fill raise Reject.

        An API order is on record (duplicates, lookups) from here on, whatever the outcome.
        """
        m = o.market
        if o.api:
            self.orders[o.order_hash] = o
        if not self.accepting(m, now):
            o.status = "CANCELED"
            raise Reject(ERR_NOT_READY)
        if o.order_type == "FOK" and self.available(o) < o.size - EPS:
            o.status = "CANCELED"
            raise Reject(ERR_FOK)
        book = self.books[m.condition_id]
        fills = self._match(o, book)
        match = self._settle(o, fills, now) if fills else None
        if o.remaining > EPS and o.order_type in ("GTC", "GTD"):
            o.status = "LIVE"
            self._snap(o)
            book.side(o.bid).add(o)
            book.touch(o.bid, o.bu)
            self._lock(o)
            if o.order_type == "GTD" and o.api:
                heapq.heappush(self._expiries, (o.expiration - 60, o.order_hash))
            if o.api:
                self._order_event(o, "PLACEMENT", now)
        else:
            o.status = "MATCHED" if o.matched > EPS else "CANCELED"
        self.publish_book(m, now)
        self._tick_size_rule(m, book)
        if match is None and o.order_type == "FAK":
            raise Reject(ERR_FAK)
        return match

    @staticmethod
    def _snap(o: Order) -> None:
        """A resting order sits on the tick grid (a price a hair off rounds to the less aggressive tick)."""
        tick = units(o.market.tick_size)
        if o.bu % tick:
            o.bu = (o.bu // tick) * tick if o.bid else (o.bu // tick + 1) * tick
            o.price = round((o.bu if o.outcome_index == 0 else UNIT - o.bu) / UNIT, 6)

    def _match(self, o: Order, book: Book) -> list[tuple[Order, float]]:
        opp = book.asks if o.bid else book.bids
        fills: list[tuple[Order, float]] = []
        for price in opp.best_first():
            if (price > o.bu) if o.bid else (price < o.bu):
                break
            for mk in list(opp.levels[price]):
                if mk.wallet == o.wallet:
                    continue                            # no self-trade: the own order keeps its place
                qty = round(min(mk.remaining, o.remaining), 6)
                mk.matched = round(mk.matched + qty, 6)
                o.matched = round(o.matched + qty, 6)
                opp.reduce(price, qty)
                book.touch(mk.bid, price)
                if mk.remaining <= EPS:
                    opp.pop_filled(price, mk)
                    mk.status = "MATCHED"
                fills.append((mk, qty))
                if o.remaining <= EPS:
                    return fills
        return fills

    def _settle(self, taker: Order, fills: list[tuple[Order, float]], now: float) -> Match:
        m = taker.market
        self.matches += 1
        tx = "0x" + hashlib.sha256(f"tx:{self.matches}:{taker.order_hash}".encode()).hexdigest()
        trade_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        makers, qty_t, cost_t, fee_t = [], 0.0, 0.0, 0.0
        cash: list[tuple[WalletFill, float, float, Moved]] = []   # (fill, notional, fee, moved): accounted wallets
        for mk, qty in fills:
            mk.trade_ids.append(trade_id)
            makers.append(WalletFill(wallet=mk.wallet, role="maker", order_hash=mk.order_hash, side=mk.side,
                                     token_id=mk.token_id, outcome=mk.outcome, outcome_index=mk.outcome_index,
                                     price=mk.price, size=qty, owner=mk.owner))
            moved = self._move(mk.wallet, mk.token_id, mk.side, qty, qty * mk.price, 0.0, now, resting=mk)
            if moved is not None:
                cash.append((makers[-1], qty * mk.price, 0.0, moved))
            p = mk.price if mk.token_id == taker.token_id else round(1.0 - mk.price, 6)
            qty_t += qty
            cost_t += qty * p
            fee_t += self.fee(m, qty, p)
            if mk.api:
                self._order_event(mk, "UPDATE", now)
        fee_t = round(fee_t, 5)
        taker_moved = self._move(taker.wallet, taker.token_id, taker.side, qty_t, cost_t, fee_t, now)
        taker.trade_ids.append(trade_id)
        avg = round(cost_t / qty_t, 6)
        book = self.books[m.condition_id]
        book.last_trade_price[taker.outcome_index] = avg
        book.last_trade_price[1 - taker.outcome_index] = round(1.0 - avg, 6)
        tfill = WalletFill(wallet=taker.wallet, role="taker", order_hash=taker.order_hash, side=taker.side,
                           token_id=taker.token_id, outcome=taker.outcome, outcome_index=taker.outcome_index,
                           price=avg, size=round(qty_t, 6), fee=fee_t, owner=taker.owner)
        if taker_moved is not None:
            cash.append((tfill, cost_t, fee_t, taker_moved))
        api_owned = taker.api or any(mk.api for mk, _ in fills)
        will_fail = False
        if api_owned and self.force_fail > 0:
            self.force_fail -= 1
            will_fail = True
        elif api_owned and self.trade_fail_rate:
            will_fail = self.rng.random() < self.trade_fail_rate
        match = Match(tx_hash=tx, match_time=now, market=m, taker=tfill, makers=makers, trade_id=trade_id,
                      will_fail=will_fail, moves=[mv for *_, mv in cash])
        self._record_fills(match, cash)
        for f in match.fills():
            if f.wallet == self.source_wallet:
                self.truth.record("source_fill", tx_hash=tx, token_id=f.token_id, side=f.side, price=round(f.price, 6),
                                  size=round(f.size, 6), role=f.role, condition_id=m.condition_id, match_time=now,
                                  slug=m.slug, outcome=f.outcome, order_hash=f.order_hash, window_end=m.window_end)
        self.hub.publish(MATCH, match)
        return match

    def _record_fills(self, match: Match, cash: list[tuple[WalletFill, float, float, Moved]]) -> None:
        """Ground truth of every fill of a wallet we check (API wallets): `cash` is exactly what its pUSD balance
        moved (BUY: -(notional + fee), SELL: notional - fee). A trade that later fails is reverted (kind `trade`)."""
        m = match.market
        for f, notional, fee, moved in cash:
            w = self.wallets[f.wallet]
            if not w.checked:
                continue
            delta = moved.cash
            self.truth.record("fill", trade_id=match.trade_id, tx_hash=match.tx_hash, wallet=f.wallet, role=f.role,
                              side=f.side, token_id=f.token_id, condition_id=m.condition_id, slug=m.slug,
                              outcome=f.outcome, price=round(f.price, 6), size=round(f.size, 6),
                              notional=round(notional, 6), fee=round(fee, 6), cash=round(delta, 6),
                              order_hash=f.order_hash, match_time=match.match_time, will_fail=match.will_fail)

    def _move(self, address: str, token: str, side: str, qty: float, notional: float, fee: float, now: float,
              resting: Order | None = None) -> Moved | None:
        """Cash and shares for one fill -> exactly what changed (None for background wallets: not accounted)."""
        w = self.wallets.get(address)
        if w is None or not w.tracked:
            return None
        pos = w.positions.setdefault(token, Position())
        pos.first_at = pos.first_at or now
        pos.last_at = now
        before = (w.balance, pos.size, pos.cost, pos.realized, pos.bought, pos.fees)
        if side == "BUY":
            w.balance = round(w.balance - notional - fee, 6)
            pos.size = round(pos.size + qty, 6)
            pos.cost = round(pos.cost + notional, 6)
            pos.bought = round(pos.bought + qty, 6)
            pos.fees = round(pos.fees + fee, 6)
        else:
            avg = pos.cost / pos.size if pos.size > EPS else 0.0
            w.balance = round(w.balance + notional - fee, 6)
            pos.realized = round(pos.realized + notional - qty * avg, 6)
            pos.cost = round(max(0.0, pos.cost - qty * avg), 6)
            pos.size = round(pos.size - qty, 6)
        after = (w.balance, pos.size, pos.cost, pos.realized, pos.bought, pos.fees)
        moved = Moved(address, token, *(round(a - b, 6) for a, b in zip(after, before, strict=True)))
        if resting is not None and resting.api:
            if resting.side == "BUY":
                w.locked = round(w.locked - qty * resting.price, 6)
            else:
                w.locked_shares[token] = round(w.locked_shares.get(token, 0.0) - qty, 6)
        return moved

    def revert(self, match: Match) -> None:
        """A settlement transaction failed: cash and shares go back exactly as they moved (the trade goes FAILED)."""
        for mv in match.moves:
            w = self.wallets[mv.wallet]
            pos = w.positions[mv.token]
            w.balance = round(w.balance - mv.cash, 6)
            pos.size = round(pos.size - mv.size, 6)
            pos.cost = round(pos.cost - mv.cost, 6)
            pos.realized = round(pos.realized - mv.realized, 6)
            pos.bought = round(pos.bought - mv.bought, 6)
            pos.fees = round(pos.fees - mv.fees, 6)

    def _lock(self, o: Order) -> None:
        if not o.api:
            return
        w = self.wallet(o.wallet)
        if o.side == "BUY":
            w.locked = round(w.locked + o.remaining * o.price, 6)
        else:
            w.locked_shares[o.token_id] = round(w.locked_shares.get(o.token_id, 0.0) + o.remaining, 6)

    def cancel(self, o: Order, now: float, *, publish_book: bool = True) -> bool:
        if o.status != "LIVE":
            return False
        book = self.books.get(o.market.condition_id)
        if book is not None:
            book.side(o.bid).remove(o)
            book.touch(o.bid, o.bu)
        if o.api:
            w = self.wallet(o.wallet)
            if o.side == "BUY":
                w.locked = round(w.locked - o.remaining * o.price, 6)
            else:
                w.locked_shares[o.token_id] = round(w.locked_shares.get(o.token_id, 0.0) - o.remaining, 6)
        o.status = "CANCELED"
        if o.api:
            self._order_event(o, "CANCELLATION", now)
        if publish_book and book is not None:
            self.publish_book(o.market, now)
        return True

    # ---- publishing --------------------------------------------------------------------------------------
    def publish_book(self, m: SimMarket, now: float) -> None:
        """One BOOK update with every level touched since the last one (the market websocket's price_change)."""
        book = self.books.get(m.condition_id)
        if book is None:
            return
        changes = book.flush_changes()
        if not changes:
            return
        up, down = m.token_ids
        entries = []
        for is_bid, p, size in changes:
            entries.append({"asset_id": up, "price": fmt(p / UNIT), "size": fmt(size),
                            "side": "BUY" if is_bid else "SELL"})
            entries.append({"asset_id": down, "price": fmt((UNIT - p) / UNIT), "size": fmt(size),
                            "side": "SELL" if is_bid else "BUY"})
        self.hub.publish(BOOK, BookUpdate(market=m, token_id=up,
                                          bids=[(p / UNIT, s) for p, s in book.bids.top(5)],
                                          asks=[(p / UNIT, s) for p, s in book.asks.top(5)],
                                          changes=entries, ts=now))

    def _tick_size_rule(self, m: SimMarket, book: Book) -> None:
        """The CLOB refines the tick from 0.01 to 0.001 once a price leaves [0.04, 0.96]."""
        if not self.cfg.tick_size_switch or m.tick_size <= 0.001 + EPS:
            return
        b, a = book.bids.best(), book.asks.best()
        if (b is not None and b > units(0.96)) or (a is not None and a < units(0.04)):
            self.set_tick_size(m, 0.001)

    def set_tick_size(self, m: SimMarket, new: float) -> None:
        old, m.tick_size = m.tick_size, new
        for t in m.token_ids:
            self.hub.publish(TICK_SIZE, (m, t, old, new))

    def _order_event(self, o: Order, kind: str, now: float) -> None:
        self.hub.publish(ORDER, OrderUpdate(owner=o.owner, order=self.order_json(o), kind=kind, ts=now))

    # ---- views -------------------------------------------------------------------------------------------
    @staticmethod
    def order_json(o: Order) -> dict:
        """GET /data/order/{hash} (the SDK's OpenOrder shape)."""
        return {"id": o.order_hash, "status": o.status, "owner": o.owner, "maker_address": o.wallet,
                "market": o.market.condition_id, "asset_id": o.token_id, "side": o.side,
                "original_size": fmt(o.size), "size_matched": fmt(o.matched), "price": fmt(o.price),
                "outcome": o.outcome, "order_type": o.order_type, "created_at": int(o.created),
                "expiration": str(int(o.expiration)), "associate_trades": list(o.trade_ids)}
