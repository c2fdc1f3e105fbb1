"""Book cache: best levels per token from the CLOB market websocket, warm before trades arrive.

Used by the paper executor (dry run) and for slippage context; the hot path only reads `top(asset)` (no I/O).
A REST snapshot seeds every newly watched token, then `book` / `price_change` messages keep it current.
"""
from __future__ import annotations

import json
import logging

import gevent
import httpx

from copier.errors import MalformedMessage
from copier.schemas import apply_price_change, parse_book
from copier.types import BookTop
from copier.wsfeed import ReconnectingFeed

log = logging.getLogger("copier.books")


class BookCache(ReconnectingFeed):
    name = "market_ws"

    def __init__(self, cfg, *, clock, metrics=None, http: httpx.Client | None = None):
        super().__init__(cfg, clock=clock, metrics=metrics)
        self.http = http or httpx.Client(base_url=cfg.endpoints.clob, timeout=5.0)
        self._books: dict[str, BookTop] = {}
        self._watched: list[str] = []
        self.malformed = 0

    def top(self, asset: str) -> BookTop | None:
        return self._books.get(asset)

    def watch(self, asset_ids) -> None:
        for a in asset_ids:
            if a not in self._watched:
                self._watched.append(a)

    def snapshot(self, asset: str) -> None:
        try:
            resp = self.http.get("/book", params={"token_id": asset})
            if resp.status_code == 200:
                self._books[asset] = parse_book(resp.json())
        except (httpx.HTTPError, ValueError, MalformedMessage) as exc:
            log.warning("book snapshot %s: %s", asset[:12], exc)


    def _session(self, stopping) -> None:
        ws = self._connect(self.cfg.endpoints.market_ws)
        subscribed: set[str] = set()
        self.connected = True
        pinger = gevent.spawn(self._keepalive, ws, lambda: "PING")
        try:
            while not stopping.is_set():
                if len(subscribed) < len(self._watched):
                    fresh = [a for a in self._watched if a not in subscribed]
                    for a in fresh:
                        self.snapshot(a)
                    msg = {"assets_ids": fresh, "type": "market"} if not subscribed else \
                        {"assets_ids": fresh, "operation": "subscribe"}
                    ws.send(json.dumps(msg))
                    subscribed.update(fresh)
                text = self._recv(ws)
                if text is None:
                    return
                self._on_message(text)
        finally:
            pinger.kill(block=False)
            self._disconnect(ws)

    def _on_message(self, text) -> None:
        try:
            msg = json.loads(text)
            for m in msg if isinstance(msg, list) else [msg]:
                self._apply(m)
        except (ValueError, MalformedMessage, TypeError, AttributeError) as exc:
            self.malformed += 1
            if self.metrics is not None:
                self.metrics.incr("feed.malformed")
            log.debug("market ws: skipped %s", exc)

    def _apply(self, m: dict) -> None:
        kind = m.get("event_type")
        if kind == "book":
            b = parse_book(m)
            self._books[b.asset] = b
        elif kind == "price_change":
            for ch in m.get("price_changes") or []:
                book = self._books.get(ch.get("asset_id"))
                if book is not None:
                    self._books[book.asset] = apply_price_change(book, ch)
