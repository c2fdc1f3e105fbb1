"""Market catalog: Gamma metadata (tick, min size, neg-risk, end time, exchange version) held in memory.

The current and next 15-minute windows of every listed series are fetched before their trades arrive, so the hot
path only does a dict lookup. A fill on a market we have not seen is resolved once by condition id (cold path).
The tick size follows the venue, not Gamma: the market websocket's `tick_size_change` updates it, and
`fresh_tick` re-reads it from the CLOB (`/tick-size`) where one tick matters most (prices near 0 and 1).
A Gamma answer that does not parse is counted and skipped market by market; nothing here raises into the runtime.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import httpx

from copier.alerts import EdgeErrors
from copier.config import Config
from copier.errors import MalformedMessage
from copier.schemas import parse_gamma, parse_tick_size
from copier.types import MarketMeta, MarketResolved, TickSizeChange

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.ports import Alerts, Metrics
    from copier.schemas import Untrusted

log = logging.getLogger("copier.markets")
FORGET_AFTER_WINDOWS = 4        # a market that ended this many windows ago (an hour live) takes no more fills we
                                #   could act on
TICK_TIMEOUT_S = 2.0        # /tick-size is asked on the pricing path: an answer later than this is no answer

def markets_from_gamma(doc: Untrusted) -> list[MarketMeta]:
    """Any Gamma document (event, market, or a list of either) -> its markets, all or nothing (raises
    MalformedMessage for the first bad market)."""
    answer = parse_gamma(doc)
    if answer.refused:
        raise MalformedMessage(answer.refused[0].detail, answer.refused[0].reason)
    return list(answer.markets)


class MarketCatalog:
    def __init__(self, cfg: Config, *, clock: Clock, http: httpx.Client | None = None, metrics: Metrics | None = None,
                 alerts: Alerts | None = None, clob_http: httpx.Client | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.edge = EdgeErrors("gamma", metrics=metrics, alerts=alerts, clock=clock, logger=log)
        self._http = http or httpx.Client(base_url=cfg.endpoints.gamma, timeout=5.0)
        self._clob = clob_http or httpx.Client(base_url=cfg.endpoints.clob, timeout=TICK_TIMEOUT_S)
        self._by_asset: dict[str, MarketMeta] = {}
        self._by_condition: dict[str, MarketMeta] = {}
        self._fetched_slugs: set[str] = set()
        # What the venue said outranks Gamma's copy, which is refreshed later and may be stale.
        self._venue_ticks: dict[str, float] = {}        # condition id -> tick
        self._resolved: set[str] = set()                # condition ids

    def add(self, meta: MarketMeta) -> None:
        tick = self._venue_ticks.get(meta.condition_id)
        if tick is not None and tick != meta.tick_size:
            meta = replace(meta, tick_size=tick)
        if meta.condition_id in self._resolved and meta.accepting_orders:
            meta = replace(meta, accepting_orders=False)
        self._by_condition[meta.condition_id] = meta
        for t in meta.token_ids:
            self._by_asset[t] = meta

    def by_asset(self, asset: str) -> MarketMeta | None:
        return self._by_asset.get(asset)

    def assets(self) -> list[str]:
        return list(self._by_asset)

    def listed(self, slug: str) -> bool:
        return any(slug.startswith(p) for p in self.cfg.markets.slug_prefixes)

    def wanted_slugs(self, now: float) -> list[str]:
        w = self.cfg.markets.window_seconds
        start = int(now // w) * w
        return [f"{p}-{start + k * w}" for p in self.cfg.markets.slug_prefixes
                for k in range(self.cfg.markets.warm_windows_ahead + 1)]

    # ---- the venue's word on tick size and state -------------------------------------------------------------
    def update_tick(self, asset: str, tick: float) -> bool:
        """The venue's current tick for `asset`'s market (both outcomes share it); False if the market is unknown."""
        meta = self._by_asset.get(asset)
        if meta is None:
            return False
        self._venue_ticks[meta.condition_id] = tick
        if meta.tick_size != tick:
            log.info("tick size of %s: %g -> %g", meta.slug or meta.condition_id, meta.tick_size, tick)
            self.add(meta)
        return True

    def on_tick_size_change(self, event: TickSizeChange) -> None:
        """The market websocket's `tick_size_change` (BookCache's callback)."""
        if not self.update_tick(event.asset, event.new_tick):
            self._count("markets.tick_change_unknown_market")

    def fresh_tick(self, asset: str) -> float | None:
        """The tick as the CLOB serves it now (GET /tick-size?token_id=), for pricing near 0 and 1 where one tick is
        a large share of the price; the catalog follows it. None when the venue gave no usable answer (the caller
        decides: it must not price on a tick it could not confirm)."""
        try:
            resp = self._clob.get("/tick-size", params={"token_id": asset})
            if resp.status_code != 200:
                self._count("markets.tick_errors")
                log.warning("tick size of %s: HTTP %d", asset[:12], resp.status_code)
                return None
            tick = parse_tick_size(resp.content)
        except httpx.HTTPError as exc:
            self._count("markets.tick_errors")
            log.warning("tick size of %s: %s", asset[:12], exc)
            return None
        except MalformedMessage as exc:
            self._count("markets.tick_errors")
            self.edge.malformed(exc)
            return None
        except Exception as exc:
            self.edge.failed("tick size", exc)
            return None
        self.update_tick(asset, tick)
        return tick

    def on_resolved(self, event: MarketResolved) -> None:
        """The market websocket's `market_resolved`: the market takes no more orders, whatever Gamma said."""
        self._resolved.add(event.market)
        meta = self._by_condition.get(event.market)
        if meta is not None:
            self.add(meta)

    # ---- Gamma -----------------------------------------------------------------------------------------------
    def warm(self) -> int:
        """Fetch every wanted window not yet known; returns how many markets were added. Never raises."""
        added = 0
        wanted = self.wanted_slugs(self.clock.now())
        for slug in wanted:
            if slug in self._fetched_slugs:
                continue
            try:
                added += self._fetch(slug)
            except Exception as exc:
                self.edge.failed(f"gamma window {slug}", exc)
        self._fetched_slugs &= set(wanted)     # a window's slug is not wanted again once it has passed
        return added

    def _fetch(self, slug: str) -> int:
        try:
            resp = self._http.get(f"/events/slug/{slug}")
            if resp.status_code == 404:
                return 0
            resp.raise_for_status()
            answer = parse_gamma(resp.content)
        except httpx.HTTPError as exc:
            self._count("markets.fetch_errors")
            log.warning("gamma %s: %s", slug, exc)
            return 0
        except MalformedMessage as exc:
            self._count("markets.fetch_errors")
            self.edge.malformed(exc)
            return 0
        for refused in answer.refused:
            self.edge.refused(refused.reason, f"{slug}: {refused.detail}")
        for meta in answer.markets:
            self.add(meta)
        if not answer.refused:
            self._fetched_slugs.add(slug)       # a window with a refused market is asked again next refresh
        return len(answer.markets)

    def lookup(self, condition_id: str, asset: str) -> MarketMeta | None:
        """Cold path for a market outside the warmed windows: one Gamma query by condition id. Never raises."""
        meta = self._by_asset.get(asset)
        if meta is not None:
            return meta
        try:
            resp = self._http.get("/markets", params={"condition_ids": condition_id})
            resp.raise_for_status()
            answer = parse_gamma(resp.content)
            for refused in answer.refused:
                self.edge.refused(refused.reason, f"market {condition_id[:12]}: {refused.detail}")
            for m in answer.markets:
                self.add(m)
        except httpx.HTTPError as exc:
            self._count("markets.fetch_errors")
            log.warning("gamma lookup %s: %s", condition_id, exc)
        except MalformedMessage as exc:
            self._count("markets.fetch_errors")
            self.edge.malformed(exc)
        except Exception as exc:
            self.edge.failed("gamma lookup", exc)
        self._count("markets.cold_lookups")
        return self._by_asset.get(asset)

    def refresh(self) -> int:
        """The periodic pass: warm the next windows, forget markets that ended 4 windows ago (an hour live; a week of
        windows stays bounded). Returns how many markets were added."""
        added = self.warm()
        self._forget_expired(self.clock.now() - FORGET_AFTER_WINDOWS * self.cfg.markets.window_seconds)
        return added

    def _forget_expired(self, before: float) -> None:
        for cid, meta in list(self._by_condition.items()):
            if meta.end_ts and meta.end_ts < before:
                del self._by_condition[cid]
                self._venue_ticks.pop(cid, None)
                self._resolved.discard(cid)
                for t in meta.token_ids:
                    self._by_asset.pop(t, None)

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.incr(name)
