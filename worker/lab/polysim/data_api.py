"""Data API (`https://data-api.polymarket.com`): /trades and /activity (v1, camelCase), /v2/trades and
/v2/activity (snake_case, cursor pagination), /positions.

Indexing like the real one: the trade list is recomputed every `data_api_refresh_s`, so a row becomes visible
`data_api_user_delay_s` after the match on average for ?user= queries and `data_api_market_delay_s` otherwise.
`takerOnly`/`taker_only` default to true (maker fills hidden unless asked for). CloudFront in front caches each
URL for `data_api_cache_s` (`Cache-Control: public, max-age=300`): without a changing dummy parameter a poller
keeps getting the same stale answer. v2 errors are `{error, code, parameter, retryable, trace_id}`.
"""
from __future__ import annotations

import base64
import math
import random
import re
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from polysim.events import MATCH, Hub, Match, SimMarket
from polysim.exchange import Exchange, Position
from polysim.faults import Faults
from polysim.scenario import Feeds
from polysim.views import best_prices, iso, profile

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
ICON = "https://polymarket-upload.s3.us-east-2.amazonaws.com/{}+fullsize.png"


@dataclass(frozen=True)
class Row:
    seq: int
    wallet: str
    role: str
    side: str
    token_id: str
    condition_id: str
    size: float
    price: float
    match_time: float
    tx: str
    slug: str
    event_slug: str
    title: str
    outcome: str
    outcome_index: int
    asset: str

    @property
    def timestamp(self) -> int:
        return int(self.match_time)


class BadParam(Exception):
    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter, self.message = parameter, message


def _flag(q, name: str, default: bool) -> bool:
    v = q.get(name)
    return default if v is None else v.lower() in ("true", "1")


def _int(q, name: str, default: int, lo: int, hi: int) -> int:
    try:
        v = int(q.get(name, default))
    except ValueError:
        raise BadParam(name, f"{name} must be an integer") from None
    if not lo <= v <= hi:
        raise BadParam(name, f"{name} must be between {lo} and {hi}")
    return v


