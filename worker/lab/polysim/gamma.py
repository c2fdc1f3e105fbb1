"""Gamma (`https://gamma-api.polymarket.com`): events and markets of the rotating crypto Up/Down windows.

Slugs `{asset}-updown-15m-{window start unix}`; `clobTokenIds`, `outcomes`, `outcomePrices` are JSON-encoded
strings; `version` is "v1" (CTF, CLOB V2 exchange) or "v2" (Protocol V2, ExchangeV3, plus `positionIds`).
`/markets` hides closed markets unless `closed=true` (the default since 2026-04-09); list limits cap at 100.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Callable

from aiohttp import web

from polysim.events import SimMarket
from polysim.exchange import NAMES, Exchange
from polysim.market_ws import description
from polysim.views import best_prices, iso

ICON = "https://polymarket-upload.s3.us-east-2.amazonaws.com/{}+fullsize.png"
# Series ids: 10192 is the BTC 15-minute series id bots use; the others are the simulator's own stable numbers.
SERIES_ID = {"btc": "10192", "eth": "10191", "sol": "10423", "xrp": "10422"}
# Tag ids are the simulator's own stable numbers (the official SDK only needs an id on every tag).
TAG_ID = {"up-or-down": "102127", "15M": "102467", "bitcoin": "235", "ethereum": "39", "solana": "818", "xrp": "101267"}
KEYSET_MAX = 100


class Gamma:
    def __init__(self, ex: Exchange, *, now: Callable[[], float]):
        self.ex = ex
        self.now = now

    def market(self, m: SimMarket) -> dict:
        bid, ask = best_prices(self.ex, m.token_ids[0]) if m.condition_id in self.ex.books else ("0", "1")
        last = self.ex.books[m.condition_id].last_trade_price[0] if m.condition_id in self.ex.books else 0.5
        if m.winner is not None:
            prices = ["1", "0"] if m.winner == 0 else ["0", "1"]
        else:
            mid = round((float(bid) + float(ask)) / 2, 4)
            prices = [str(mid), str(round(1 - mid, 4))]
        accepting = self.ex.accepting(m, self.now())
        doc = {"id": m.market_id, "question": m.title, "conditionId": m.condition_id, "slug": m.slug,
               "questionID": m.question_id, "resolutionSource": "https://data.chain.link/streams/"
                                                                 f"{m.asset_symbol}-usd",
               "endDate": iso(m.window_end), "startDate": iso(m.created_at), "eventStartTime": iso(m.window_start),
               "description": description(m), "image": ICON.format(m.asset_symbol.upper()),
               "icon": ICON.format(m.asset_symbol.upper()),
               "outcomes": json.dumps(m.outcomes), "outcomePrices": json.dumps(prices),
               "clobTokenIds": json.dumps(m.token_ids), "active": m.state in ("created", "trading"),
               "closed": m.state in ("closed", "resolved"), "acceptingOrders": accepting,
               "acceptingOrdersTimestamp": iso(m.created_at), "enableOrderBook": True,
               "orderPriceMinTickSize": m.tick_size, "orderMinSize": m.min_size, "negRisk": m.neg_risk,
               "feesEnabled": True, "feeSchedule": {"rate": m.fee_rate, "exponent": m.fee_exponent,
                                                    "takerOnly": True, "rebateRate": 0.2},
               "makerBaseFee": m.base_fee_bps, "takerBaseFee": m.base_fee_bps,
               "bestBid": float(bid), "bestAsk": float(ask), "lastTradePrice": last,
               "liquidityNum": 0.0, "volumeNum": 0.0,
               "umaResolutionStatus": "resolved" if m.winner is not None else "", "version": m.version}
        if m.version == "v2":
            doc["positionIds"] = list(m.token_ids)
        return doc

    def event(self, m: SimMarket) -> dict:
        asset = m.asset_symbol
        return {"id": m.event_id, "ticker": m.event_slug, "slug": m.event_slug, "title": m.title,
                "description": description(m), "resolutionSource": f"https://data.chain.link/streams/{asset}-usd",
                "startDate": iso(m.created_at), "creationDate": iso(m.created_at), "startTime": iso(m.window_start),
                "endDate": iso(m.window_end), "image": ICON.format(asset.upper()), "icon": ICON.format(asset.upper()),
                "active": m.state in ("created", "trading"), "closed": m.state in ("closed", "resolved"),
                "series": [{"id": SERIES_ID[asset], "ticker": f"{asset}-up-or-down-15m",
                            "slug": f"{asset}-up-or-down-15m", "title": f"{asset.upper()} Up or Down 15m",
                            "recurrence": "15m"}],
                "tags": [{"id": TAG_ID[slug], "label": label, "slug": slug}
                         for label, slug in (("Up or Down", "up-or-down"), (NAMES[asset], NAMES[asset].lower()),
                                             ("15M", "15M"))],
                "markets": [self.market(m)]}

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"error": "not found"}, status=404)

    def _filter(self, q, ms: list[SimMarket], closed_default: bool | None, *, paged: bool = True) -> list[SimMarket]:
        closed = q.get("closed")
        want_closed = closed_default if closed is None else closed.lower() == "true"
        if want_closed is not None:
            ms = [m for m in ms if (m.state in ("closed", "resolved")) == want_closed]
        if q.get("active") is not None:
            active = q["active"].lower() == "true"
            ms = [m for m in ms if (m.state in ("created", "trading")) == active]
        slugs = q.getall("slug", [])
        if slugs:
            ms = [m for m in ms if m.slug in slugs]
        if not paged:
            return ms
        try:
            limit = min(int(q.get("limit", 100)), 100)
            offset = int(q.get("offset", 0))
        except ValueError:
            return []
        return ms[offset:offset + limit]

    async def events(self, request: web.Request) -> web.Response:
        ms = self._filter(request.query, list(self.ex.markets.values()), None)
        return web.json_response([self.event(m) for m in ms])

    async def event_by_slug(self, request: web.Request) -> web.Response:
        m = self.ex.markets.get(request.match_info["slug"])
        return web.json_response(self.event(m)) if m else self._not_found()

    def _selected(self, q) -> list[SimMarket]:
        ms = list(self.ex.markets.values())
        cids = {c.lower() for v in q.getall("condition_ids", []) for c in v.split(",") if c}
        if cids:
            ms = [m for m in ms if m.condition_id in cids]
        tokens = {t for v in q.getall("clob_token_ids", []) for t in v.split(",") if t}
        if tokens:
            ms = [m for m in ms if tokens & set(m.token_ids)]
        return ms

    async def markets(self, request: web.Request) -> web.Response:
        return web.json_response([self.market(m) for m in self._filter(request.query, self._selected(request.query),
                                                                        False)])

    async def market_by_slug(self, request: web.Request) -> web.Response:
        m = self.ex.markets.get(request.match_info["slug"])
        return web.json_response(self.market(m)) if m else self._not_found()

    def _by(self, attr: str, value: str) -> SimMarket | None:
        return next((m for m in self.ex.markets.values() if getattr(m, attr) == value), None)

    async def market_by_id(self, request: web.Request) -> web.Response:
        m = self._by("market_id", request.match_info["id"])
        return web.json_response(self.market(m)) if m else self._not_found()

    async def event_by_id(self, request: web.Request) -> web.Response:
        m = self._by("event_id", request.match_info["id"])
        return web.json_response(self.event(m)) if m else self._not_found()

    def _keyset(self, request: web.Request, ms: list[SimMarket], key: str, shape) -> web.Response:
        """`/events/keyset`, `/markets/keyset`: {key: [...], next_cursor} with `limit` (<= 100) and `after_cursor`
        (the opaque cursor of the previous page); the last page has no next_cursor."""
        q = request.query
        try:
            limit = int(q.get("limit", 20))
            after = int(base64.urlsafe_b64decode(q["after_cursor"]).decode()) if q.get("after_cursor") else 0
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "invalid limit or after_cursor"}, status=400)
        if not 1 <= limit <= KEYSET_MAX or after < 0:
            return web.json_response({"error": f"limit must be between 1 and {KEYSET_MAX}"}, status=400)
        page = ms[after:after + limit]
        doc: dict = {key: [shape(m) for m in page]}
        if after + limit < len(ms):
            doc["next_cursor"] = base64.urlsafe_b64encode(str(after + limit).encode()).decode()
        return web.json_response(doc)

    async def events_keyset(self, request: web.Request) -> web.Response:
        ms = self._filter(request.query, list(self.ex.markets.values()), None, paged=False)
        return self._keyset(request, ms, "events", self.event)

    async def markets_keyset(self, request: web.Request) -> web.Response:
        ms = self._filter(request.query, self._selected(request.query), False, paged=False)
        return self._keyset(request, ms, "markets", self.market)


def gamma_app(g: Gamma) -> web.Application:
    app = web.Application()
    app.router.add_get("/events", g.events)
    app.router.add_get("/events/keyset", g.events_keyset)
    app.router.add_get("/events/slug/{slug}", g.event_by_slug)
    app.router.add_get("/events/{id}", g.event_by_id)
    app.router.add_get("/markets", g.markets)
    app.router.add_get("/markets/keyset", g.markets_keyset)
    app.router.add_get("/markets/slug/{slug}", g.market_by_slug)
    app.router.add_get("/markets/{id}", g.market_by_id)
    return app
