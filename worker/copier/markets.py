"""Market catalog: Gamma metadata (tick, min size, neg-risk, end time, exchange version) held in memory.

The current and next 15-minute windows of every listed series are fetched before their trades arrive, so the hot
path only does a dict lookup. A fill on a market we have not seen is resolved once by condition id (cold path).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime

import httpx

from copier.config import Config
from copier.errors import MalformedMessage
from copier.types import MarketMeta

log = logging.getLogger("copier.markets")


def _ts(text) -> float:
    if not text:
        return 0.0
    if isinstance(text, (int, float)):
        return float(text)
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def _json_list(value, name: str) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise MalformedMessage(f"gamma market: {name} is not a JSON list") from None
        if isinstance(parsed, list):
            return parsed
    raise MalformedMessage(f"gamma market: {name} is not a list")


def parse_gamma_market(m: dict, event: dict | None = None) -> MarketMeta:
    """A Gamma market object (optionally with its event) -> MarketMeta. Raises MalformedMessage."""
    if not isinstance(m, dict) or not m.get("conditionId"):
        raise MalformedMessage("gamma market: missing conditionId")
    version = str(m.get("version") or "v1")
    ids = m.get("positionIds") if version == "v2" and m.get("positionIds") else m.get("clobTokenIds")
    token_ids = tuple(str(t) for t in _json_list(ids, "clobTokenIds"))
    outcomes = tuple(str(o) for o in _json_list(m.get("outcomes"), "outcomes"))
    if len(token_ids) != len(outcomes) or not token_ids:
        raise MalformedMessage("gamma market: clobTokenIds and outcomes differ in length")
    fee = m.get("feeSchedule") or {}
    try:
        tick = float(m.get("orderPriceMinTickSize") or 0.01)
        min_size = float(m.get("orderMinSize") or 0)
        end_ts = _ts(m.get("endDate") or (event or {}).get("endDate"))
        start_ts = _ts(m.get("eventStartTime") or (event or {}).get("startTime"))
    except (TypeError, ValueError):
        raise MalformedMessage("gamma market: bad tick, min size or dates") from None
    accepting = bool(m.get("acceptingOrders", True)) and not bool(m.get("closed", False))
    return MarketMeta(
        condition_id=str(m["conditionId"]).lower(), token_ids=token_ids, outcomes=outcomes, tick_size=tick,
        min_size=min_size, neg_risk=bool(m.get("negRisk", False)), end_ts=end_ts, start_ts=start_ts,
        exchange_version=3 if version == "v2" else 2, slug=str(m.get("slug", "")),
        event_slug=str((event or {}).get("slug", "")), fee_rate=float(fee.get("rate", 0.0) or 0.0),
        fee_exponent=float(fee.get("exponent", 1.0) or 1.0), accepting_orders=accepting)


def markets_from_gamma(doc) -> list[MarketMeta]:
    """Any Gamma document (event, market, or a list of either) -> its markets."""
    items = doc if isinstance(doc, list) else [doc]
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("markets"), list):
            out += [parse_gamma_market(m, item) for m in item["markets"]]
        else:
            out.append(parse_gamma_market(item))
    return out


class MarketCatalog:
    def __init__(self, cfg: Config, *, clock, http: httpx.Client | None = None, metrics=None):
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self._http = http or httpx.Client(base_url=cfg.endpoints.gamma, timeout=5.0)
        self._by_asset: dict[str, MarketMeta] = {}
        self._by_condition: dict[str, MarketMeta] = {}
        self._fetched_slugs: set[str] = set()

    def add(self, meta: MarketMeta) -> None:
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

    def warm(self) -> int:
        """Fetch every wanted window not yet known; returns how many markets were added. Never raises."""
        added = 0
        for slug in self.wanted_slugs(self.clock.now()):
            if slug in self._fetched_slugs:
                continue
            try:
                resp = self._http.get(f"/events/slug/{slug}")
                if resp.status_code == 404:
                    continue
                resp.raise_for_status()
                for meta in markets_from_gamma(resp.json()):
                    self.add(meta)
                    added += 1
                self._fetched_slugs.add(slug)
            except (httpx.HTTPError, ValueError, MalformedMessage) as exc:
                self._count("markets.fetch_errors")
                log.warning("gamma %s: %s", slug, exc)
        return added

    def lookup(self, condition_id: str, asset: str) -> MarketMeta | None:
        """Cold path for a market outside the warmed windows: one Gamma query by condition id."""
        meta = self._by_asset.get(asset)
        if meta is not None:
            return meta
        try:
            resp = self._http.get("/markets", params={"condition_ids": condition_id})
            resp.raise_for_status()
            for m in markets_from_gamma(resp.json()):
                self.add(m)
        except (httpx.HTTPError, ValueError, MalformedMessage) as exc:
            self._count("markets.fetch_errors")
            log.warning("gamma lookup %s: %s", condition_id, exc)
        self._count("markets.cold_lookups")
        return self._by_asset.get(asset)

    def run(self, stopping) -> None:
        while not stopping.wait(self.cfg.markets.refresh_s):
            self.warm()
            self._forget_expired(self.clock.now() - 3600)

    def _forget_expired(self, before: float) -> None:
        for cid, meta in list(self._by_condition.items()):
            if meta.end_ts and meta.end_ts < before:
                del self._by_condition[cid]
                for t in meta.token_ids:
                    self._by_asset.pop(t, None)

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.incr(name)
