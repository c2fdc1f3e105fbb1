"""CLOB V2 REST (`https://clob.polymarket.com`): public market data, L1/L2 auth, orders, cancels, trades.

What a request goes through, in the real venue's order: the edge (rate limit 429, 5xx, the engine restarting
425, trading disabled/cancel-only 503), L2 HMAC auth (401), the payload (400), the order version (V1 field set ->
`order_version_mismatch`), owner = API key, post-only mode (503), the EIP-712 signature for the market's exchange
(standard/neg-risk V2 domain "2", ExchangeV3 domain "3"; POLY_1271 wrappers unwrapped), signer = API key address,
duplicates, then the engine's checks (tick, min size, balance, post-only crossing, GTD expiration). Marketable
orders on `itode` markets wait out the taker delay before matching. Every order is written to the ground truth.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from polysim import crypto
from polysim.events import MATCH, Match, SimMarket
from polysim.exchange import Exchange, Order, Reject, fmt
from polysim.faults import Faults
from polysim.scenario import Scenario
from polysim.settlement import Settlement
from polysim.truth import GroundTruth
from polysim.views import best_prices, book_doc, iso

ERR_KEY = "Invalid API key"
ERR_NO_KEY = "Unauthorized/Invalid api key"
ERR_L1 = "Invalid L1 Request headers"
ERR_OWNER = "the order owner has to be the owner of the API KEY"
ERR_SIGNER = "the order signer address has to be the address of the API KEY"
ERR_SIGNATURE = "invalid signature"
ERR_VERSION = "order_version_mismatch"
ERR_PAYLOAD = "Invalid order payload"
ERR_NO_BOOK = "No orderbook exists for the requested token id"
ERR_POST_ONLY_MODE = "post-only mode: only post-only orders and cancels are allowed"
ERR_DISABLED = "Trading is currently disabled. Check polymarket.com for updates"
ERR_CANCEL_ONLY = "Trading is currently cancel-only. New orders are not accepted, but cancels are allowed."
ERR_NOT_FOUND = "Order not found or already canceled"
MAX_BATCH = 15
END_CURSOR = "LTE="
MAX_UINT256 = str(2**256 - 1)
HISTORY_POINTS = 2_000             # trade prices kept per token for /prices-history
INTERVAL_S = {"1m": 60, "1h": 3600, "6h": 6 * 3600, "1d": 86400, "1w": 7 * 86400}


def err(status: int, message: str, headers=None, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def _cursor(q) -> int:
    raw = q.get("next_cursor", "MA==")
    try:
        return max(0, int(base64.b64decode(raw).decode()))
    except (ValueError, UnicodeDecodeError):
        return 0


def _page(items: list, offset: int, limit: int = 100) -> dict:
    page = items[offset:offset + limit]
    more = offset + limit < len(items)
    return {"limit": limit, "next_cursor": base64.b64encode(str(offset + limit).encode()).decode() if more
            else END_CURSOR, "count": len(page), "data": page}


@dataclass
class Outcome:
    """One order's answer: the JSON, the HTTP status a single POST /order would carry, and the hash."""
    body: dict
    status: int
    order_hash: str = ""


class Refused(Exception):
    """An order the venue refuses: the error JSON (plus optional extra fields), its status, what we know of it."""

    def __init__(self, message: str, status: int = 400, order_hash: str = "", order: Order | None = None,
                 **extra):
        super().__init__(message)
        self.message, self.status, self.order_hash, self.order, self.extra = message, status, order_hash, order, extra


class _Withheld(Exception):
    """The order executed; its answer is withheld so the client times out (accepted-then-timed-out)."""

    def __init__(self, response: web.Response, delay_s: float):
        super().__init__("answer withheld")
        self.response, self.delay_s = response, delay_s


