"""CLOB user channel (`/ws/user`): our own orders and trades, authenticated by API credentials.

Subscribe `{"auth":{"apiKey","secret","passphrase"},"markets":[condition ids],"type":"user"}` (omit `markets` for
all). Events: `order` (PLACEMENT when an order rests, UPDATE when a resting order fills, CANCELLATION) and `trade`
(MATCHED, MINED, CONFIRMED, or RETRYING then FAILED). Bad credentials close the socket (1008). `PING` -> `PONG`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from polysim.events import ORDER, TRADE, Hub, OrderUpdate
from polysim.scenario import Feeds
from polysim.wsconn import Conn, Lane, session


@dataclass(eq=False)
class UserSub:
    conn: Conn
    api_key: str = ""
    markets: frozenset[str] | None = None


class UserWs:
    def __init__(self, hub: Hub, cfg: Feeds, *, keys: dict, now: Callable[[], float]):
        self.cfg = cfg
        self.keys = keys                        # api key -> {"secret", "passphrase", ...}
        self.now = now
        self.subs: dict[Conn, UserSub] = {}
        self._lane = Lane()
        hub.subscribe(ORDER, lambda u: self._later(u.owner, u.order["market"], self._order_json(u)))
        hub.subscribe(TRADE, lambda t: self._later(t.owner, t.trade["market"], t.trade))

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        return await session(request, self._open, self._on_text, lambda sub: self.subs.pop(sub.conn, None))

    def _open(self, conn: Conn) -> UserSub:
        sub = self.subs[conn] = UserSub(conn)
        return sub

    def _on_text(self, sub: UserSub, text: str) -> bool:
        if text.strip().upper() == "PING":
            sub.conn.send("PONG")
            return True
        return self._subscribe(sub, text)

    def _subscribe(self, sub: UserSub, text: str) -> bool:
        try:
            doc = json.loads(text)
            auth = doc.get("auth") or {}
            key = self.keys.get(auth.get("apiKey", ""))
            markets = doc.get("markets")
        except (ValueError, AttributeError):
            return False
        if "operation" in doc and sub.api_key:             # dynamic (un)subscribe of markets
            current = set(sub.markets or ())
            change = set(markets or ())
            sub.markets = frozenset(current - change if doc["operation"] == "unsubscribe" else current | change)
            return True
        if key is None or auth.get("secret") != key["secret"] or auth.get("passphrase") != key["passphrase"]:
            return False
        sub.api_key = auth["apiKey"]
        sub.markets = frozenset(markets) if markets else None
        return True

    def _later(self, owner: str, market: str, doc: dict) -> None:
        if not any(s.api_key == owner for s in self.subs.values()):
            return
        text = json.dumps(doc, separators=(",", ":"))
        self._lane.later(self.now(), self.cfg.user_ws_delay_s, lambda: self._send(owner, market, text))

    def _send(self, owner: str, market: str, text: str) -> None:
        for s in list(self.subs.values()):
            if s.api_key == owner and (s.markets is None or market in s.markets):
                s.conn.send(text)

    @staticmethod
    def _order_json(u: OrderUpdate) -> dict:
        o = u.order
        # The current docs example adds created_at, expiration, order_type, status and maker_address.
        return {"asset_id": o["asset_id"], "associate_trades": o["associate_trades"] or None,
                "created_at": str(o["created_at"]), "event_type": "order", "expiration": o["expiration"],
                "id": o["id"], "maker_address": o["maker_address"], "market": o["market"], "order_owner": o["owner"],
                "order_type": o["order_type"], "original_size": o["original_size"], "outcome": o["outcome"],
                "owner": o["owner"], "price": o["price"], "side": o["side"], "size_matched": o["size_matched"],
                "status": o["status"], "timestamp": str(int(u.ts)), "type": u.kind}

    def drop_all(self) -> None:
        for s in list(self.subs.values()):
            s.conn.abort()
