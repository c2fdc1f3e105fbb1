"""RTDS (`wss://ws-live-data.polymarket.com`): the public `activity` firehose and `crypto_prices_chainlink`.

Like the real feed: frames in the real envelope with a per-connection `connection_id`, whole-second payload
timestamps, topic/type subscriptions with optional event_slug/market_slug filters but no user filter, a text
PING answered with an empty message, delivery ~2 s after the match, and a connection that sends no PING for
`rtds_idle_stall_s` silently stops receiving (measured: ~6 min) while staying open. Failure modes on demand:
silent stall, dropped connections, bursty delivery, duplicate frames, malformed frames.
"""
from __future__ import annotations

import base64
import json
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial

from aiohttp import web

from polysim.events import MATCH, Hub, Match
from polysim.faults import Faults
from polysim.oracle import Oracle
from polysim.scenario import Feeds
from polysim.views import profile
from polysim.wsconn import Conn, Lane, session

ICON = "https://polymarket-upload.s3.us-east-2.amazonaws.com/{}+fullsize.png"
PRICE_SNAPSHOT_POINTS = 120        # one point a second: the last two minutes


def _price_point(ms: int, value: float) -> dict:
    exact = Decimal(str(round(value, 8)))
    return {"full_accuracy_value": str(int(exact * 10**18)), "timestamp": ms, "value": round(value, 4)}


@dataclass(eq=False)
class Client:
    conn: Conn
    connection_id: str
    last_ping: float
    activity: dict[str, dict | None] = field(default_factory=dict)   # type -> filter (None = everything)
    prices: dict[str, dict | None] = field(default_factory=dict)
    stalled: bool = False


