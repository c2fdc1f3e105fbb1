"""The simulated venue: rotating 15-minute Up/Down markets, a price-time-priority book per token, balances,
orders and trades, and the ground-truth log every verdict is checked against.

Times are real wall-clock seconds; `speed` shortens a window from 900 s to 900/speed s (slugs keep the real
window-start unix time of the shortened window).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from dataclasses import dataclass, field

from polysim.events import MATCH, Hub, Match, SimMarket, WalletFill

ASSETS = ("btc", "eth")
NAMES = {"btc": "Bitcoin", "eth": "Ethereum"}


@dataclass
class Order:
    order_hash: str
    owner: str                   # API key, or a background trader id
    wallet: str                  # funder (maker) address, lowercase
    market: SimMarket
    token_id: str
    side: str                    # BUY | SELL
    price: float
    size: float
    order_type: str
    created: float
    matched: float = 0.0
    status: str = "LIVE"
    trade_ids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return round(self.size - self.matched, 6)


class Book:
    def __init__(self):
        self.bids: list[Order] = []      # best (highest price, then oldest) first
        self.asks: list[Order] = []      # best (lowest price, then oldest) first

    def rest(self, o: Order) -> None:
        side = self.bids if o.side == "BUY" else self.asks
        key = (lambda x: (-x.price, x.created)) if o.side == "BUY" else (lambda x: (x.price, x.created))
        side.append(o)
        side.sort(key=key)

    def levels(self, side: str, depth: int = 20) -> list[tuple[float, float]]:
        agg: dict[float, float] = {}
        for o in (self.bids if side == "BUY" else self.asks):
            agg[o.price] = agg.get(o.price, 0.0) + o.remaining
        items = sorted(agg.items(), key=lambda kv: -kv[0] if side == "BUY" else kv[0])
        return [(p, round(s, 2)) for p, s in items[:depth]]


class Exchange:
    def __init__(self, hub: Hub, *, speed: float, seed: int, source_wallet: str, ground_truth: str | None,
                 v2_every: int = 0, neg_risk: bool = False):
        self.hub = hub
        self.window_s = 900.0 / speed
        self.rng = random.Random(seed)
        self.source_wallet = source_wallet.lower()
        self.v2_every = v2_every
        self.neg_risk = neg_risk
        self.markets: dict[str, SimMarket] = {}          # slug -> market
        self.by_token: dict[str, SimMarket] = {}
        self.by_condition: dict[str, SimMarket] = {}
        self.books: dict[str, Book] = {}
        self.orders: dict[str, Order] = {}
        self.balances: dict[str, float] = {}             # wallet -> pUSD
        self.positions: dict[tuple[str, str], float] = {}
        self.trades: list[dict] = []                     # every wallet fill, for the Data API
        self.matches = 0
        self._ids = itertools.count(1)
        self._gt = open(ground_truth, "a", buffering=1) if ground_truth else None
        self.default_balance = 10_000.0

    # ---- ground truth ------------------------------------------------------------------------------------
    def record(self, kind: str, **data) -> None:
        if self._gt is not None:
            self._gt.write(json.dumps({"kind": kind, "ts": round(time.time(), 3), **data}) + "\n")

    # ---- markets -----------------------------------------------------------------------------------------
    def window_start(self, now: float, k: int = 0) -> int:
        return int((now // self.window_s + k) * self.window_s)

    def rotate(self, now: float) -> None:
        """Keep the current and next two windows listed; close and resolve the ended ones."""
        for k in range(3):
            start = self.window_start(now, k)
            for asset in ASSETS:
                slug = f"{asset}-updown-15m-{start}"
                if slug not in self.markets:
                    self._create(asset, start, now)
        for m in self.markets.values():
            if m.state == "created" and now >= m.window_start:
                m.state = "trading"
            if m.state == "trading" and now >= m.window_end:
                m.state = "closed"
                self._cancel_market(m)
            if m.state == "closed" and now >= m.window_end + self.window_s / 10:
                m.state = "resolved"
                m.winner = self.rng.randint(0, 1)

    def _create(self, asset: str, start: int, now: float) -> None:
        n = next(self._ids)
        seed = f"{asset}:{start}".encode()
        cid = "0x" + hashlib.sha256(seed + b"cid").hexdigest()
        tokens = [str(int.from_bytes(hashlib.sha256(seed + o).digest()[:30], "big")) for o in (b"up", b"down")]
        version = "v2" if self.v2_every and n % self.v2_every == 0 else "v1"
        m = SimMarket(condition_id=cid, question_id="0x" + hashlib.sha256(seed + b"q").hexdigest(),
                      slug=f"{asset}-updown-15m-{start}", event_slug=f"{asset}-updown-15m-{start}",
                      event_id=str(400000 + n), market_id=str(1600000 + n),
                      title=f"{NAMES[asset]} Up or Down - window {start}", asset_symbol=asset,
                      window_start=float(start), window_end=float(start) + self.window_s, created_at=now,
                      token_ids=tokens, neg_risk=self.neg_risk, version=version)
        self.markets[m.slug] = m
        self.by_condition[cid] = m
        for t in tokens:
            self.by_token[t] = m
            self.books[t] = Book()

    def _cancel_market(self, m: SimMarket) -> None:
        for t in m.token_ids:
            book = self.books[t]
            for o in book.bids + book.asks:
                o.status = "CANCELED"
            book.bids.clear()
            book.asks.clear()

    def current(self, asset: str, now: float) -> SimMarket:
        return self.markets[f"{asset}-updown-15m-{self.window_start(now)}"]

    # ---- balances ----------------------------------------------------------------------------------------
    def balance(self, wallet: str) -> float:
        return self.balances.setdefault(wallet.lower(), self.default_balance)

    def position(self, wallet: str, token: str) -> float:
        return self.positions.get((wallet.lower(), token), 0.0)

    # ---- matching ----------------------------------------------------------------------------------------
    def new_order_id(self) -> str:
        return "0x" + hashlib.sha256(f"bg:{next(self._ids)}:{self.rng.random()}".encode()).hexdigest()

    def submit(self, o: Order, now: float) -> list[dict]:
        """Match `o` against the opposite side; rest the remainder for GTC/GTD. Returns the wallet fills."""
        book = self.books[o.token_id]
        opposite = book.asks if o.side == "BUY" else book.bids
        makers: list[tuple[Order, float]] = []
        for m in list(opposite):
            if o.remaining <= 1e-9:
                break
            crosses = m.price <= o.price + 1e-9 if o.side == "BUY" else m.price >= o.price - 1e-9
            if not crosses:
                break
            if m.wallet == o.wallet:
                continue
            qty = round(min(m.remaining, o.remaining), 6)
            makers.append((m, qty))
            m.matched = round(m.matched + qty, 6)
            o.matched = round(o.matched + qty, 6)
            if m.remaining <= 1e-9:
                m.status = "MATCHED"
                opposite.remove(m)
        fills = []
        if makers:
            fills = self._settle(o, makers, now)
        if o.remaining > 1e-9 and o.order_type in ("GTC", "GTD"):
            book.rest(o)
            o.status = "LIVE"
        else:
            o.status = "MATCHED" if o.matched > 0 else ("UNMATCHED" if o.order_type in ("FAK", "FOK") else o.status)
        return fills

    def _settle(self, taker: Order, makers: list[tuple[Order, float]], now: float) -> list[dict]:
        self.matches += 1
        tx = "0x" + hashlib.sha256(f"tx:{self.matches}:{taker.order_hash}".encode()).hexdigest()
        m = taker.market
        idx = m.token_ids.index(taker.token_id)
        trade_id = f"trade-{self.matches}"
        taker.trade_ids.append(trade_id)
        maker_fills, taker_qty, taker_cost = [], 0.0, 0.0
        for mk, qty in makers:
            mk.trade_ids.append(trade_id)
            maker_fills.append(WalletFill(wallet=mk.wallet, role="maker", order_hash=mk.order_hash, side=mk.side,
                                          token_id=mk.token_id, outcome=m.outcomes[idx], outcome_index=idx,
                                          price=mk.price, size=qty, owner=mk.owner))
            self._move(mk.wallet, mk.token_id, mk.side, qty, mk.price)
            taker_qty += qty
            taker_cost += qty * mk.price
        avg = round(taker_cost / taker_qty, 6)
        self._move(taker.wallet, taker.token_id, taker.side, taker_qty, avg)
        tfill = WalletFill(wallet=taker.wallet, role="taker", order_hash=taker.order_hash, side=taker.side,
                           token_id=taker.token_id, outcome=m.outcomes[idx], outcome_index=idx, price=avg,
                           size=round(taker_qty, 6), owner=taker.owner)
        match = Match(tx_hash=tx, match_time=now, market=m, taker=tfill, makers=maker_fills, trade_id=trade_id)
        rows = []
        for f in match.fills():
            row = {"wallet": f.wallet, "side": f.side, "token_id": f.token_id, "condition_id": m.condition_id,
                   "size": round(f.size, 6), "price": round(f.price, 6), "timestamp": int(now), "slug": m.slug,
                   "event_slug": m.event_slug, "title": m.title, "outcome": f.outcome,
                   "outcome_index": f.outcome_index, "transaction_hash": tx, "role": f.role, "indexed_at": now}
            self.trades.append(row)
            rows.append(row)
            if f.wallet == self.source_wallet:
                self.record("source_fill", tx_hash=tx, token_id=f.token_id, side=f.side, price=row["price"],
                            size=row["size"], role=f.role, condition_id=m.condition_id, match_time=now)
        self.hub.publish(MATCH, match)
        return rows

    def _move(self, wallet: str, token: str, side: str, qty: float, price: float) -> None:
        key = (wallet, token)
        sign = 1 if side == "BUY" else -1
        self.positions[key] = round(self.positions.get(key, 0.0) + sign * qty, 6)
        self.balances[wallet] = round(self.balance(wallet) - sign * qty * price, 6)
