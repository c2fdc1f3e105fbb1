"""Book cache: best levels per token from the CLOB market websocket, warm before trades arrive.

Used by the paper executor (dry run) and for slippage context; the hot path only reads `top(asset)` (no I/O).
A REST snapshot seeds every newly watched token, then `book` / `price_change` messages keep it current.
"""
from __future__ import annotations

import json
import logging
import random

import gevent
import httpx
import websocket

from copier.errors import MalformedMessage
from copier.schemas import apply_price_change, parse_book
from copier.types import BookTop

log = logging.getLogger("copier.books")


class BookCache:
    def __init__(self, cfg, *, clock, metrics=None, http: httpx.Client | None = None):
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.http = http or httpx.Client(base_url=cfg.endpoints.clob, timeout=5.0)
        self._books: dict[str, BookTop] = {}
        self._watched: list[str] = []
        self._new: list[str] = []
        self._ws = None
        self.reconnects = 0
        self.malformed = 0

    def top(self, asset: str) -> BookTop | None:
        return self._books.get(asset)

    def watch(self, asset_ids) -> None:
        for a in asset_ids:
            if a not in self._watched:
                self._watched.append(a)
                self._new.append(a)

    def snapshot(self, asset: str) -> None:
        try:
            resp = self.http.get("/book", params={"token_id": asset})
            if resp.status_code == 200:
                self._books[asset] = parse_book(resp.json())
        except (httpx.HTTPError, ValueError, MalformedMessage) as exc:
            log.warning("book snapshot %s: %s", asset[:12], exc)

    def run(self, stopping) -> None:
        attempt = 0
        while not stopping.is_set():
            try:
                self._session(stopping)
                attempt = 0
            except (OSError, websocket.WebSocketException) as exc:
                log.warning("market ws: %s", exc)
            if stopping.is_set():
                return
            self.reconnects += 1
            attempt += 1
            stopping.wait(min(self.cfg.feeds.backoff_max_s, self.cfg.feeds.backoff_initial_s * 2 ** attempt)
                          * (0.5 + random.random() / 2))

    def _session(self, stopping) -> None:
        ws = websocket.create_connection(self.cfg.endpoints.market_ws, timeout=self.cfg.feeds.data_watchdog_s)
        self._ws = ws
        subscribed: set[str] = set()
        pinger = gevent.spawn(self._ping, ws)
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
                try:
                    text = ws.recv()
                except websocket.WebSocketTimeoutException:
                    return
                if text == "" and not ws.connected:
                    return
                self._on_message(text)
        finally:
            pinger.kill(block=False)
            self._ws = None
            ws.close()

    def _ping(self, ws) -> None:
        while True:
            gevent.sleep(self.cfg.feeds.ping_interval_s)
            try:
                ws.send("PING")
            except (OSError, websocket.WebSocketException):
                return

    def _on_message(self, text) -> None:
        if text in ("PONG", "pong", ""):
            return
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

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except (OSError, websocket.WebSocketException):
                pass