class Rtds:
    def __init__(self, hub: Hub, cfg: Feeds, *, rng: random.Random, now: Callable[[], float], faults: Faults,
                 oracle: Oracle):
        self.cfg = cfg
        self.rng = rng
        self.now = now
        self.faults = faults
        self.oracle = oracle
        self.clients: dict[Conn, Client] = {}
        self.counters = {"rtds_frames": 0, "rtds_frames_sent": 0, "rtds_connections": 0, "rtds_idle_stalled": 0}
        self._lanes = {"trades": Lane(), "orders_matched": Lane()}
        self._lag = cfg.rtds_delay_s
        self._held: list[tuple[str, dict]] | None = None
        self._recent: dict[str, deque[dict]] = {}           # symbol -> the last points, for the snapshot
        hub.subscribe(MATCH, self._on_match)

    # ---- connections -------------------------------------------------------------------------------------
    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        return await session(request, self._open, self._on_text, lambda c: self.clients.pop(c.conn, None))

    def _open(self, conn: Conn) -> Client:
        cid = base64.b64encode(self.rng.getrandbits(96).to_bytes(12, "big")).decode().replace("/", "-")
        client = self.clients[conn] = Client(conn, cid, self.now())
        self.counters["rtds_connections"] += 1
        return client

    def _on_text(self, c: Client, text: str) -> None:
        if text.strip().upper() == "PING":
            if not self._stalled(c, self.now()):     # a stalled connection stays silent, PING replies included
                c.last_ping = self.now()
                c.conn.send("")
            return
        try:
            doc = json.loads(text)
            action, subs = doc["action"], doc["subscriptions"]
            for s in subs:
                topic, kind = s["topic"], s.get("type", "*")
                raw = s.get("filters")
                filt = json.loads(raw) if isinstance(raw, str) and raw else (raw or None)
                target = c.activity if topic == "activity" else c.prices if topic == "crypto_prices_chainlink" else None
                if target is None:
                    continue
                if action == "subscribe":
                    target[kind] = filt if isinstance(filt, dict) else None
                    if target is c.prices:
                        self._snapshot(c)
                elif action == "unsubscribe":
                    target.pop(kind, None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return              # the real server ignores what it cannot parse

    def _stalled(self, c: Client, now: float) -> bool:
        """The real feed silently stops serving a connection that sent no PING for ~6 minutes, for good."""
        if not c.stalled and now - c.last_ping > self.cfg.rtds_idle_stall_s:
            c.stalled = True
            self.counters["rtds_idle_stalled"] += 1
        return c.stalled

    # ---- activity ----------------------------------------------------------------------------------------
    def _payload(self, match: Match, f) -> dict:
        m = match.market
        unlabeled = self.cfg.rtds_unlabeled_p and self.rng.random() < self.cfg.rtds_unlabeled_p
        p = {"asset": f.token_id, "bio": "", "conditionId": m.condition_id, "eventSlug": m.event_slug,
             "icon": ICON.format(m.asset_symbol.upper()), **profile(f.wallet), "outcome": f.outcome,
             "outcomeIndex": 999 if unlabeled else f.outcome_index, "price": round(f.price, 6), "profileImage": "",
             "proxyWallet": f.wallet, "side": f.side, "size": round(f.size, 6), "slug": m.slug,
             "timestamp": int(match.match_time), "title": m.title, "transactionHash": match.tx_hash}
        if f.fee > 0:
            p["fee"] = f.fee
        return dict(sorted(p.items()))

    def _on_match(self, match: Match) -> None:
        if match.will_fail:
            return                       # a reverted settlement never reaches the chain-indexed feed
        # The indexer's lag drifts slowly, so neighbouring matches keep their spacing and order.
        d = self.cfg.rtds_delay_s
        self._lag = min(d * 1.4, max(d * 0.8, self._lag + self.rng.gauss(0, 0.02 * max(d, 0.05))))
        now = self.now()
        taker = self._payload(match, match.taker)
        lead = min(self.cfg.rtds_orders_matched_lead_s, self._lag / 2)
        self._lanes["orders_matched"].later(now, self._lag - lead, lambda: self._deliver("orders_matched", taker))
        rows = [taker] + [self._payload(match, f) for f in match.makers]
        for p in rows:
            self._lanes["trades"].later(now, self._lag, partial(self._deliver, "trades", p))

    def _deliver(self, kind: str, payload: dict) -> None:
        now = self.now()
        if self.faults.window("rtds_stall", now):
            return                       # silent stall: connected, nothing arrives, the frame is lost
        if self._held is not None:
            self._held.append((kind, payload))
            return
        self._broadcast(kind, payload, now)
        if self.faults.take("rtds_duplicate"):
            self._broadcast(kind, payload, now)

    def _broadcast(self, kind: str, payload: dict, now: float) -> None:
        self.counters["rtds_frames"] += 1
        rest = None
        for c in list(self.clients.values()):
            if kind not in c.activity and "*" not in c.activity:
                continue
            filt = c.activity.get(kind, c.activity.get("*"))
            if filt and not (filt.get("event_slug") in (None, payload["eventSlug"])
                             and filt.get("market_slug") in (None, payload["slug"])):
                continue
            if self._stalled(c, now):
                continue
            if rest is None:
                rest = json.dumps({"payload": payload, "timestamp": int(now * 1000), "topic": "activity",
                                   "type": kind}, separators=(",", ":"))[1:]
            c.conn.send(f'{{"connection_id":"{c.connection_id}",{rest}')
            self.counters["rtds_frames_sent"] += 1

    # ---- crypto prices -----------------------------------------------------------------------------------
    @staticmethod
    def _wants(c: Client, symbol: str) -> bool:
        filt = c.prices.get("*", c.prices.get("update")) if c.prices else None
        return bool(c.prices) and not (filt and filt.get("symbol") not in (None, symbol))

    def publish_prices(self) -> None:
        """One `update` per symbol per second, each frame with the connection's id; the payload carries the
        rounded `value` and the exact `full_accuracy_value` (Chainlink's 18-decimal integer, as a string)."""
        now = self.now()
        ms = int(now * 1000)
        for asset, value in self.oracle.spot.items():
            symbol = f"{asset}/usd"
            point = _price_point(ms, value)
            self._recent.setdefault(symbol, deque(maxlen=PRICE_SNAPSHOT_POINTS)).append(point)
            rest = None
            for c in list(self.clients.values()):
                if not self._wants(c, symbol) or self._stalled(c, now):
                    continue
                if rest is None:
                    rest = json.dumps({"payload": {"symbol": symbol, **point}, "timestamp": ms,
                                       "topic": "crypto_prices_chainlink", "type": "update"},
                                      separators=(",", ":"))[1:]
                c.conn.send(f'{{"connection_id":"{c.connection_id}",{rest}')

    def _snapshot(self, c: Client) -> None:
        """On subscribing: the recent points of each wanted symbol in one `subscribe` frame (the snapshot the
        RTDS docs describe for price topics)."""
        ms = int(self.now() * 1000)
        for symbol, points in self._recent.items():
            if points and self._wants(c, symbol):
                c.conn.send(json.dumps({"connection_id": c.connection_id, "payload": {"symbol": symbol,
                                        "data": list(points)}, "timestamp": ms, "topic": "crypto_prices_chainlink",
                                        "type": "subscribe"}, separators=(",", ":")))

    # ---- faults ------------------------------------------------------------------------------------------
    def drop_all(self) -> None:
        for c in list(self.clients.values()):
            c.conn.abort()

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        now = self.now()
        for kind, payload in held:
            self._broadcast(kind, payload, now)

    def send_raw(self, text: str) -> None:
        for c in list(self.clients.values()):
            c.conn.send(text)
