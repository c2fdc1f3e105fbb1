"""Book cache: best levels per token from the CLOB market websocket, warm before trades arrive.

Used by the paper executor (dry run) and for slippage context; the hot path only reads `top(asset)` (no I/O).
A REST snapshot seeds every newly watched token, then `book` / `price_change` messages keep it current.
`tick_size_change` and `market_resolved` are handed to injected callbacks (the market catalog keeps the tick and
the market's state); every message is parsed into typed events first (schemas.parse_market_message).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import gevent
import httpx

from copier.errors import MalformedMessage
from copier.schemas import apply_price_change, parse_book, parse_market_message
from copier.types import BookTop, MarketEvent, MarketResolved, PriceChange, TickSizeChange
from copier.wsfeed import ReconnectingFeed

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.config import Config
    from copier.ports import Alerts, Metrics, Stopping

log = logging.getLogger("copier.books")


class BookCache(ReconnectingFeed):
    name = "market_ws"

    def __init__(self, cfg: Config, *, clock: Clock, metrics: Metrics | None = None, http: httpx.Client | None = None,
                 alerts: Alerts | None = None,
                 on_tick_size: Callable[[TickSizeChange], None] | None = None,
                 on_resolved: Callable[[MarketResolved], None] | None = None) -> None:
        super().__init__(cfg, clock=clock, metrics=metrics, alerts=alerts)
        self.http = http or httpx.Client(base_url=cfg.endpoints.clob, timeout=5.0)
        self.on_tick_size = on_tick_size
        self.on_resolved = on_resolved
        self._books: dict[str, BookTop] = {}
        self._watched: dict[str, None] = {}         # an ordered set: the session subscribes in this order

    def top(self, asset: str) -> BookTop | None:
        return self._books.get(asset)

    def watch(self, asset_ids: Iterable[str]) -> None:
        """Watch exactly these tokens from now on: new ones are snapshotted and subscribed by the session, and the
        books of the others are dropped and unsubscribed, so a week of 15-minute windows keeps only the markets in
        play (every window brings two new tokens; kept, they grew the cache and every resubscription forever)."""
        self._watched = dict.fromkeys(asset_ids)
        for asset in [a for a in self._books if a not in self._watched]:
            del self._books[asset]

    def snapshot(self, asset: str) -> None:
        """One REST /book for `asset`. Never raises: a bad answer is counted, a failed request logged."""
        try:
            resp = self.http.get("/book", params={"token_id": asset})
            if resp.status_code == 200:
                book = parse_book(resp.content)
                if book.asset == asset:
                    self._books[asset] = replace(book, received_at=self.clock.now())
        except httpx.HTTPError as exc:
            log.warning("book snapshot %s: %s", asset[:12], exc)
        except MalformedMessage as exc:
            self.edge.malformed(exc)
        except Exception as exc:
            self.edge.failed("book snapshot", exc)

    def _session(self, stopping: Stopping) -> None:
        ws = self._connect(self.cfg.endpoints.market_ws)
        subscribed: set[str] = set()
        self.connected = True
        pinger = gevent.spawn(self._keepalive, ws, lambda: "PING")
        try:
            while not stopping.is_set():
                fresh = [a for a in self._watched if a not in subscribed]
                if fresh:
                    for a in fresh:
                        self.snapshot(a)
                    # custom_feature_enabled: without it the channel never sends `market_resolved`.
                    msg = {"assets_ids": fresh, "type": "market", "custom_feature_enabled": True} \
                        if not subscribed else {"assets_ids": fresh, "operation": "subscribe"}
                    ws.send(json.dumps(msg))
                    subscribed.update(fresh)
                gone = [a for a in subscribed if a not in self._watched]
                if gone:
                    ws.send(json.dumps({"assets_ids": gone, "operation": "unsubscribe"}))
                    subscribed.difference_update(gone)
                data = self._recv(ws)
                if data is None:
                    return
                self._guarded(self._on_message, data)
        finally:
            pinger.kill(block=False)
            self._disconnect(ws)

    def _on_message(self, data: bytes) -> None:
        message = parse_market_message(data)
        for refused in message.refused:
            self.edge.refused(refused.reason, refused.detail)
        for event in message.events:
            self._guarded(self._apply, event)

    def _apply(self, event: MarketEvent) -> None:
        now = self.clock.now()
        if isinstance(event, BookTop):
            self._books[event.asset] = replace(event, received_at=now)
        elif isinstance(event, PriceChange):
            for change in event.changes:
                book = self._books.get(change.asset)
                if book is not None:
                    self._books[book.asset] = replace(apply_price_change(book, change), received_at=now)
        elif isinstance(event, TickSizeChange):
            log.info("tick size of %s: %g -> %g", event.asset[:12], event.old_tick, event.new_tick)
            if self.on_tick_size is not None:
                self.on_tick_size(event)
        elif isinstance(event, MarketResolved) and self.on_resolved is not None:
            self.on_resolved(event)
