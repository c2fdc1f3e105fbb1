"""Watcher: the source wallet's fills from RTDS `activity` (two hot sockets) and the Data API gap-filler.

Every fill goes through the shared Deduper before `on_fill`, so whichever socket or feed sees a fill first wins and
the rest only confirm. The real RTDS feed stalls silently: a data watchdog reconnects a socket that has been quiet
for `data_watchdog_s`, with capped exponential backoff and jitter. A fill dated outside [now - horizon, now + skew]
(schemas.check_match_ts) is refused on every feed and never moves the gap-fill cursor.
"""
from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
import httpx

from copier.alerts import EdgeErrors
from copier.errors import MalformedMessage
from copier.schemas import MATCH_TS_MAX_SKEW_S, check_match_ts, parse_rtds_frame, parse_trades_page
from copier.types import BadInput, SourceFill
from copier.wsfeed import ReconnectingFeed

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.config import Config
    from copier.detection import Detection
    from copier.ports import Alerts, Metrics, Stopping

log = logging.getLogger("copier.watcher")
SUBSCRIBE = json.dumps({"action": "subscribe", "subscriptions": [
    {"topic": "activity", "type": "trades"}, {"topic": "activity", "type": "orders_matched"}]})


class RtdsFeed(ReconnectingFeed):
    metrics: Metrics

    def __init__(self, name: str, cfg: Config, *, detection: Detection, on_fill: Callable[[SourceFill], None],
                 clock: Clock, metrics: Metrics, rng: random.Random | None = None,
                 alerts: Alerts | None = None) -> None:
        self.name = name
        super().__init__(cfg, clock=clock, metrics=metrics, rng=rng, alerts=alerts)
        self.url = cfg.endpoints.rtds_ws
        self.wallet = cfg.copy.source_wallet.lower()
        self.detection = detection
        self.on_fill = on_fill
        self.frames = 0
        self._conn_no = 0
        self._last_frame = 0.0

    @classmethod
    def for_config(cls, cfg: Config, *, detection: Detection, on_fill: Callable[[SourceFill], None], clock: Clock,
                   metrics: Metrics, alerts: Alerts | None = None) -> list[RtdsFeed]:
        names = ["rtds-a", "rtds-b"] if cfg.feeds.rtds_standby else ["rtds-a"]
        return [cls(n, cfg, detection=detection, on_fill=on_fill, clock=clock, metrics=metrics, alerts=alerts)
                for n in names]

    def state(self) -> dict[str, object]:
        age = self.clock.monotonic() - self._last_frame if self._last_frame else None
        return {"name": self.name, "connected": self.connected, "reconnects": self.reconnects,
                "malformed": self.malformed, "errors": self.edge.errors, "frames": self.frames,
                "last_frame_age_s": round(age, 3) if age is not None else None}

    def _session(self, stopping: Stopping) -> None:
        ws = self._connect(self.url)
        self._conn_no += 1
        stream = f"{self.name}#{self._conn_no}"
        try:
            ws.send(SUBSCRIBE)
            self.connected = True
            self._last_frame = self.clock.monotonic()
            pinger = gevent.spawn(self._keepalive, ws, lambda: "PING")
            try:
                while not stopping.is_set():
                    text = self._recv(ws)
                    if text is None:
                        return
                    self._last_frame = self.clock.monotonic()
                    self._guarded(self._on_frame, text, stream)
            finally:
                pinger.kill(block=False)
        finally:
            self._disconnect(ws)

    def _on_frame(self, data: bytes, stream: str) -> None:
        recv_ns = self.clock.now_ns()
        self.frames += 1
        fills, frame_id = parse_rtds_frame(data, self.wallet, recv_ns)
        for fill in fills:
            check_match_ts(fill.match_ts, recv_ns / 1e9)
            parsed_ns = self.clock.now_ns()
            admitted = self.detection.sight(fill, f"{stream}:{fill.feed}", frame_id)
            if admitted is None:
                self.metrics.incr("feed.duplicates")
                continue
            self.metrics.timing("stage.parse_ms", (parsed_ns - recv_ns) / 1e6)
            self.metrics.timing("stage.dedupe_ms", (self.clock.now_ns() - parsed_ns) / 1e6)
            self.on_fill(admitted)


