"""What every websocket feed of the copier shares: reconnect with capped exponential backoff and jitter, a
keepalive greenlet, a close() that unblocks the session on shutdown, and the edge's error policy.

Nothing a peer sends stops a feed. Messages are received as raw bytes (text frames are not decoded here: the parsers
decode strictly and refuse invalid UTF-8 as malformed); each one is handled under `_guarded`, so a refusal is counted
and skipped and an unexpected exception is logged, counted and alerted while the session goes on. A session that
fails in any other way is reconnected after backoff. Subclasses implement `_session`.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import websocket

from copier.alerts import EdgeErrors
from copier.errors import MalformedMessage, TemporaryError

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.config import Config
    from copier.ports import Alerts, Metrics, Stopping

log = logging.getLogger("copier.wsfeed")
SOCKET_ERRORS = (OSError, websocket.WebSocketException, TemporaryError)
KEEPALIVE_ANSWERS = {b"", b"PONG", b"pong"}   # RTDS answers PING with "", the CLOB with PONG
DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)


class ReconnectingFeed:
    name = ""

    def __init__(self, cfg: Config, *, clock: Clock, metrics: Metrics | None, rng: random.Random | None = None,
                 alerts: Alerts | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.reconnects = 0
        self.connected = False
        self.edge = EdgeErrors(self.name, metrics=metrics, alerts=alerts, clock=clock, logger=log)
        self._ws: websocket.WebSocket | None = None
        self._last_data = 0.0

    @property
    def malformed(self) -> int:
        return self.edge.refusals

    def _session(self, stopping: Stopping) -> None:
        """One connection, until it drops, goes silent or `stopping` is set."""
        raise NotImplementedError

    def _dropped(self) -> None:
        """Reset what only holds while connected."""
        self.connected = False

    def run(self, stopping: Stopping) -> None:
        attempt = 0
        while not stopping.is_set():
            try:
                self._session(stopping)
                attempt = 0
            except SOCKET_ERRORS as exc:
                log.warning("%s: %s", self.name, exc)
            except Exception as exc:            # a session never ends the feed: reconnect after backoff
                self.edge.failed("session", exc)
            self._dropped()
            if stopping.is_set():
                return
            self.reconnects += 1
            if self.metrics is not None:
                self.metrics.incr(f"feed.{self.name}.reconnects")
            attempt += 1
            feeds = self.cfg.feeds
            backoff = min(feeds.backoff_max_s, feeds.backoff_initial_s * 2 ** (attempt - 1))
            stopping.wait(backoff * (0.5 + self.rng.random() / 2))

    def _guarded(self, handle: Callable[..., None], *args: Any) -> None:
        """Run one message's handler under the edge's policy: refused or failed, the next message still comes."""
        try:
            handle(*args)
        except MalformedMessage as exc:
            self.edge.malformed(exc)
        except Exception as exc:
            self.edge.failed("message", exc)

    def _connect(self, url: str) -> websocket.WebSocket:
        # recv() wakes at least every ping interval, so the data watchdog is judged even while pongs arrive.
        feeds = self.cfg.feeds
        self._ws = websocket.create_connection(url, timeout=min(feeds.ping_interval_s, feeds.data_watchdog_s),
                                               enable_multithread=True, skip_utf8_validation=True)
        self._last_data = self.clock.monotonic()
        return self._ws

    def _is_data(self, data: bytes) -> bool:
        """Whether a message shows the feed is alive: keepalive answers do not (a stalled feed still answers them)."""
        return data.strip() not in KEEPALIVE_ANSWERS

    def _recv(self, ws: websocket.WebSocket) -> bytes | None:
        """The next data message as raw bytes, or None when the socket closed or carried no data for the data
        watchdog."""
        while True:
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                opcode, data = None, b""
            if opcode == websocket.ABNF.OPCODE_CLOSE or (opcode is not None and not ws.connected):
                return None
            if opcode in DATA_OPCODES:
                data = data if isinstance(data, bytes) else bytes(data)
                if self._is_data(data):
                    self._last_data = self.clock.monotonic()
                    return data
            if self.clock.monotonic() - self._last_data > self.cfg.feeds.data_watchdog_s:
                if self.metrics is not None:
                    self.metrics.incr(f"feed.{self.name}.watchdog")
                log.warning("%s: no data for %.0fs, reconnecting", self.name, self.cfg.feeds.data_watchdog_s)
                return None

    def _disconnect(self, ws: websocket.WebSocket) -> None:
        self._ws = None
        try:
            ws.close()
        except SOCKET_ERRORS:
            pass

    def _keepalive(self, ws: websocket.WebSocket, message: Callable[[], str | bytes]) -> None:
        """Send `message()` every ping interval until the socket fails (the greenlet is killed with the session)."""
        while True:
            gevent.sleep(self.cfg.feeds.ping_interval_s)
            try:
                ws.send(message())
            except SOCKET_ERRORS:
                return
            except Exception as exc:
                self.edge.failed("keepalive", exc)

    def state(self) -> dict[str, object]:
        return {"name": self.name, "connected": self.connected, "reconnects": self.reconnects}

    def close(self) -> None:
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except SOCKET_ERRORS:
                pass