class DataApi:
    def __init__(self, hub: Hub, ex: Exchange, cfg: Feeds, *, rng: random.Random, now: Callable[[], float],
                 faults: Faults):
        self.ex = ex
        self.cfg = cfg
        self.rng = rng
        self.now = now
        self.faults = faults
        self.by_wallet: dict[str, deque[Row]] = {}
        self.recent: deque[Row] = deque(maxlen=100_000)
        self._seq = 0
        self._cache: OrderedDict[str, tuple[float, int, bytes]] = OrderedDict()
        hub.subscribe(MATCH, self._on_match)

    def _on_match(self, match: Match) -> None:
        if match.will_fail:
            return
        m = match.market
        for f in match.fills():
            self._seq += 1
            unlabeled = self.cfg.rtds_unlabeled_p and self.rng.random() < self.cfg.rtds_unlabeled_p
            row = Row(self._seq, f.wallet, f.role, f.side, f.token_id, m.condition_id, round(f.size, 6),
                      round(f.price, 6), match.match_time, match.tx_hash, m.slug, m.event_slug, m.title, f.outcome,
                      999 if unlabeled else f.outcome_index, m.asset_symbol)
            self.by_wallet.setdefault(f.wallet, deque(maxlen=20_000)).append(row)
            self.recent.append(row)

    # ---- indexing ----------------------------------------------------------------------------------------
    def _cutoff(self, delay: float) -> float:
        """Newest match time visible now: the list is recomputed every `period`, `delay` behind on average."""
        period = min(self.cfg.data_api_refresh_s, delay) or 1e-9
        return math.floor(self.now() / period) * period - (delay - period / 2)

    def _rows(self, q, *, user_key: str, taker_key: str | None, default_taker: bool) -> list[Row]:
        user = q.get(user_key, "")
        if user and not _ADDRESS.match(user):
            raise BadParam(user_key, f"{user_key} must be a 0x-prefixed 40-hex-digit address")
        markets = {c.lower() for v in q.getall("market", []) + q.getall("condition", []) for c in v.split(",") if c}
        cutoff = self._cutoff(self.cfg.data_api_user_delay_s if user else self.cfg.data_api_market_delay_s)
        taker_only = _flag(q, taker_key, default_taker) if taker_key else False
        side = q.get("side", "").upper()
        source = self.by_wallet.get(user.lower(), ()) if user else self.recent
        out = []
        for r in reversed(source):
            if (r.match_time > cutoff or (taker_only and r.role != "taker")
                    or (markets and r.condition_id not in markets)):
                continue
            if side and r.side != side:
                continue
            out.append(r)
        return out

    # ---- v1 ----------------------------------------------------------------------------------------------
    def _v1_common(self, r: Row) -> dict:
        return {"proxyWallet": r.wallet, "side": r.side, "asset": r.token_id, "conditionId": r.condition_id,
                "size": r.size, "price": r.price, "timestamp": r.timestamp, "title": r.title, "slug": r.slug,
                "icon": ICON.format(r.asset.upper()), "eventSlug": r.event_slug, "outcome": r.outcome,
                "outcomeIndex": r.outcome_index, **profile(r.wallet), "bio": "", "profileImage": "",
                "profileImageOptimized": "", "transactionHash": r.tx}

    async def trades_v1(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            rows = self._rows(q, user_key="user", taker_key="takerOnly", default_taker=True)
            limit, offset = _int(q, "limit", 100, 0, 10_000), _int(q, "offset", 0, 0, 10_000)
        except BadParam as e:
            return web.json_response({"error": e.message}, status=400)
        return web.json_response([self._v1_common(r) for r in rows[offset:offset + limit]])

    async def activity_v1(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            if not q.get("user"):
                raise BadParam("user", "user is required")
            rows = self._rows(q, user_key="user", taker_key=None, default_taker=False)
            limit, offset = _int(q, "limit", 100, 0, 500), _int(q, "offset", 0, 0, 10_000)
        except BadParam as e:
            return web.json_response({"error": e.message}, status=400)
        types = {t.strip().upper() for v in q.getall("type", []) for t in v.split(",") if t.strip()}
        if types and "TRADE" not in types:
            rows = []
        try:
            start, end = int(q.get("start", 0)), int(q.get("end", 2**62))
        except ValueError:
            return web.json_response({"error": "start and end must be unix seconds"}, status=400)
        rows = [r for r in rows if start <= r.timestamp <= end]
        if q.get("sortDirection", "DESC").upper() == "ASC":
            rows.reverse()
        return web.json_response([self._activity_v1(r) for r in rows[offset:offset + limit]])

    def _activity_v1(self, r: Row) -> dict:
        c = self._v1_common(r)
        return {"proxyWallet": r.wallet, "timestamp": r.timestamp, "conditionId": r.condition_id, "type": "TRADE",
                "size": r.size, "usdcSize": round(r.size * r.price, 6), "transactionHash": r.tx, "price": r.price,
                "asset": r.token_id, "side": r.side, "title": r.title, "slug": r.slug, "eventSlug": r.event_slug,
                "outcome": r.outcome, "outcomeIndex": r.outcome_index, "icon": c["icon"], "name": c["name"],
                "pseudonym": c["pseudonym"], "bio": "", "profileImage": "", "profileImageOptimized": ""}

    # ---- v2 ----------------------------------------------------------------------------------------------
    @staticmethod
    def v2_error(status: int, parameter: str | None, message: str, code: str = "invalid_request",
                 retryable: bool = False, headers=None) -> web.Response:
        doc = {"error": message, "code": code, "retryable": retryable, "trace_id": uuid.uuid4().hex}
        if parameter:
            doc["parameter"] = parameter
        return web.json_response(doc, status=status, headers=headers)

    def _page(self, q, rows: list[Row], max_limit: int) -> tuple[list[Row], dict]:
        limit = _int(q, "limit", 100, 1, max_limit)
        if q.get("cursor"):
            try:
                after = int(base64.urlsafe_b64decode(q["cursor"].encode()).decode())
            except (ValueError, UnicodeDecodeError):
                raise BadParam("cursor", "cursor is invalid") from None
            rows = [r for r in rows if r.seq < after]
        page = rows[:limit]
        more = len(rows) > limit
        cursor = base64.urlsafe_b64encode(str(page[-1].seq).encode()).decode() if more and page else None
        return page, {"has_more": more, "limit": limit, "next_cursor": cursor, "offset": 0}

    async def trades_v2(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            rows = self._rows(q, user_key="user", taker_key="taker_only", default_taker=True)
            page, pagination = self._page(q, rows, 1000)
        except BadParam as e:
            return self.v2_error(400, e.parameter, e.message)
        return web.json_response({"data": [self._v2_trade(r) for r in page], "pagination": pagination})

    def _v2_trade(self, r: Row) -> dict:
        p = profile(r.wallet)
        return {"proxy_wallet": r.wallet, "side": r.side, "token_id": r.token_id, "condition_id": r.condition_id,
                "size": r.size, "price": r.price, "timestamp": r.timestamp, "title": r.title, "slug": r.slug,
                "icon": ICON.format(r.asset.upper()), "event_slug": r.event_slug, "outcome": r.outcome,
                "outcome_index": r.outcome_index, "name": p["name"], "pseudonym": p["pseudonym"], "bio": "",
                "profile_image": "", "profile_image_optimized": "", "transaction_hash": r.tx}

    async def activity_v2(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            if not q.get("user"):
                raise BadParam("user", "user is required")
            rows = self._rows(q, user_key="user", taker_key=None, default_taker=False)
            page, pagination = self._page(q, rows, 500)
        except BadParam as e:
            return self.v2_error(400, e.parameter, e.message)
        data = []
        for r in page:
            t = self._v2_trade(r)
            data.append({"proxy_wallet": r.wallet, "timestamp": r.timestamp, "condition_id": r.condition_id,
                         "type": "TRADE", "size": r.size, "usdc_size": round(r.size * r.price, 6),
                         "transaction_hash": r.tx, "price": r.price, "token_id": r.token_id, "side": r.side,
                         "outcome_index": r.outcome_index, "title": r.title, "slug": r.slug, "icon": t["icon"],
                         "event_slug": r.event_slug, "outcome": r.outcome, "name": t["name"],
                         "pseudonym": t["pseudonym"], "bio": "", "profile_image": "", "profile_image_optimized": ""})
        return web.json_response({"data": data, "pagination": pagination})

    # ---- positions ---------------------------------------------------------------------------------------
    def _held(self, user: str) -> list[tuple[str, Position, SimMarket, int, float]]:
        """(token, position, market, outcome index, current price) of every position of a wallet still listed.
        The price is the book's mid while the market trades, its last trade once closed, and 1 / 0 once the index
        has seen the resolution (`positions_redeemable_lag_s` of market time after it)."""
        w = self.ex.wallets.get(user.lower())
        out = []
        for token, p in (w.positions.items() if w else ()):
            m = self.ex.by_token.get(token)
            if m is None:
                continue
            idx = m.token_ids.index(token)
            if self.resolved(m):
                cur = 1.0 if idx == m.winner else 0.0
            elif self.ex.accepting(m, self.now()):
                bid, ask = best_prices(self.ex, token)
                cur = round((float(bid) + float(ask)) / 2, 4)
            else:
                book = self.ex.books.get(m.condition_id)
                cur = round(book.last_trade_price[idx], 4) if book else 0.5
            out.append((token, p, m, idx, cur))
        return out

    def resolved(self, m: SimMarket) -> bool:
        """The positions index has seen the market's resolution (it lags the chain by about a minute)."""
        lag = self.cfg.positions_redeemable_lag_s * self.ex.window_s / 900.0
        return m.winner is not None and self.now() >= m.resolved_at + lag

    def _redeemable(self, m: SimMarket, idx: int, p: Position) -> bool:
        """Winning tokens still held once the index saw the resolution (a losing side pays nothing: not listed as
        redeemable; UNVERIFIED for the live index)."""
        return p.size > 1e-9 and self.resolved(m) and idx == m.winner

    def _mergeable(self, user: str, m: SimMarket) -> bool:
        """Both outcomes held in an unresolved market: full sets a merge turns back into pUSD."""
        w = self.ex.wallets.get(user.lower())
        return w is not None and m.winner is None and min(w.held(t) for t in m.token_ids) > 1e-9

    async def positions(self, request: web.Request) -> web.Response:
        q = request.query
        user = q.get("user", "")
        if not _ADDRESS.match(user):
            return web.json_response({"error": "user must be a 0x-prefixed 40-hex-digit address"}, status=400)
        try:
            threshold = float(q.get("sizeThreshold", 1))
            if not math.isfinite(threshold):
                raise ValueError
            limit, offset = _int(q, "limit", 100, 0, 500), _int(q, "offset", 0, 0, 10_000)
        except (ValueError, BadParam):
            return web.json_response({"error": "invalid sizeThreshold, limit or offset"}, status=400)
        markets = {c.lower() for v in q.getall("market", []) for c in v.split(",") if c}
        flags = {k: q[k].lower() == "true" for k in ("redeemable", "mergeable") if k in q}
        out = []
        for token, p, m, idx, cur in self._held(user):
            if p.size < max(threshold, 1e-9) or (markets and m.condition_id not in markets):
                continue
            redeemable, mergeable = self._redeemable(m, idx, p), self._mergeable(user, m)
            if flags.get("redeemable", redeemable) != redeemable or flags.get("mergeable", mergeable) != mergeable:
                continue
            avg = p.cost / p.size if p.size else 0.0
            value = p.size * cur
            fees = p.fees * p.size / p.bought if p.bought > 1e-9 else 0.0
            out.append({"proxyWallet": user.lower(), "asset": token, "conditionId": m.condition_id,
                        "size": p.size, "avgPrice": round(avg, 6), "initialValue": round(p.cost, 6),
                        "grossInitialValue": round(p.cost + fees, 6),
                        "currentValue": round(value, 6), "cashPnl": round(value - p.cost, 6),
                        "percentPnl": round(100 * (value - p.cost) / p.cost, 4) if p.cost else 0.0,
                        "totalBought": p.bought, "realizedPnl": p.realized,
                        "percentRealizedPnl": round(100 * p.realized / p.cost, 4) if p.cost else 0.0,
                        "curPrice": cur, "redeemable": redeemable, "mergeable": mergeable, "title": m.title,
                        "slug": m.slug, "icon": ICON.format(m.asset_symbol.upper()), "eventSlug": m.event_slug,
                        "outcome": m.outcomes[idx], "outcomeIndex": idx, "oppositeOutcome": m.outcomes[1 - idx],
                        "oppositeAsset": m.token_ids[1 - idx],
                        "endDate": iso(m.window_end)[:10], "negativeRisk": m.neg_risk})
        return web.json_response(out[offset:offset + limit])

    async def positions_v2(self, request: web.Request) -> web.Response:
        """/v2/positions (snake_case, cursor pagination; the official SDK's Position model). `status` OPEN (tokens
        held: the superset), REDEEMABLE (winning tokens held once the index saw the resolution) or CLOSED (nothing
        held: sold, merged or redeemed); without `status` every held one."""
        q = request.query
        user = q.get("user", "")
        if not _ADDRESS.match(user):
            return self.v2_error(400, "user", "user must be a 0x-prefixed 40-hex-digit address")
        wanted = {v.strip().upper() for raw in q.getall("status", []) for v in raw.split(",") if v.strip()}
        if wanted - {"OPEN", "REDEEMABLE", "CLOSED"}:
            return self.v2_error(400, "status", "status must be OPEN, REDEEMABLE or CLOSED")
        cids = {c.lower() for raw in q.getall("condition_id", []) for c in raw.split(",") if c}
        rows = []
        for n, (token, p, m, idx, cur) in enumerate(self._held(user)):
            status = "CLOSED" if p.size <= 1e-9 else "REDEEMABLE" if self._redeemable(m, idx, p) else "OPEN"
            if (wanted and status not in wanted) or (not wanted and status == "CLOSED") or \
                    (cids and m.condition_id not in cids):
                continue
            rows.append((n, self._position_v2(user, token, p, m, idx, cur, status, self._mergeable(user, m))))
        try:
            limit = _int(q, "limit", 100, 1, 1000)
            after = int(base64.urlsafe_b64decode(q["cursor"]).decode()) if q.get("cursor") else -1
        except (BadParam, ValueError, UnicodeDecodeError):
            return self.v2_error(400, "cursor", "limit or cursor is invalid")
        rows = [r for r in rows if r[0] > after]
        page, more = rows[:limit], len(rows) > limit
        cursor = base64.urlsafe_b64encode(str(page[-1][0]).encode()).decode() if more and page else None
        return web.json_response({"data": [doc for _, doc in page],
                                  "pagination": {"has_more": more, "limit": limit, "next_cursor": cursor}})

    @staticmethod
    def _position_v2(user: str, token: str, p: Position, m: SimMarket, idx: int, cur: float, status: str,
                     mergeable: bool) -> dict:
        avg = p.cost / p.size if p.size > 1e-9 else 0.0
        value = p.size * cur
        unrealized = value - p.cost
        prof = profile(user)
        return {"proxy_wallet": user.lower(), "token_id": token, "condition_id": m.condition_id,
                "current_size": p.size, "avg_price": round(avg, 6), "entry_cost_usdc": round(p.cost, 6),
                "entry_fees_usdc": round(p.fees, 6), "total_cost_usdc": round(p.cost + p.fees, 6),
                "current_price": cur, "current_value": round(value, 6), "total_size": p.bought,
                "realized_pnl": p.realized, "unrealized_pnl": round(unrealized, 6),
                "total_pnl": round(unrealized + p.realized, 6),
                "percent_pnl": round(100 * unrealized / p.cost, 4) if p.cost else 0.0,
                "percent_realized_pnl": round(100 * p.realized / p.cost, 4) if p.cost else 0.0,
                "status": status, "redeemable": status == "REDEEMABLE", "mergeable": mergeable,
                "negative_risk": m.neg_risk, "archived": False, "verified": True, "title": m.title, "slug": m.slug,
                "icon": ICON.format(m.asset_symbol.upper()), "event_slug": m.event_slug, "outcome": m.outcomes[idx],
                "opposite_outcome": m.outcomes[1 - idx], "name": prof["name"], "profile_image": "",
                "event_id": m.event_id, "outcome_index": idx, "opposite_token_id": m.token_ids[1 - idx],
                "end_date": iso(m.window_end)[:10], "last_event_at": int(p.last_at),
                "first_entry_at": int(p.first_at)}

    async def prices_history_v2(self, request: web.Request) -> web.Response:
        """/v2/prices-history?token_id=&(interval | start[&end] | as_of)[&bucket_seconds]: the token's trade prices
        (each fill in that token's own terms), the last one per bucket; `as_of` gives the exact last tick."""
        q = request.query
        token = q.get("token_id", "")
        if not token:
            return self.v2_error(400, "token_id", "token_id is required")
        now = int(self.now())
        try:
            if "as_of" in q:
                start, end, bucket = 0, int(q["as_of"]), 0
            else:
                span = {"1m": 60, "1h": 3600, "6h": 6 * 3600, "1d": 86400, "1w": 7 * 86400}
                interval = q.get("interval")
                if interval is not None and interval not in (*span, "max", "all"):
                    raise BadParam("interval", "interval is invalid")
                start = now - span[interval] if interval in span else 0 if interval else int(q["start"])
                end = int(q.get("end", now))
                bucket = _int(q, "bucket_seconds", 60, 60, 86400)
            limit = _int(q, "limit", 1000, 1, 10_000)
        except BadParam as e:
            return self.v2_error(400, e.parameter, e.message)
        except (KeyError, ValueError):
            return self.v2_error(400, "start", "one of interval, start or as_of is required")
        points: dict[int, float] = {}
        for r in self.recent:
            if r.token_id == token and start <= r.timestamp <= end:
                points[r.timestamp - r.timestamp % bucket if bucket else 0] = r.price
        rows = [{"timestamp": t if bucket else end, "price": p, "resolution_seconds": bucket}
                for t, p in sorted(points.items())][-limit:]
        return web.json_response({"data": rows, "pagination": {"has_more": False, "limit": limit,
                                                                "next_cursor": None}})

    # ---- CloudFront --------------------------------------------------------------------------------------
    @web.middleware
    async def edge(self, request: web.Request, handler) -> web.StreamResponse:
        f = self.faults.take("data_api_5xx")
        if f is not None:
            retry = str(f.get("retry_after", 1))
            if request.path.startswith("/v2/"):
                return self.v2_error(503, None, "service temporarily unavailable", "unavailable", True,
                                     headers={"Retry-After": retry})
            return web.json_response({"error": "service temporarily unavailable"}, status=503,
                                     headers={"Retry-After": retry})
        if self.faults.take("data_api_garbage") is not None:
            # A truncated body behind a 200, as a broken proxy answers: the client must count it and go on.
            return web.Response(status=200, text='{"data":[{"proxy_wallet":', content_type="application/json")
        max_age = self.cfg.data_api_cache_s
        now = self.now()
        while self._cache and (len(self._cache) > 50_000 or next(iter(self._cache.values()))[0] < now - max_age):
            self._cache.popitem(last=False)
        key = request.path_qs
        hit = self._cache.get(key) if max_age > 0 else None
        if hit is not None:
            return web.Response(status=hit[1], body=hit[2], content_type="application/json",
                                 headers={"Cache-Control": f"public, max-age={int(max_age)}",
                                          "Age": str(int(now - hit[0])), "X-Cache": "Hit from cloudfront"})
        resp = await handler(request)
        if max_age > 0 and resp.status == 200 and isinstance(resp, web.Response) \
                and isinstance(resp.body, bytes | bytearray):
            self._cache[key] = (now, resp.status, bytes(resp.body))
            resp.headers["Cache-Control"] = f"public, max-age={int(max_age)}"
            resp.headers["X-Cache"] = "Miss from cloudfront"
        return resp


def data_app(api: DataApi) -> web.Application:
    app = web.Application(middlewares=[api.edge])
    app.router.add_get("/trades", api.trades_v1)
    app.router.add_get("/activity", api.activity_v1)
    app.router.add_get("/v2/trades", api.trades_v2)
    app.router.add_get("/v2/activity", api.activity_v2)
    app.router.add_get("/positions", api.positions)
    app.router.add_get("/v2/positions", api.positions_v2)
    app.router.add_get("/v2/prices-history", api.prices_history_v2)
    return app

