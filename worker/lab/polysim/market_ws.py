"""CLOB market channel (`/ws/market`): public book data per asset id.

Subscribe `{"assets_ids":[...],"type":"market","custom_feature_enabled":true,"initial_dump":true}`, then
`{"assets_ids":[...],"operation":"subscribe|unsubscribe"}`. Events: `book` (on subscribe, as one JSON array, and
after every trade touching the market), `price_change` (orders placed/cancelled; both outcomes' levels in one
message), `last_trade_price` (one per settlement, the taker's side, no wallet), `tick_size_change`; with
custom_feature_enabled also `best_bid_ask`, `new_market`, `market_resolved`. Text `PING` -> `PONG`.
Everything arrives `market_ws_delay_s` after it happened, in order.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from polysim.events import BOOK, MARKET_CREATED, MARKET_STATE, MATCH, TICK_SIZE, BookUpdate, Hub, Match, SimMarket
from polysim.exchange import NAMES, Exchange, fmt
from polysim.faults import Faults
from polysim.scenario import Feeds
from polysim.views import best_prices, book_doc
from polysim.wsconn import Conn, Lane, session


def _dumps(doc) -> str:
    return json.dumps(doc, separators=(",", ":"))


@dataclass(eq=False)
class Sub:
    conn: Conn
    assets: set[str] = field(default_factory=set)
    custom: bool = False


class MarketWs:
    def __init__(self, hub: Hub, ex: Exchange, cfg: Feeds, *, now: Callable[[], float], faults: Faults):
        self.ex = ex
        self.cfg = cfg
        self.now = now
        self.faults = faults
        self.subs: dict[Conn, Sub] = {}
        self.by_asset: dict[str, set[Sub]] = {}
        self._best: dict[str, tuple[str, str]] = {}
        self._lane = Lane()
        hub.subscribe(BOOK, lambda u: self._later_with_bests(u.market, lambda bests: self._price_change(u, bests)))
        hub.subscribe(MATCH, lambda mt: self._later_with_bests(mt.market, lambda bests: self._trade(mt, bests)))
        hub.subscribe(TICK_SIZE, lambda t: self._later(lambda: self._tick(*t)))
        hub.subscribe(MARKET_CREATED, lambda m: self._later(lambda: self._custom(self._new_market(m))))
        hub.subscribe(MARKET_STATE, self._on_state)

    def _on_state(self, m: SimMarket) -> None:
        if m.state == "resolved":
            for t in m.token_ids:
                self._best.pop(t, None)
            self._later(lambda: self._resolved(m))

    def _later(self, fn) -> None:
        self._lane.later(self.now(), self.cfg.market_ws_delay_s, fn)

    def _later_with_bests(self, m: SimMarket, fn) -> None:
        """Best prices as of the event, not of the delayed send: each change shows, however fast they come."""
        if any(self.by_asset.get(t) for t in m.token_ids) and m.condition_id in self.ex.books:
            bests = {t: best_prices(self.ex, t) for t in m.token_ids}
            self._later(lambda: fn(bests))

    # ---- connections -------------------------------------------------------------------------------------
    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        return await session(request, self._open, self._on_text, self._close)

    def _open(self, conn: Conn) -> Sub:
        sub = self.subs[conn] = Sub(conn)
        return sub

    def _close(self, sub: Sub) -> None:
        self.subs.pop(sub.conn, None)
        for a in sub.assets:
            self.by_asset.get(a, set()).discard(sub)

    def _on_text(self, sub: Sub, text: str) -> None:
        if text.strip().upper() == "PING":
            sub.conn.send("PONG")
            return
        try:
            doc = json.loads(text)
            assets = [str(a) for a in doc.get("assets_ids") or []]
        except (ValueError, AttributeError, TypeError):
            return
        op = str(doc.get("operation", "subscribe")).lower()
        if "type" in doc:
            sub.custom = bool(doc.get("custom_feature_enabled", False))
        if op == "unsubscribe":
            for a in assets:
                sub.assets.discard(a)
                self.by_asset.get(a, set()).discard(sub)
            return
        fresh = [a for a in assets if a not in sub.assets]
        for a in fresh:
            sub.assets.add(a)
            self.by_asset.setdefault(a, set()).add(sub)
        known = [a for a in fresh if a in self.ex.by_token]
        if known and doc.get("initial_dump", True) and not self._stalled():
            now = self.now()
            sub.conn.send(_dumps([{"event_type": "book", **self._book(a, now)} for a in known]))

    def _stalled(self) -> bool:
        return self.faults.window("market_ws_stall", self.now()) is not None

    def _send(self, assets, text: str) -> None:
        seen = set()
        for a in assets:
            for s in self.by_asset.get(a, ()):
                if s not in seen:
                    seen.add(s)
                    s.conn.send(text)

    def _book(self, token: str, now: float) -> dict:
        d = book_doc(self.ex, token, now)
        return {"asset_id": d["asset_id"], "market": d["market"], "bids": d["bids"], "asks": d["asks"],
                "timestamp": d["timestamp"], "hash": d["hash"]}

    # ---- events ------------------------------------------------------------------------------------------
    def _live(self, m: SimMarket) -> bool:
        return not self._stalled() and m.condition_id in self.ex.books and \
            any(self.by_asset.get(t) for t in m.token_ids)

    def _price_change(self, u: BookUpdate, bests: dict[str, tuple[str, str]]) -> None:
        m = u.market
        if not self._live(m):
            return
        now = self.now()
        books = {t: self._book(t, now) for t in m.token_ids}
        changes = []
        for ch in u.changes:
            bid, ask = bests[ch["asset_id"]]
            changes.append({**ch, "hash": books[ch["asset_id"]]["hash"], "best_bid": bid, "best_ask": ask})
        self._send(m.token_ids, _dumps({"market": m.condition_id, "price_changes": changes,
                                        "timestamp": str(int(now * 1000)), "event_type": "price_change"}))
        self._best_bid_ask(m, bests, now)

    def _trade(self, mt: Match, bests: dict[str, tuple[str, str]]) -> None:
        m = mt.market
        if not self._live(m):
            return
        now = self.now()
        t = mt.taker
        self._send(m.token_ids, _dumps({"asset_id": t.token_id, "event_type": "last_trade_price", "fee_rate_bps": "0",
                                        "market": m.condition_id, "price": fmt(t.price), "side": t.side,
                                        "size": fmt(t.size), "timestamp": str(int(mt.match_time * 1000)),
                                        "transaction_hash": mt.tx_hash}))
        for token in m.token_ids:
            self._send([token], _dumps({"event_type": "book", **self._book(token, now)}))
        self._best_bid_ask(m, bests, now)

    def _best_bid_ask(self, m: SimMarket, bests: dict[str, tuple[str, str]], now: float) -> None:
        for token in m.token_ids:
            bid, ask = bests[token]
            if self._best.get(token) == (bid, ask):
                continue
            self._best[token] = (bid, ask)
            text = _dumps({"event_type": "best_bid_ask", "market": m.condition_id, "asset_id": token,
                           "best_bid": bid, "best_ask": ask, "spread": fmt(max(0.0, float(ask) - float(bid))),
                           "timestamp": str(int(now * 1000))})
            for s in self.by_asset.get(token, ()):
                if s.custom:
                    s.conn.send(text)

    def _tick(self, m: SimMarket, token: str, old: float, new: float) -> None:
        if self._stalled():
            return
        self._send([token], _dumps({"event_type": "tick_size_change", "asset_id": token, "market": m.condition_id,
                                    "old_tick_size": fmt(old), "new_tick_size": fmt(new),
                                    "timestamp": str(int(self.now() * 1000))}))

    def _custom(self, doc: dict) -> None:
        if self._stalled():
            return
        text = _dumps(doc)
        for s in list(self.subs.values()):
            if s.custom:
                s.conn.send(text)

    def _event_message(self, m: SimMarket) -> dict:
        return {"id": m.event_id, "ticker": m.event_slug, "slug": m.event_slug, "title": m.title,
                "description": description(m)}

    def _new_market(self, m: SimMarket) -> dict:
        return {"id": m.market_id, "question": m.title, "market": m.condition_id, "slug": m.slug,
                "description": description(m), "assets_ids": list(m.token_ids), "outcomes": list(m.outcomes),
                "event_message": self._event_message(m), "timestamp": str(int(self.now() * 1000)),
                "event_type": "new_market", "tags": ["crypto", "up-or-down", "15M"],
                "condition_id": m.condition_id, "active": True, "clob_token_ids": list(m.token_ids),
                "sports_market_type": "", "line": "", "game_start_time": "",
                "order_price_min_tick_size": fmt(m.tick_size), "group_item_title": "",
                "taker_base_fee": str(m.base_fee_bps), "fees_enabled": True,
                "fee_schedule": {"exponent": fmt(m.fee_exponent), "rate": fmt(m.fee_rate), "taker_only": True,
                                 "rebate_rate": "0.2"}}

    def _resolved(self, m: SimMarket) -> None:
        assert m.winner is not None             # called for a resolved market only
        self._custom({"id": m.market_id, "question": m.title, "market": m.condition_id, "slug": m.slug,
                      "description": description(m), "assets_ids": list(m.token_ids), "outcomes": list(m.outcomes),
                      "winning_asset_id": m.token_ids[m.winner], "winning_outcome": m.outcomes[m.winner],
                      "event_message": self._event_message(m), "timestamp": str(int(self.now() * 1000)),
                      "event_type": "market_resolved"})

    # ---- faults ------------------------------------------------------------------------------------------
    def drop_all(self) -> None:
        for s in list(self.subs.values()):
            s.conn.abort()

    def send_raw(self, text: str) -> None:
        for s in list(self.subs.values()):
            s.conn.send(text)


def description(m: SimMarket) -> str:
    name = NAMES[m.asset_symbol]
    return (f'This market will resolve to "Up" if the {name} price at the end of the time range specified in the '
            f'title is greater than or equal to the price at the beginning of that range. Otherwise, it will '
            f'resolve to "Down".')