class GapFiller:
    """After a (re)start or any reconnect, re-read the source's trades from the Data API since the durable cursor."""

    POLL_S = 1.0
    RESCAN_S = 8.0          # a second pass once the Data API's indexing (~5.4 s) has caught up
    RETRY_S = 2.0           # a failed pass (5xx, a broken body) is tried again soon: it may hold the only copy

    def __init__(self, cfg: Config, *, detection: Detection, on_fill: Callable[[SourceFill], None], clock: Clock,
                 metrics: Metrics, cursor_getter: Callable[[], float | None], cursor_setter: Callable[[float], None],
                 reconnects: Callable[[], int], http: httpx.Client | None = None, alerts: Alerts | None = None) -> None:
        self.cfg = cfg
        self.detection = detection
        self.on_fill = on_fill
        self.clock = clock
        self.metrics = metrics
        self.cursor_getter = cursor_getter
        self.cursor_setter = cursor_setter
        self._feed_reconnects = reconnects     # the sockets' reconnects: each one calls for a scan
        self.http = http or httpx.Client(base_url=cfg.endpoints.data_api, timeout=5.0)
        self.edge = EdgeErrors("data_api", metrics=metrics, alerts=alerts, clock=clock, logger=log)
        self.scans = 0
        self.recovered = 0

    name = "gap-fill"
    reconnects = 0              # a poller: it never holds a connection to lose

    def state(self) -> dict[str, object]:
        return {"name": self.name, "scans": self.scans, "recovered": self.recovered}

    def close(self) -> None:
        """Nothing to unblock: the loop waits on `stopping` between passes."""

    def run(self, stopping: Stopping) -> None:
        seen_reconnects = -1
        pending_rescan_at = None
        while not stopping.is_set():
            try:
                r = self._feed_reconnects()
                if r != seen_reconnects:
                    seen_reconnects = r
                    # The Data API indexes a few seconds behind: scan now and once more after it caught up.
                    failed = self.scan() is None
                    pending_rescan_at = self.clock.monotonic() + (self.RETRY_S if failed else self.RESCAN_S)
                elif pending_rescan_at is not None and self.clock.monotonic() >= pending_rescan_at:
                    failed = self.scan() is None
                    pending_rescan_at = self.clock.monotonic() + self.RETRY_S if failed else None
            except Exception as exc:            # one bad pass never ends the gap-filler
                self.edge.failed("gap-fill pass", exc)
                pending_rescan_at = self.clock.monotonic() + self.RETRY_S
            stopping.wait(self.POLL_S)

    def scan(self) -> int | None:
        """One pass from the cursor; returns the fills newly admitted, None if the pass failed. Never raises.
        Only a fill dated inside [now - horizon, now + skew] moves the cursor, and never past now."""
        self.scans += 1
        try:
            return self._scan(f"data_api#{self.scans}")
        except httpx.HTTPError as exc:
            problem = str(exc)
        except MalformedMessage as exc:
            self.edge.malformed(exc)
            problem = str(exc)
        except Exception as exc:
            self.edge.failed("gap-fill scan", exc)
            problem = type(exc).__name__
        self.metrics.incr("gapfill.errors")
        log.warning("gap-fill scan failed, retrying in %.0fs: %s", self.RETRY_S, problem[:300])
        return None

    def _scan(self, stream: str) -> int:
        now = self.clock.now()
        cursor = self.cursor_getter()
        poisoned = False
        if cursor is not None and cursor > now + MATCH_TS_MAX_SKEW_S:
            # Written by a build that did not check timestamps: followed, it would hide every later fill.
            self.edge.refused(BadInput.FUTURE_TIMESTAMP.value, f"durable cursor {cursor - now:.0f}s in the future")
            cursor, poisoned = None, True
        # Never less than a signal's age back: fills a killed process had admitted but not yet decided are read again.
        start = min(cursor, now - self.cfg.copy.max_signal_age_s) if cursor is not None \
            else now - self.cfg.copy.max_signal_age_s
        since = start - self.cfg.feeds.gap_fill_overlap_s
        found, newest, page_cursor = 0, cursor or (start if poisoned else 0.0), ""
        wallet = self.cfg.copy.source_wallet.lower()
        for _ in range(50):
            params: dict[str, str | int] = {"user": self.cfg.copy.source_wallet, "taker_only": "false",
                      "limit": self.cfg.feeds.gap_fill_page_limit, "_": self.clock.now_ns()}
            if page_cursor:
                params["cursor"] = page_cursor
            resp = self.http.get("/v2/trades", params=params)
            resp.raise_for_status()
            page = parse_trades_page(resp.content, self.clock.now_ns())
            for refused in page.refused:
                self.edge.refused(refused.reason, refused.detail)
            oldest_on_page = None
            for fill in page.fills:
                try:
                    check_match_ts(fill.match_ts, self.clock.now())
                except MalformedMessage as exc:
                    self.edge.malformed(exc)
                    continue
                oldest_on_page = fill.match_ts if oldest_on_page is None else min(oldest_on_page, fill.match_ts)
                if fill.match_ts < since or fill.wallet != wallet:
                    continue
                newest = max(newest, fill.match_ts)
                # A row met twice in one scan (pages shifting under the cursor) counts once on this stream.
                admitted = self.detection.sight(fill, stream, frame_id=f"{fill.content_key}@{fill.match_ts}")
                if admitted is not None:
                    found += 1
                    self.on_fill(admitted)
            page_cursor = page.next_cursor
            if not page.has_more or not page_cursor or (oldest_on_page is not None and oldest_on_page < since):
                break
        if newest:
            self.cursor_setter(min(newest, now))
        self.recovered += found
        if found:
            self.metrics.incr("gapfill.recovered", found)
            log.info("gap-fill recovered %d fills", found)
        return found