class ClobApi:
    def __init__(self, ex: Exchange, settlement: Settlement, scenario: Scenario, *, now: Callable[[], float],
                 rng: random.Random, faults: Faults, truth: GroundTruth):
        self.ex = ex
        self.settlement = settlement
        self.cfg = scenario.clob
        self.now = now
        self.rng = rng
        self.faults = faults
        self.truth = truth
        self.server_secret = os.urandom(32)
        self.keys: dict[str, dict] = {}              # api key -> {address, secret, passphrase}
        self.heartbeats: dict[str, dict] = {}        # api key -> {id, last}
        self.history: dict[str, deque[tuple[int, float]]] = {}   # token -> (match second, price)
        self.last_side: dict[str, str] = {}
        ex.hub.subscribe(MATCH, self._on_match)
        self.counters = {"orders": 0, "order_posts": 0}

    # ---- edge --------------------------------------------------------------------------------------------
    @web.middleware
    async def edge(self, request: web.Request, handler):
        # A request reaches the venue when it arrives at the edge; the latency below is the venue being slow to answer.
        request["arrived"] = self.now()
        if not request.path.startswith(("/_sim", "/ws/")):
            extra = self.faults.window("clob_latency", self.now()) or {}
            delay = self.cfg.latency_ms + extra.get("ms", 0) + self.rng.uniform(0, self.cfg.jitter_ms
                                                                                + extra.get("jitter_ms", 0))
            if delay > 0:
                await asyncio.sleep(delay / 1000)
        try:
            return await handler(request)
        except _Withheld as w:
            await asyncio.sleep(w.delay_s)
            return w.response

    def _gate(self, now: float, *, placing: bool) -> web.Response | None:
        """Edge and engine states that refuse a trading request before anything is parsed."""
        if (f := self.faults.take("clob_429")) is not None:
            return err(429, "Too Many Requests", headers={"Retry-After": str(f.get("retry_after", 1))})
        if placing and (f := self.faults.take("clob_5xx")) is not None:
            return err(int(f.get("status", 500)), str(f.get("error", "order timed out")))
        if placing and self.faults.take("clob_garbage") is not None:
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if self.faults.window("engine_restart", now):
            return err(425, "Too Early")
        if self.faults.window("trading_disabled", now):
            return err(503, ERR_DISABLED)
        if placing and self.faults.window("cancel_only", now):
            return err(503, ERR_CANCEL_ONLY)
        return None

    # ---- auth --------------------------------------------------------------------------------------------
    def _l1(self, request) -> tuple[str, int] | None:
        h = request.headers
        try:
            nonce = int(h.get("POLY_NONCE", "0"))
            signer = crypto.clob_auth_signer(h["POLY_ADDRESS"], h["POLY_TIMESTAMP"], nonce, h["POLY_SIGNATURE"])
        except (KeyError, ValueError, crypto.BadSignature):
            return None
        return (signer.lower(), nonce) if signer.lower() == h["POLY_ADDRESS"].lower() else None

    async def create_key(self, request):
        who = self._l1(request)
        if who is None:
            return err(401, ERR_L1)
        creds = crypto.derive_creds(who[0], who[1], self.server_secret)
        if creds["apiKey"] in self.keys:
            return err(400, "Could not create api key")
        self.keys[creds["apiKey"]] = {"address": who[0], "secret": creds["secret"], "passphrase": creds["passphrase"]}
        return web.json_response(creds)

    async def derive_key(self, request):
        who = self._l1(request)
        if who is None:
            return err(401, ERR_L1)
        creds = crypto.derive_creds(who[0], who[1], self.server_secret)
        if creds["apiKey"] not in self.keys:
            return err(400, "Could not derive api key!")
        return web.json_response(creds)

    async def api_keys(self, request):
        key = await self._authed(request)
        if isinstance(key, web.Response):
            return key
        mine = [k for k, v in self.keys.items() if v["address"] == key["address"]]
        return web.json_response({"apiKeys": mine})

    async def delete_key(self, request):
        """DELETE /auth/api-key: the key stops working at once; its open orders stay (they are the wallet's)."""
        key = await self._authed(request)
        if isinstance(key, web.Response):
            return key
        self.keys.pop(key["api_key"], None)
        self.heartbeats.pop(key["api_key"], None)
        return web.json_response("OK")

    async def closed_only(self, request):
        key = await self._authed(request)
        return key if isinstance(key, web.Response) else web.json_response({"closed_only": False})

    async def notifications(self, request):
        """The simulator sends no account notifications: the list is empty and dropping ids is a no-op."""
        key = await self._authed(request)
        if isinstance(key, web.Response):
            return key
        return web.json_response([] if request.method == "GET" else "OK")

    async def order_scoring(self, request):
        """No rewards programme runs on the simulated markets, so no order is scoring."""
        key = await self._authed(request)
        return key if isinstance(key, web.Response) else web.json_response({"scoring": False})

    async def orders_scoring(self, request):
        body = await request.text()
        key = self._l2(request, body)
        if isinstance(key, web.Response):
            return key
        try:
            ids = json.loads(body)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError
        except ValueError:
            return err(400, ERR_PAYLOAD)
        return web.json_response({i: False for i in ids})

    def _l2(self, request, body: str) -> dict | web.Response:
        h = request.headers
        if not all(k in h for k in ("POLY_API_KEY", "POLY_PASSPHRASE", "POLY_SIGNATURE", "POLY_TIMESTAMP",
                                    "POLY_ADDRESS")):
            return err(401, ERR_NO_KEY)
        key = self.keys.get(h["POLY_API_KEY"])
        if key is None or h["POLY_PASSPHRASE"] != key["passphrase"] or h["POLY_ADDRESS"].lower() != key["address"]:
            return err(401, ERR_KEY)
        if h["POLY_SIGNATURE"] != crypto.hmac_signature(key["secret"], h["POLY_TIMESTAMP"], request.method,
                                                        request.path, body):
            return err(401, ERR_KEY)
        return {"api_key": h["POLY_API_KEY"], **key}

    # ---- public ------------------------------------------------------------------------------------------
    def _token(self, request) -> str | None:
        t = request.query.get("token_id")
        return t if t in self.ex.by_token and self.ex.by_token[t].condition_id in self.ex.books else None

    async def time_(self, request):
        return web.json_response(int(self.now()))

    async def version(self, request):
        return web.json_response({"version": 2})

    async def tick_size(self, request):
        t = self._token(request)
        return web.json_response({"minimum_tick_size": self.ex.by_token[t].tick_size}) if t else err(404, ERR_NO_BOOK)

    async def neg_risk(self, request):
        t = self._token(request)
        return web.json_response({"neg_risk": self.ex.by_token[t].neg_risk}) if t else err(404, ERR_NO_BOOK)

    async def fee_rate(self, request):
        t = self._token(request)
        return web.json_response({"base_fee": self.ex.by_token[t].base_fee_bps}) if t else err(404, ERR_NO_BOOK)

    async def book(self, request):
        t = self._token(request)
        return web.json_response(book_doc(self.ex, t, self.now())) if t else err(404, ERR_NO_BOOK)

    async def _params(self, request) -> list[dict]:
        try:
            body = await request.json()
        except ValueError:
            return []
        return [p for p in body if isinstance(p, dict) and isinstance(p.get("token_id"), str)
                and p["token_id"] in self.ex.by_token] if isinstance(body, list) else []

    async def books(self, request):
        return web.json_response([book_doc(self.ex, p["token_id"], self.now()) for p in await self._params(request)])

    async def price(self, request):
        t = self._token(request)
        if not t:
            return err(404, ERR_NO_BOOK)
        side = request.query.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            return err(400, "Invalid side")
        return web.json_response({"price": self._price(t, side)})

    def _price(self, token: str, side: str) -> str:
        """BUY -> the best bid, SELL -> the best ask (docs OpenAPI `/price`; a live probe agrees), a decimal string
        (the official SDK parses only strings)."""
        bid, ask = best_prices(self.ex, token)
        return bid if side == "BUY" else ask

    async def prices(self, request):
        """POST /prices [{token_id, side}] or GET /prices?token_ids=a,b&sides=BUY,SELL -> {token: {side: price}}."""
        if request.method == "GET":
            tokens = request.query.get("token_ids", "").split(",")
            sides = request.query.get("sides", "").split(",")
            if len(tokens) != len(sides):
                return err(400, "token_ids and sides must have the same length")
            wanted = [{"token_id": t, "side": sd} for t, sd in zip(tokens, sides, strict=True)]
        else:
            wanted = await self._params(request)
        out: dict[str, dict[str, str]] = {}
        for p in wanted:
            t, side = p.get("token_id"), str(p.get("side", "")).upper()
            if t in self.ex.by_token and self.ex.by_token[t].condition_id in self.ex.books and side in ("BUY", "SELL"):
                out.setdefault(t, {})[side] = self._price(t, side)
        return web.json_response(out)

    def _mid(self, token: str) -> str:
        bid, ask = best_prices(self.ex, token)
        return fmt(round((float(bid) + float(ask)) / 2, 4))

    async def midpoint(self, request):
        t = self._token(request)
        return web.json_response({"mid": self._mid(t)}) if t else err(404, ERR_NO_BOOK)

    async def midpoints(self, request):
        return web.json_response({p["token_id"]: self._mid(p["token_id"]) for p in await self._params(request)})

    def _spread(self, token: str) -> str:
        bid, ask = best_prices(self.ex, token)
        return fmt(max(0.0, float(ask) - float(bid)))

    async def spread(self, request):
        t = self._token(request)
        return web.json_response({"spread": self._spread(t)}) if t else err(404, ERR_NO_BOOK)

    async def spreads(self, request):
        return web.json_response({p["token_id"]: self._spread(p["token_id"]) for p in await self._params(request)
                                  if p["token_id"] in self._booked()})

    def _booked(self) -> set[str]:
        return {t for t, m in self.ex.by_token.items() if m.condition_id in self.ex.books}

    def _last_trade(self, token: str) -> dict:
        m = self.ex.by_token[token]
        p = self.ex.books[m.condition_id].last_trade_price[m.token_ids.index(token)]
        return {"price": fmt(p), "side": self.last_side.get(token, "BUY")}

    async def last_trade_price(self, request):
        t = self._token(request)
        return web.json_response(self._last_trade(t)) if t else err(404, ERR_NO_BOOK)

    async def last_trades_prices(self, request):
        return web.json_response([{"token_id": p["token_id"], **self._last_trade(p["token_id"])}
                                  for p in await self._params(request) if p["token_id"] in self._booked()])

    def _on_match(self, match: Match) -> None:
        """Trade prices per token for /prices-history and the side of the last trade."""
        t = match.taker
        self.last_side[t.token_id] = t.side
        m = match.market
        other = m.token_ids[1 - t.outcome_index]
        for token, price in ((t.token_id, t.price), (other, round(1.0 - t.price, 6))):
            self.history.setdefault(token, deque(maxlen=HISTORY_POINTS)).append((int(match.match_time), price))
        if len(self.history) > 2 * len(self.ex.by_token) + 16:     # forget the markets the exchange forgot
            for token in [k for k in self.history if k not in self.ex.by_token]:
                self.history.pop(token, None)
                self.last_side.pop(token, None)

    async def prices_history(self, request):
        """GET /prices-history?market=<token>&startTs&endTs | interval[&fidelity minutes] -> {"history": [{t, p}]}:
        one point per `fidelity` minutes (the last trade price in it)."""
        q = request.query
        token = q.get("market", "")
        try:
            now = int(self.now())
            if "interval" in q:
                if q["interval"] == "max":
                    start, end = 0, now
                elif q["interval"] in INTERVAL_S:
                    start, end = now - INTERVAL_S[q["interval"]], now
                else:
                    return err(400, "invalid interval")
            else:
                start, end = int(q["startTs"]), int(q["endTs"])
            bucket = max(1, int(q.get("fidelity", 1))) * 60
        except (KeyError, ValueError):
            return err(400, "invalid filters: startTs and endTs, or interval, are required")
        points: dict[int, float] = {}
        for ts, price in self.history.get(token, ()):
            if start <= ts <= end:
                points[ts - ts % bucket] = price
        return web.json_response({"history": [{"t": t, "p": p} for t, p in sorted(points.items())]})

    def _compact(self, m: SimMarket) -> dict:
        """GET /clob-markets/{condition_id}: the compact parameters the SDK caches (mts, nr, fd)."""
        doc = {"c": m.condition_id, "gst": None, "r": {},
               "t": [{"t": t, "o": o} for t, o in zip(m.token_ids, m.outcomes, strict=True)], "mos": m.min_size,
               "mts": m.tick_size, "mbf": m.base_fee_bps, "tbf": m.base_fee_bps, "rfqe": False,
               "ibce": False, "fd": {"r": m.fee_rate, "e": m.fee_exponent, "to": True}, "oas": 0,
               "ao": self.ex.accepting(m, self.now()), "sd": m.seconds_delay}
        if m.taker_delay_ms > 0:
            doc["itode"] = True                          # omitted when false
        if m.neg_risk:
            doc["nr"] = True                             # omitted when false
        return doc

    async def clob_market(self, request):
        m = self.ex.by_condition.get(request.match_info["cid"])
        return web.json_response(self._compact(m)) if m else err(404, "market not found")

    def _market(self, m: SimMarket) -> dict:
        """GET /markets/{condition_id}: the classic CLOB market object."""
        book = self.ex.books.get(m.condition_id)
        ltp = book.last_trade_price if book else [0.5, 0.5]
        return {"enable_order_book": True, "active": m.state in ("created", "trading"),
                "closed": m.state in ("closed", "resolved"), "archived": False,
                "accepting_orders": self.ex.accepting(m, self.now()), "accepting_order_timestamp": iso(m.created_at),
                "minimum_order_size": m.min_size, "minimum_tick_size": m.tick_size, "condition_id": m.condition_id,
                "question_id": m.question_id, "question": m.title, "description": "", "market_slug": m.slug,
                "end_date_iso": iso(m.window_end), "game_start_time": None, "seconds_delay": int(m.seconds_delay),
                "fpmm": "", "maker_base_fee": m.base_fee_bps, "taker_base_fee": m.base_fee_bps,
                "notifications_enabled": True, "neg_risk": m.neg_risk, "neg_risk_market_id": "",
                "neg_risk_request_id": "", "icon": "", "image": "",
                "rewards": {"rates": None, "min_size": 0, "max_spread": 0}, "is_50_50_outcome": False,
                "tokens": [{"token_id": t, "outcome": o, "price": ltp[i], "winner": m.winner == i}
                           for i, (t, o) in enumerate(zip(m.token_ids, m.outcomes, strict=True))],
                "tags": ["Crypto", "Up or Down", "15M"]}

    async def market(self, request):
        m = self.ex.by_condition.get(request.match_info["cid"])
        return web.json_response(self._market(m)) if m else err(404, "market not found")

    async def markets(self, request):
        ms = [self._market(m) for m in self.ex.markets.values()]
        return web.json_response(_page(ms, _cursor(request.query), 500))

    def _simplified(self, m: SimMarket) -> dict:
        full = self._market(m)
        return {k: full[k] for k in ("condition_id", "rewards", "tokens", "active", "closed", "archived",
                                     "accepting_orders")}

    async def simplified_markets(self, request):
        ms = [self._simplified(m) for m in self.ex.markets.values()]
        return web.json_response(_page(ms, _cursor(request.query), 500))

    async def sampling_markets(self, request):
        """Markets in a rewards programme. The simulated 15-minute markets have none: an empty first page."""
        return web.json_response(_page([], _cursor(request.query), 500))

    async def ok(self, request):
        return web.json_response("OK")

    async def market_by_token(self, request):
        m = self.ex.by_token.get(request.match_info["token"])
        if m is None:
            return err(404, ERR_NO_BOOK)
        return web.json_response({"condition_id": m.condition_id, "primary_token_id": m.token_ids[0],
                                  "secondary_token_id": m.token_ids[1]})

    # ---- orders ------------------------------------------------------------------------------------------
    def _peek(self, body: str) -> list[dict]:
        """Whatever can be read of the orders in a request the edge refused (for the ground truth)."""
        try:
            doc = json.loads(body)
        except ValueError:
            return [{}]
        out: list[dict] = []
        for d in (doc if isinstance(doc, list) else [doc]):
            order = d.get("order") if isinstance(d, dict) else None
            if not isinstance(order, dict):
                out.append({})
                continue
            m = self.ex.by_token.get(str(order.get("tokenId")))
            h = ""
            if m is not None:
                try:
                    h = crypto.order_hash_and_signer(order, *crypto.exchange_for(m.version, m.neg_risk))[0]
                except crypto.BadSignature:
                    h = ""
            out.append({"order_hash": h, "side": order.get("side"), "token_id": str(order.get("tokenId")),
                        "order_type": d.get("orderType")})
        return out

    def _record(self, out: Outcome, owner: str, received: float, order: Order | None, batch: bool,
                peek: dict | None = None) -> None:
        body = out.body
        info = peek or {}
        self.truth.record("order", order_hash=out.order_hash or info.get("order_hash", ""), owner=owner,
                          http=out.status, status=body.get("status") or "rejected",
                          error=body.get("error") or body.get("errorMsg", ""),
                          filled_size=order.matched if order else 0.0,
                          side=order.side if order else info.get("side"),
                          token_id=order.token_id if order else info.get("token_id"), received_at=round(received, 6),
                          price=order.price if order else None, size=order.size if order else None,
                          order_type=order.order_type if order else info.get("order_type"),
                          post_only=order.post_only if order else False, batch=batch)

    async def _admit(self, request, *, batch: bool) -> tuple[float, str, dict | web.Response]:
        """(arrival time, body, API key) of an order POST, or the edge's/auth's refusal (written to the truth)."""
        received = request.get("arrived", self.now())
        body = await request.text()
        self.counters["order_posts"] += 1
        key = self._gate(received, placing=True) or self._l2(request, body)
        if isinstance(key, web.Response):
            json_text = key.text if key.content_type == "application/json" else None
            error = json.loads(json_text) if json_text is not None else {}
            for info in self._peek(body):
                self._record(Outcome(error, key.status), "", received, None, batch, info)
        return received, body, key

    async def post_order(self, request):
        received, body, key = await self._admit(request, batch=False)
        if isinstance(key, web.Response):
            return key
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError
        except ValueError:
            self._record(Outcome({"error": ERR_PAYLOAD}, 400), key["api_key"], received, None, False)
            return err(400, ERR_PAYLOAD)
        withheld = self.faults.take("post_timeout_after_accept")
        out = await self._one(doc, key, received, batch=False)
        response = web.json_response(out.body, status=out.status)
        if withheld is not None and out.status == 200:
            raise _Withheld(response, float(withheld.get("delay_s", 3.0)))
        return response

    async def post_orders(self, request):
        received, body, key = await self._admit(request, batch=True)
        if isinstance(key, web.Response):
            return key
        try:
            docs = json.loads(body)
            if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
                raise ValueError
        except ValueError:
            return err(400, ERR_PAYLOAD)
        if len(docs) > MAX_BATCH:
            for info in self._peek(body):
                self._record(Outcome({"error": "too many orders"}, 400), key["api_key"], received, None, True, info)
            return err(400, f"Too many orders in payload: {len(docs)}, max allowed: {MAX_BATCH}")
        outs = await asyncio.gather(*(self._one(d, key, received, batch=True) for d in docs))
        return web.json_response([o.body if o.status == 200 else
                                  {"errorMsg": o.body.get("error", ""), "orderID": "", "takingAmount": "",
                                   "makingAmount": "", "status": "", "success": True} for o in outs])

    async def _one(self, doc: dict, key: dict, received: float, *, batch: bool) -> Outcome:
        order: Order | None
        try:
            out, order = await self._place(doc, key, received)
        except Refused as r:
            out, order = Outcome({"error": r.message, **r.extra}, r.status, r.order_hash), r.order
        self._record(out, key["api_key"], received, order, batch)
        return out

    def _parse(self, doc: dict, key: dict) -> tuple[dict, SimMarket]:
        order = doc.get("order")
        if not isinstance(order, dict):
            raise Refused(ERR_PAYLOAD)
        if set(order) & crypto.V1_ONLY_FIELDS or not {"timestamp", "metadata", "builder"} <= set(order):
            raise Refused(ERR_VERSION)
        if doc.get("owner") != key["api_key"]:
            raise Refused(ERR_OWNER)
        post_only_mode = self.faults.window("post_only_mode", self.now())
        if post_only_mode and not doc.get("postOnly"):
            raise Refused(ERR_POST_ONLY_MODE, 503, code="post_only_mode",
                          retry_after_seconds=max(1, int(post_only_mode["until"] - self.now())))
        m = self.ex.by_token.get(str(order.get("tokenId")))
        if m is None or m.condition_id not in self.ex.books:
            raise Refused(ERR_NO_BOOK, 404)
        if order.get("side") not in ("BUY", "SELL") or str(doc.get("orderType", "GTC")).upper() not in (
                "GTC", "GTD", "FOK", "FAK"):
            raise Refused(ERR_PAYLOAD)
        return order, m

    def _verify(self, order: dict, m: SimMarket, key: dict) -> str:
        """The order hash, once the signature is the API key's (raises Refused otherwise)."""
        try:
            order_hash, recovered = crypto.order_hash_and_signer(order, *crypto.exchange_for(m.version, m.neg_risk))
        except crypto.BadSignature:
            raise Refused(ERR_SIGNATURE) from None
        signer, maker = str(order["signer"]).lower(), str(order["maker"]).lower()
        if int(order["signatureType"]) == crypto.POLY_1271:
            # The deposit wallet is both maker and signer; the key that signed the wrapper must be the API key's.
            if signer != maker:
                raise Refused(ERR_SIGNATURE, order_hash=order_hash)
            if recovered != key["address"]:
                raise Refused(ERR_SIGNER, order_hash=order_hash)
            return order_hash
        if recovered != signer:
            raise Refused(ERR_SIGNATURE, order_hash=order_hash)
        if signer != key["address"]:
            raise Refused(ERR_SIGNER, order_hash=order_hash)
        if int(order["signatureType"]) == 0 and maker != signer:
            raise Refused(ERR_SIGNATURE, order_hash=order_hash)
        return order_hash

    async def _place(self, doc: dict, key: dict, received: float) -> tuple[Outcome, Order]:
        order, m = self._parse(doc, key)
        order_hash = self._verify(order, m, key)
        if order_hash in self.ex.orders:
            raise Refused(f"order {order_hash} is invalid. Duplicated.", order_hash=order_hash)
        try:
            maker_amt, taker_amt = int(order["makerAmount"]) / 1e6, int(order["takerAmount"]) / 1e6
            expiration = float(order.get("expiration") or 0)
        except (TypeError, ValueError):
            raise Refused(ERR_PAYLOAD, order_hash=order_hash) from None
        side = order["side"]
        size, usd = (taker_amt, maker_amt) if side == "BUY" else (maker_amt, taker_amt)
        if size <= 0 or usd <= 0:
            raise Refused(ERR_PAYLOAD, order_hash=order_hash)
        o = Order(order_hash, key["api_key"], str(order["maker"]).lower(), m, str(order["tokenId"]), side,
                  round(usd / size, 6), round(size, 6), str(doc.get("orderType", "GTC")).upper(), received,
                  expiration=expiration, post_only=bool(doc.get("postOnly")), api=True)
        self.ex.wallet(o.wallet, api=True)
        try:
            self.ex.validate(o, self.now())
        except Reject as r:
            raise Refused(r.message, r.status, order_hash, o) from None
        if self.ex.marketable(o):
            if self.faults.take("delay_failure") is not None:
                o.status = "UNMATCHED"
                self.ex.orders[order_hash] = o
                return self._accepted(o, None, "unmatched"), o
            if m.seconds_delay > 0:
                o.status = "DELAYED"
                self.ex.orders[order_hash] = o
                asyncio.get_running_loop().call_later(m.seconds_delay, self._execute_delayed, o)
                return self._accepted(o, None, "delayed"), o
            if m.taker_delay_ms > 0:
                o.status = "DELAYED"
                self.ex.orders[order_hash] = o          # a resend during the delay is a duplicate
                await asyncio.sleep(m.taker_delay_ms / 1000)
        try:
            match = self.ex.execute(o, self.now())
        except Reject as r:
            raise Refused(r.message, r.status, order_hash, o) from None
        self.counters["orders"] += 1
        return self._accepted(o, match, "matched" if o.matched > 0 else "live"), o

    def _execute_delayed(self, o: Order) -> None:
        try:
            self.ex.execute(o, self.now())
        except Reject as r:
            self.truth.record("order_update", order_hash=o.order_hash, status=o.status, error=r.message,
                              filled_size=o.matched)
            return
        self.truth.record("order_update", order_hash=o.order_hash, status=o.status, error="", filled_size=o.matched)

    @staticmethod
    def _accepted(o: Order, match, status: str) -> Outcome:
        making = taking = ""
        if match is not None:
            # What moved, summed fill by fill (the taker's average price is rounded): a partly filled FAK answers
            # the amounts of the part that filled.
            shares = match.taker.size
            cash = sum(f.size * (f.price if f.token_id == o.token_id else 1.0 - f.price) for f in match.makers)
            making, taking = (cash, shares) if o.side == "BUY" else (shares, cash)
            making, taking = str(int(round(making * 1e6))), str(int(round(taking * 1e6)))
        # FAK/FOK matches settle asynchronously: no hashes inline; clients follow tradeIDs (SDK2 polls /data/trades).
        return Outcome({"success": True, "errorMsg": "", "orderID": o.order_hash, "status": status,
                        "makingAmount": making, "takingAmount": taking, "transactionsHashes": [],
                        "tradeIDs": list(o.trade_ids)}, 200, o.order_hash)

    # ---- cancels -----------------------------------------------------------------------------------------
    async def cancel(self, request):
        body = await request.text()
        refused = self._gate(self.now(), placing=False)
        key = refused or self._l2(request, body)
        if isinstance(key, web.Response):
            return key
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            return err(400, ERR_PAYLOAD)
        mine = [o for o in self.ex.orders.values() if o.owner == key["api_key"] and o.status == "LIVE"]
        if request.path == "/cancel-all":
            ids = [o.order_hash for o in mine]
        elif request.path == "/cancel-market-orders":
            market, asset = (doc.get("market"), doc.get("asset_id")) if isinstance(doc, dict) else (None, None)
            ids = [o.order_hash for o in mine if (not market or o.market.condition_id == market)
                   and (not asset or o.token_id == asset)]
        elif request.path == "/orders":
            ids = [str(h) for h in doc] if isinstance(doc, list) else []
        else:
            ids = [str(doc.get("orderID", ""))] if isinstance(doc, dict) else []
        canceled, not_canceled = [], {}
        now = self.now()
        for h in ids:
            o = self.ex.orders.get(h)
            if o is None or o.owner != key["api_key"] or not self.ex.cancel(o, now):
                not_canceled[h] = ERR_NOT_FOUND
            else:
                canceled.append(h)
        return web.json_response({"canceled": canceled, "not_canceled": not_canceled})

    # ---- account -----------------------------------------------------------------------------------------
    async def _authed(self, request) -> dict | web.Response:
        return self._l2(request, await request.text())

    async def get_order(self, request):
        key = await self._authed(request)
        if isinstance(key, web.Response):
            return key
        o = self.ex.orders.get(request.match_info["hash"])
        return web.json_response(self.ex.order_json(o) if o is not None and o.owner == key["api_key"] else None)

    async def get_orders(self, request):
        key = await self._authed(request)
        if isinstance(key, web.Response):
            return key
        q = request.query
        live = [self.ex.order_json(o) for o in self.ex.orders.values()
                if o.owner == key["api_key"] and o.status == "LIVE" and (not q.get("id") or o.order_hash == q["id"])
                and (not q.get("market") or o.market.condition_id == q["market"])
                and (not q.get("asset_id") or o.token_id == q["asset_id"])]
        return web.json_response(_page(live, _cursor(q)))

    async def get_trades(self, request):
        key = await self._authed(request)
        if isinstance(key, web.Response):
            return key
        q = request.query
        rows = []
        for rec in reversed(self.settlement.by_owner.get(key["api_key"], [])):
            row = self.settlement.rest_json(rec, key["api_key"])
            if (q.get("id") and row["id"] != q["id"]) or (q.get("market") and row["market"] != q["market"]) or \
                    (q.get("asset_id") and row["asset_id"] != q["asset_id"]) or \
                    (q.get("maker_address") and row["maker_address"] != q["maker_address"].lower()) or \
                    (q.get("before") and int(row["match_time"]) >= int(q["before"])) or \
                    (q.get("after") and int(row["match_time"]) <= int(q["after"])):
                continue
            rows.append(row)
        return web.json_response(_page(rows, _cursor(q)))

    async def balance_allowance(self, request):
        key = await self._authed(request)
        if isinstance(key, web.Response):
            return key
        w = self.ex.wallet(key["address"], api=True)
        q = request.query
        if q.get("asset_type", "COLLATERAL").upper() == "CONDITIONAL":
            balance = w.held(q.get("token_id", ""))
        else:
            balance = w.balance
        allowances = {crypto.EXCHANGE_V2: MAX_UINT256, crypto.NEG_RISK_EXCHANGE_V2: MAX_UINT256,
                      crypto.EXCHANGE_V3: MAX_UINT256}
        return web.json_response({"balance": str(int(round(balance * 1e6))), "allowances": allowances})

    async def heartbeat(self, request):
        body = await request.text()
        key = self._l2(request, body)
        if isinstance(key, web.Response):
            return key
        try:
            given = str((json.loads(body) if body else {}).get("heartbeat_id", ""))
        except (ValueError, AttributeError):
            return err(400, ERR_PAYLOAD)
        now = self.now()
        session = self.heartbeats.get(key["api_key"])
        if request.path == "/heartbeats":          # the OpenAPI variant carries no id: it only keeps the session
            self.heartbeats[key["api_key"]] = {"id": session["id"] if session else "", "last": now}
            return web.json_response({"status": "ok"})
        if session is not None and now - session["last"] <= self.cfg.heartbeat_timeout_s and given != session["id"]:
            return web.json_response({"error_msg": "Invalid Heartbeat ID", "heartbeat_id": session["id"]},
                                     status=400)
        new = base64.urlsafe_b64encode(self.rng.getrandbits(96).to_bytes(12, "big")).decode()
        self.heartbeats[key["api_key"]] = {"id": new, "last": now}
        return web.json_response({"heartbeat_id": new})

    def expire_heartbeats(self, now: float) -> None:
        """The dead-man switch: no valid heartbeat in time -> every open order of that key is cancelled."""
        for api_key, session in list(self.heartbeats.items()):
            if now - session["last"] > self.cfg.heartbeat_timeout_s:
                del self.heartbeats[api_key]
                for o in [o for o in self.ex.orders.values() if o.owner == api_key and o.status == "LIVE"]:
                    self.ex.cancel(o, now)


def clob_routes(app: web.Application, api: ClobApi) -> None:
    r = app.router
    for path, handler in (("/time", api.time_), ("/version", api.version), ("/tick-size", api.tick_size),
                          ("/neg-risk", api.neg_risk), ("/fee-rate", api.fee_rate), ("/book", api.book),
                          ("/price", api.price), ("/midpoint", api.midpoint), ("/spread", api.spread),
                          ("/last-trade-price", api.last_trade_price), ("/clob-markets/{cid}", api.clob_market),
                          ("/markets", api.markets), ("/markets/{cid}", api.market),
                          ("/markets-by-token/{token}", api.market_by_token),
                          ("/auth/derive-api-key", api.derive_key), ("/data/order/{hash}", api.get_order),
                          ("/data/orders", api.get_orders), ("/data/trades", api.get_trades),
                          ("/balance-allowance", api.balance_allowance),
                          ("/balance-allowance/update", api.balance_allowance), ("/", api.ok), ("/ok", api.ok),
                          ("/prices", api.prices), ("/prices-history", api.prices_history),
                          ("/simplified-markets", api.simplified_markets), ("/sampling-markets", api.sampling_markets),
                          ("/sampling-simplified-markets", api.sampling_markets), ("/auth/api-keys", api.api_keys),
                          ("/auth/ban-status/closed-only", api.closed_only), ("/notifications", api.notifications),
                          ("/order-scoring", api.order_scoring)):
        r.add_get(path, handler)
    for path, handler in (("/books", api.books), ("/midpoints", api.midpoints), ("/auth/api-key", api.create_key),
                          ("/order", api.post_order), ("/orders", api.post_orders), ("/v1/heartbeats", api.heartbeat),
                          ("/heartbeats", api.heartbeat), ("/prices", api.prices), ("/spreads", api.spreads),
                          ("/last-trades-prices", api.last_trades_prices), ("/orders-scoring", api.orders_scoring)):
        r.add_post(path, handler)
    for path in ("/order", "/orders", "/cancel-all", "/cancel-market-orders"):
        r.add_delete(path, api.cancel)
    r.add_delete("/auth/api-key", api.delete_key)
    r.add_delete("/notifications", api.notifications)

