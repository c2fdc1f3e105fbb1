"""All simulator surfaces on loopback: CLOB REST + market websocket + control API, Gamma, Data API, RTDS.

One asyncio loop; the exchange core publishes matches on the hub, and each feed surface delivers them with its
own delay and failure modes, like the real venue.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
from datetime import datetime, timezone

from aiohttp import WSMsgType, web

from polysim import crypto
from polysim.events import MATCH, Hub, Match
from polysim.exchange import Exchange, Order

ERR_KEY = "Invalid API key"
ERR_OWNER = "the order owner has to be the owner of the API KEY"
ERR_BALANCE = "not enough balance / allowance"
ERR_FAK = ("no orders found to match with FAK order. FAK orders are partially filled or killed if no match is "
           "found.")
ERR_FOK = "order couldn't be fully filled. FOK orders are fully filled or killed."
ERR_NOT_READY = "the market is not yet ready to process new orders"
ERR_NO_BOOK = "No orderbook exists for the requested token id"
ERR_POST_ONLY = "post-only mode: only post-only orders and cancels are allowed"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def err(status: int, message: str, headers=None, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


class Sim:
    def __init__(self, *, speed: float = 1.0, seed: int = 1, source_wallet: str, ground_truth: str | None,
                 background: bool = True, balance: float = 10_000.0, rtds_delay: float = 2.0,
                 data_api_delay: float = 3.0, bg_rate: float = 20.0, v2_every: int = 0):
        self.hub = Hub()
        self.ex = Exchange(self.hub, speed=speed, seed=seed, source_wallet=source_wallet, ground_truth=ground_truth,
                           v2_every=v2_every)
        self.ex.default_balance = balance
        self.rng = random.Random(seed + 1000)
        self.background = background
        self.rtds_delay = rtds_delay
        self.data_api_delay = data_api_delay
        self.bg_rate = bg_rate
        self.keys: dict[str, dict] = {}            # api key -> {address, secret, passphrase}
        self.server_secret = os.urandom(32)
        self.faults: dict[str, dict] = {}
        self.rtds_clients: set[web.WebSocketResponse] = set()
        self.market_clients: dict[web.WebSocketResponse, set[str]] = {}
        self.stalled_until = 0.0
        self.held: list[str] | None = None
        self.counters = {"orders": 0, "rtds_frames": 0, "malformed_sent": 0, "rtds_connections": 0}
        self.hub.subscribe(MATCH, self._on_match)
        self.fair: dict[str, float] = {}
        self._lag = rtds_delay
        self._last_delivery = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start_background(self) -> None:
        self.ex.rotate(time.time())
        asyncio.get_running_loop().create_task(self._clock_loop())
        if self.background:
            asyncio.get_running_loop().create_task(self._taker_loop())

    async def _clock_loop(self) -> None:
        while True:
            now = time.time()
            self.ex.rotate(now)
            self._quote(now)
            await asyncio.sleep(0.25)

    def _quote(self, now: float) -> None:
        """Background makers keep five levels of depth on both sides of every trading token."""
        for m in list(self.ex.markets.values()):
            if m.state != "trading":
                continue
            up = self.fair.setdefault(m.condition_id, round(self.rng.uniform(0.35, 0.65), 2))
            for idx, token in enumerate(m.token_ids):
                fair = up if idx == 0 else round(1 - up, 2)
                book = self.ex.books[token]
                changed = False
                for side, levels in (("BUY", book.bids), ("SELL", book.asks)):
                    have = {o.price for o in levels}
                    for k in range(1, 6):
                        price = round(fair - k * m.tick_size if side == "BUY" else fair + (k - 1) * m.tick_size, 2)
                        if 0 < price < 1 and price not in have:
                            wallet = f"0x{self.rng.getrandbits(160):040x}"
                            o = Order(self.ex.new_order_id(), "bg-maker", wallet, m, token, side, price,
                                      float(self.rng.randint(200, 600)), "GTC", now)
                            self.ex.balances[wallet] = 1e12
                            self.ex.positions[(wallet, token)] = 1e12
                            self.ex.orders[o.order_hash] = o
                            book.rest(o)
                            changed = True
                if changed:
                    self._push_book(token)

    async def _taker_loop(self) -> None:
        """Random takers: the activity firehose (every match of every wallet goes out on RTDS)."""
        while True:
            await asyncio.sleep(self.rng.expovariate(self.bg_rate))
            now = time.time()
            trading = [m for m in self.ex.markets.values() if m.state == "trading"]
            if not trading:
                continue
            m = self.rng.choice(trading)
            token = self.rng.choice(m.token_ids)
            side = self.rng.choice(["BUY", "SELL"])
            wallet = f"0x{self.rng.getrandbits(160):040x}"
            self.ex.balances[wallet] = 1e12
            self.ex.positions[(wallet, token)] = 1e12
            price = 0.99 if side == "BUY" else 0.01
            o = Order(self.ex.new_order_id(), "bg-taker", wallet, m, token, side, price,
                      float(self.rng.randint(5, 40)), "FAK", now)
            self.ex.submit(o, now)
            self._push_book(token)

    # ---- feeds -------------------------------------------------------------------------------------------
    def _on_match(self, match: Match) -> None:
        m = match.market
        frames = []
        for f in match.fills():
            payload = {"asset": f.token_id, "bio": "", "conditionId": m.condition_id, "eventSlug": m.event_slug,
                       "icon": "", "name": "", "outcome": f.outcome, "outcomeIndex": f.outcome_index,
                       "price": round(f.price, 6), "profileImage": "", "proxyWallet": f.wallet, "pseudonym": "",
                       "side": f.side, "size": round(f.size, 6), "slug": m.slug, "timestamp": int(match.match_time),
                       "title": m.title, "transactionHash": match.tx_hash}
            frames.append(("trades", payload))
            if f.role == "taker":
                frames.append(("orders_matched", payload))
        # The feed's lag drifts slowly (indexer load), so neighbouring matches keep their spacing and order.
        self._lag = min(self.rtds_delay * 1.4, max(self.rtds_delay * 0.8, self._lag + self.rng.gauss(0, 0.02)))
        now = time.time()
        at = max(now + self._lag, self._last_delivery + 0.0005)
        self._last_delivery = at
        for kind, payload in frames:
            self.hub.later(at - now, lambda k=kind, p=payload: self._rtds_send(k, p))

    def _rtds_send(self, kind: str, payload: dict) -> None:
        text = json.dumps({"connection_id": "sim", "payload": payload, "timestamp": int(time.time() * 1000),
                           "topic": "activity", "type": kind})
        self._rtds_broadcast(text)
        dup = self.faults.get("rtds_duplicate")
        if dup and dup.get("count", 0) > 0:
            dup["count"] -= 1
            self._rtds_broadcast(text)

    def _rtds_broadcast(self, text: str) -> None:
        if time.time() < self.stalled_until:
            return                                  # silent stall: connected, but nothing arrives
        if self.held is not None:
            self.held.append(text)
            return
        self.counters["rtds_frames"] += 1
        for ws in list(self.rtds_clients):
            if not ws.closed:
                asyncio.ensure_future(self._safe_send(ws, text))

    @staticmethod
    async def _safe_send(ws, text: str) -> None:
        try:
            await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass

    def _push_book(self, token: str) -> None:
        subs = [ws for ws, assets in self.market_clients.items() if token in assets and not ws.closed]
        if subs:
            text = json.dumps(self._book_json(token, event=True))
            for ws in subs:
                asyncio.ensure_future(self._safe_send(ws, text))

    def _book_json(self, token: str, event: bool = False) -> dict:
        m = self.ex.by_token[token]
        book = self.ex.books[token]
        doc = {"market": m.condition_id, "asset_id": token, "timestamp": str(int(time.time() * 1000)),
               "hash": "", "bids": [{"price": str(p), "size": str(s)} for p, s in reversed(book.levels("BUY"))],
               "asks": [{"price": str(p), "size": str(s)} for p, s in reversed(book.levels("SELL"))],
               "min_order_size": str(m.min_size), "tick_size": str(m.tick_size), "neg_risk": m.neg_risk,
               "last_trade_price": "0.5"}
        if event:
            doc["event_type"] = "book"
        return doc

    # ---- RTDS websocket ----------------------------------------------------------------------------------
    async def rtds(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.counters["rtds_connections"] += 1
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data.strip().upper() == "PING":
                    await ws.send_str("PONG")
                    continue
                try:
                    sub = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(sub, dict) and sub.get("action") == "subscribe":
                    self.rtds_clients.add(ws)
        finally:
            self.rtds_clients.discard(ws)
        return ws

    # ---- market websocket --------------------------------------------------------------------------------
    async def market_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.market_clients[ws] = set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data.strip().upper() == "PING":
                    await ws.send_str("PONG")
                    continue
                try:
                    sub = json.loads(msg.data)
                    assets = [a for a in sub.get("assets_ids", []) if a in self.ex.books]
                except (ValueError, AttributeError, TypeError):
                    continue
                self.market_clients[ws].update(assets)
                for a in assets:
                    await ws.send_str(json.dumps(self._book_json(a, event=True)))
        finally:
            self.market_clients.pop(ws, None)
        return ws

    # ---- CLOB REST: public -------------------------------------------------------------------------------
    def _token(self, request) -> str | None:
        t = request.query.get("token_id")
        return t if t in self.ex.books else None

    async def time_(self, request):
        return web.json_response(int(time.time()))

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
        return web.json_response({"base_fee": 0}) if t else err(404, ERR_NO_BOOK)

    async def book(self, request):
        t = self._token(request)
        return web.json_response(self._book_json(t)) if t else err(404, ERR_NO_BOOK)

    async def books(self, request):
        body = await request.json()
        return web.json_response([self._book_json(p["token_id"]) for p in body if p.get("token_id") in self.ex.books])

    async def price(self, request):
        t = self._token(request)
        if not t:
            return err(404, ERR_NO_BOOK)
        lv = self.ex.books[t].levels("SELL" if request.query.get("side", "BUY").upper() == "BUY" else "BUY", 1)
        return web.json_response({"price": lv[0][0] if lv else 0})

    async def midpoint(self, request):
        t = self._token(request)
        if not t:
            return err(404, ERR_NO_BOOK)
        b, a = self.ex.books[t].levels("BUY", 1), self.ex.books[t].levels("SELL", 1)
        mid = (b[0][0] + a[0][0]) / 2 if b and a else 0.5
        return web.json_response({"mid": str(round(mid, 4))})

    def _clob_market(self, m) -> dict:
        return {"condition_id": m.condition_id, "question_id": m.question_id, "market_slug": m.slug,
                "tokens": [{"token_id": t, "outcome": o} for t, o in zip(m.token_ids, m.outcomes)],
                "minimum_tick_size": m.tick_size, "minimum_order_size": m.min_size, "neg_risk": m.neg_risk,
                "accepting_orders": m.state == "trading", "active": m.state in ("created", "trading"),
                "closed": m.state in ("closed", "resolved"), "end_date_iso": iso(m.window_end)}

    async def clob_market(self, request):
        m = self.ex.by_condition.get(request.match_info["cid"])
        return web.json_response(self._clob_market(m)) if m else err(404, "market not found")

    async def market_by_token(self, request):
        m = self.ex.by_token.get(request.match_info["token"])
        return web.json_response({"condition_id": m.condition_id}) if m else err(404, ERR_NO_BOOK)

    # ---- CLOB REST: auth ---------------------------------------------------------------------------------
    def _l1(self, request) -> str | None:
        h = request.headers
        try:
            signer = crypto.clob_auth_signer(h["POLY_ADDRESS"], h["POLY_TIMESTAMP"], int(h.get("POLY_NONCE", "0")),
                                             h["POLY_SIGNATURE"])
        except (KeyError, ValueError, crypto.BadSignature):
            return None
        return signer if signer.lower() == h["POLY_ADDRESS"].lower() else None

    async def create_key(self, request):
        address = self._l1(request)
        if address is None:
            return err(401, "Invalid L1 Request headers")
        creds = crypto.derive_creds(address, int(request.headers.get("POLY_NONCE", "0")), self.server_secret)
        self.keys[creds["apiKey"]] = {"address": address.lower(), "secret": creds["secret"],
                                      "passphrase": creds["passphrase"]}
        return web.json_response(creds)

    derive_key = create_key

    async def _l2(self, request, body: str) -> dict | None:
        h = request.headers
        key = self.keys.get(h.get("POLY_API_KEY", ""))
        if key is None or h.get("POLY_PASSPHRASE") != key["passphrase"]:
            return None
        if h.get("POLY_ADDRESS", "").lower() != key["address"]:
            return None
        expected = crypto.hmac_signature(key["secret"], h.get("POLY_TIMESTAMP", ""), request.method, request.path,
                                         body)
        if h.get("POLY_SIGNATURE") != expected:
            return None
        return {"api_key": h["POLY_API_KEY"], **key}

    # ---- faults ------------------------------------------------------------------------------------------
    def _take(self, name: str) -> dict | None:
        f = self.faults.get(name)
        if f and f.get("count", 0) > 0:
            f["count"] -= 1
            return f
        return None

    def _engine_state(self) -> str:
        f = self.faults.get("engine_restart")
        if not f:
            return ""
        now = time.time()
        if now < f["until_425"]:
            return "restarting"
        if now < f["until_post_only"]:
            return "post_only"
        return ""

    # ---- CLOB REST: orders -------------------------------------------------------------------------------
    async def post_order(self, request):
        body = await request.text()
        if (f := self._take("clob_429")) is not None:
            return err(429, "Too Many Requests", headers={"Retry-After": str(f.get("retry_after", 1))})
        if self._take("clob_5xx") is not None:
            return err(500, "order timed out")
        if self._take("clob_garbage") is not None:
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html")
        state = self._engine_state()
        if state == "restarting":
            return web.Response(status=425, text="")
        key = await self._l2(request, body)
        if key is None:
            return err(401, ERR_KEY)
        try:
            doc = json.loads(body)
            order = doc["order"]
            fields = set(order)
        except (ValueError, KeyError, TypeError):
            return err(400, "Invalid order payload")
        if state == "post_only" and not doc.get("postOnly"):
            f = self.faults["engine_restart"]
            return err(503, ERR_POST_ONLY, code="post_only_mode",
                       retry_after_seconds=max(1, int(f["until_post_only"] - time.time())))
        if doc.get("owner") != key["api_key"]:
            return err(400, ERR_OWNER)
        if fields & crypto.V1_ONLY_FIELDS or not {"timestamp", "metadata", "builder"} <= fields:
            return err(400, "order_version_mismatch")
        resp, status = self._place(doc, order, key)
        return web.json_response(resp, status=status)

    def _place(self, doc: dict, order: dict, key: dict) -> tuple[dict, int]:
        m = self.ex.by_token.get(str(order.get("tokenId")))
        if m is None:
            return {"error": ERR_NO_BOOK}, 404
        contract, version = crypto.exchange_for(m.version, m.neg_risk)
        try:
            order_hash, signer = crypto.order_hash_and_signer(order, contract, version)
        except crypto.BadSignature:
            return {"error": "invalid signature"}, 400
        if signer.lower() != str(order.get("signer", "")).lower() or signer.lower() != key["address"]:
            return {"error": "invalid signature"}, 400
        if int(order.get("signatureType", 0)) == 0 and str(order["maker"]).lower() != signer.lower():
            return {"error": "invalid signature"}, 400
        otype = str(doc.get("orderType", "GTC")).upper()
        fault = self._take("post_timeout_after_accept")
        if order_hash in self.ex.orders:
            return self._record({"error": f"order {order_hash} is invalid. Duplicated."}, 400, order_hash, key, order)
        side = order["side"]
        maker_amt, taker_amt = int(order["makerAmount"]) / 1e6, int(order["takerAmount"]) / 1e6
        size, usd = (taker_amt, maker_amt) if side == "BUY" else (maker_amt, taker_amt)
        price = round(usd / size, 6) if size else 0.0
        steps = price / m.tick_size
        if abs(steps - round(steps)) > 1e-6 or not 0 < price < 1:
            return self._record({"error": f"order {order_hash} is invalid. Price ({price}) breaks minimum tick size "
                                          f"rule: {m.tick_size}"}, 400, order_hash, key, order)
        if size < m.min_size - 1e-9:
            return self._record({"error": f"order {order_hash} is invalid. Size ({size}) lower than the minimum: "
                                          f"{m.min_size:g}"}, 400, order_hash, key, order)
        if m.state != "trading":
            return self._record({"error": ERR_NOT_READY}, 400, order_hash, key, order)
        wallet = str(order["maker"]).lower()
        if (side == "BUY" and self.ex.balance(wallet) < usd - 1e-9) or \
                (side == "SELL" and self.ex.position(wallet, m.token_ids[m.token_ids.index(str(order['tokenId']))])
                 < size - 1e-9):
            return self._record({"error": ERR_BALANCE}, 400, order_hash, key, order)
        now = time.time()
        o = Order(order_hash, key["api_key"], wallet, m, str(order["tokenId"]), side, price, size, otype, now)
        if otype == "FOK" and self._available(o) < size - 1e-9:
            self.ex.orders[order_hash] = o
            o.status = "CANCELED"
            return self._record({"error": ERR_FOK}, 400, order_hash, key, order)
        self.ex.orders[order_hash] = o
        fills = self.ex.submit(o, now)
        self._push_book(o.token_id)
        if otype in ("FAK", "FOK") and o.matched <= 0:
            return self._record({"error": ERR_FAK}, 400, order_hash, key, order)
        taker = [r for r in fills if r["role"] == "taker"]
        filled_usd = sum(r["size"] * r["price"] for r in taker)
        making, taking = (filled_usd, o.matched) if side == "BUY" else (o.matched, filled_usd)
        resp = {"success": True, "errorMsg": "", "orderID": order_hash,
                "status": "matched" if o.matched > 0 else "live",
                "makingAmount": str(int(round(making * 1e6))), "takingAmount": str(int(round(taking * 1e6))),
                "transactionsHashes": sorted({r["transaction_hash"] for r in taker}), "tradeIDs": o.trade_ids}
        self.counters["orders"] += 1
        result = self._record(resp, 200, order_hash, key, order, filled=o.matched)
        if fault is not None:
            raise _DelayedAnswer(result, fault.get("delay_s", 3.0))
        return result

    def _available(self, o: Order) -> float:
        book = self.ex.books[o.token_id]
        opp = book.asks if o.side == "BUY" else book.bids
        return sum(m.remaining for m in opp if (m.price <= o.price + 1e-9 if o.side == "BUY"
                                                 else m.price >= o.price - 1e-9))

    def _record(self, resp: dict, status: int, order_hash: str, key: dict, order: dict,
                filled: float = 0.0) -> tuple[dict, int]:
        self.ex.record("order", order_hash=order_hash, owner=key["api_key"], http=status,
                       status=resp.get("status") or "rejected", error=resp.get("error", ""), filled_size=filled,
                       side=order.get("side"), token_id=str(order.get("tokenId")))
        return resp, status

    async def get_order(self, request):
        key = await self._l2(request, "")
        if key is None:
            return err(401, ERR_KEY)
        o = self.ex.orders.get(request.match_info["hash"])
        if o is None or o.owner != key["api_key"]:
            return web.json_response(None)
        return web.json_response(self._order_json(o))

    def _order_json(self, o: Order) -> dict:
        return {"id": o.order_hash, "status": o.status, "owner": o.owner, "maker_address": o.wallet,
                "market": o.market.condition_id, "asset_id": o.token_id, "side": o.side,
                "original_size": str(o.size), "size_matched": str(o.matched), "price": str(o.price),
                "outcome": o.market.outcomes[o.market.token_ids.index(o.token_id)], "order_type": o.order_type,
                "created_at": int(o.created), "expiration": "0", "associate_trades": o.trade_ids}

    async def get_orders(self, request):
        key = await self._l2(request, "")
        if key is None:
            return err(401, ERR_KEY)
        live = [self._order_json(o) for o in self.ex.orders.values() if o.owner == key["api_key"] and
                o.status == "LIVE"]
        return web.json_response({"data": live, "next_cursor": "LTE=", "limit": 100, "count": len(live)})

    async def get_trades(self, request):
        key = await self._l2(request, "")
        if key is None:
            return err(401, ERR_KEY)
        rows = [r for r in self.ex.trades if r["wallet"] == key["address"]]
        data = [{"id": f"trade-{i}", "market": r["condition_id"], "asset_id": r["token_id"], "side": r["side"],
                 "size": str(r["size"]), "price": str(r["price"]), "status": "TRADE_STATUS_CONFIRMED",
                 "match_time": str(r["timestamp"]), "outcome": r["outcome"], "owner": key["api_key"],
                 "maker_address": r["wallet"], "transaction_hash": r["transaction_hash"],
                 "trader_side": r["role"].upper(), "maker_orders": []} for i, r in enumerate(rows)]
        return web.json_response({"limit": 100, "next_cursor": "LTE=", "count": len(data), "data": data})

    async def cancel(self, request):
        body = await request.text()
        key = await self._l2(request, body)
        if key is None:
            return err(401, ERR_KEY)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            return err(400, "Invalid order payload")
        if request.path == "/cancel-all":
            ids = [h for h, o in self.ex.orders.items() if o.owner == key["api_key"] and o.status == "LIVE"]
        elif request.path == "/orders":
            ids = doc if isinstance(doc, list) else []
        else:
            ids = [doc.get("orderID", "")]
        canceled, not_canceled = [], {}
        for h in ids:
            o = self.ex.orders.get(h)
            if o is None or o.owner != key["api_key"] or o.status != "LIVE":
                not_canceled[h] = "order can't be found - already canceled or matched"
                continue
            book = self.ex.books[o.token_id]
            (book.bids if o.side == "BUY" else book.asks).remove(o)
            o.status = "CANCELED"
            canceled.append(h)
        return web.json_response({"canceled": canceled, "not_canceled": not_canceled})

    async def balance_allowance(self, request):
        key = await self._l2(request, "")
        if key is None:
            return err(401, ERR_KEY)
        bal = self.ex.balance(key["address"])
        return web.json_response({"balance": str(int(bal * 1e6)), "allowances": {crypto.EXCHANGE_V2: "max"}})

    async def heartbeat(self, request):
        body = await request.text()
        if await self._l2(request, body) is None:
            return err(401, ERR_KEY)
        return web.json_response({"status": "ok"})

    # ---- Gamma -------------------------------------------------------------------------------------------
    def _gamma_market(self, m) -> dict:
        doc = {"id": m.market_id, "question": m.title, "conditionId": m.condition_id, "slug": m.slug,
               "endDate": iso(m.window_end), "startDate": iso(m.created_at), "eventStartTime": iso(m.window_start),
               "outcomes": json.dumps(m.outcomes), "clobTokenIds": json.dumps(m.token_ids),
               "active": m.state in ("created", "trading"), "closed": m.state in ("closed", "resolved"),
               "acceptingOrders": m.state in ("created", "trading"), "enableOrderBook": True,
               "orderPriceMinTickSize": m.tick_size, "orderMinSize": m.min_size, "negRisk": m.neg_risk,
               "feesEnabled": True, "feeSchedule": {"rate": m.fee_rate, "exponent": m.fee_exponent,
                                                    "takerOnly": True, "rebateRate": 0.25},
               "version": m.version}
        if m.version == "v2":
            doc["positionIds"] = list(m.token_ids)
        return doc

    def _gamma_event(self, m) -> dict:
        return {"id": m.event_id, "ticker": m.event_slug, "slug": m.event_slug, "title": m.title,
                "startDate": iso(m.created_at), "startTime": iso(m.window_start), "endDate": iso(m.window_end),
                "active": m.state in ("created", "trading"), "closed": m.state in ("closed", "resolved"),
                "markets": [self._gamma_market(m)]}

    async def gamma_event_slug(self, request):
        m = self.ex.markets.get(request.match_info["slug"])
        return web.json_response(self._gamma_event(m)) if m else web.json_response({"error": "not found"},
                                                                                    status=404)

    async def gamma_events(self, request):
        slug = request.query.get("slug")
        ms = [self.ex.markets[slug]] if slug in self.ex.markets else ([] if slug else list(self.ex.markets.values()))
        return web.json_response([self._gamma_event(m) for m in ms])

    async def gamma_market_slug(self, request):
        m = self.ex.markets.get(request.match_info["slug"])
        return web.json_response(self._gamma_market(m)) if m else web.json_response({"error": "not found"},
                                                                                     status=404)

    async def gamma_markets(self, request):
        ms = list(self.ex.markets.values())
        if "slug" in request.query:
            ms = [m for m in ms if m.slug in request.query.getall("slug")]
        if "condition_ids" in request.query:
            wanted = {c.lower() for v in request.query.getall("condition_ids") for c in v.split(",")}
            ms = [m for m in ms if m.condition_id in wanted]
        return web.json_response([self._gamma_market(m) for m in ms])

    # ---- Data API ----------------------------------------------------------------------------------------
    def _indexed(self, user: str, taker_only: bool) -> list[dict]:
        cutoff = time.time() - self.data_api_delay
        rows = [r for r in self.ex.trades if r["wallet"] == user.lower() and r["indexed_at"] <= cutoff
                and (r["role"] == "taker" or not taker_only)]
        return sorted(rows, key=lambda r: -r["indexed_at"])

    async def data_v2_trades(self, request):
        q = request.query
        user = q.get("user", "")
        if not user.startswith("0x"):
            return web.json_response({"error": "user is required", "code": "invalid_request", "parameter": "user",
                                      "retryable": False, "trace_id": "sim"}, status=400)
        limit = min(int(q.get("limit", 100)), 1000)
        offset = int(base64.b64decode(q["cursor"]).decode()) if q.get("cursor") else 0
        rows = self._indexed(user, q.get("taker_only", "true") == "true")
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        data = [{"proxy_wallet": r["wallet"], "side": r["side"], "token_id": r["token_id"],
                 "condition_id": r["condition_id"], "size": r["size"], "price": r["price"],
                 "timestamp": r["timestamp"], "title": r["title"], "slug": r["slug"], "icon": "",
                 "event_slug": r["event_slug"], "outcome": r["outcome"], "outcome_index": r["outcome_index"],
                 "name": "", "pseudonym": "", "bio": "", "profile_image": "", "profile_image_optimized": "",
                 "transaction_hash": r["transaction_hash"]} for r in page]
        return web.json_response({"data": data, "pagination": {
            "has_more": more, "limit": limit, "offset": offset,
            "next_cursor": base64.b64encode(str(offset + limit).encode()).decode() if more else None}})

    async def data_v1_trades(self, request):
        q = request.query
        rows = self._indexed(q.get("user", ""), q.get("takerOnly", "true") == "true")
        offset, limit = int(q.get("offset", 0)), min(int(q.get("limit", 100)), 500)
        return web.json_response([{
            "proxyWallet": r["wallet"], "side": r["side"], "asset": r["token_id"], "conditionId": r["condition_id"],
            "size": r["size"], "price": r["price"], "timestamp": r["timestamp"], "title": r["title"],
            "slug": r["slug"], "icon": "", "eventSlug": r["event_slug"], "outcome": r["outcome"],
            "outcomeIndex": r["outcome_index"], "name": "", "pseudonym": "", "bio": "", "profileImage": "",
            "profileImageOptimized": "", "transactionHash": r["transaction_hash"]}
            for r in rows[offset:offset + limit]])

    # ---- control -----------------------------------------------------------------------------------------
    async def ctl_source_fill(self, request):
        body = await request.json()
        now = time.time()
        m = self.ex.current(body.get("asset", "btc"), now) if body.get("window", "current") == "current" else \
            self.ex.markets[body["slug"]]
        token = m.token_ids[m.outcomes.index(body.get("outcome", "Up"))]
        side = body.get("side", "BUY")
        price = body.get("price") or (0.99 if side == "BUY" else 0.01)
        wallet = self.ex.source_wallet
        self.ex.balances[wallet] = 1e12
        self.ex.positions[(wallet, token)] = max(self.ex.position(wallet, token), 1e12)
        o = Order(self.ex.new_order_id(), "source", wallet, m, token, side, float(price), float(body.get("size", 10)),
                  "FAK", now)
        fills = self.ex.submit(o, now)
        self._push_book(token)
        mine = [f for f in fills if f["wallet"] == wallet]
        return web.json_response({"tx_hash": mine[0]["transaction_hash"] if mine else None,
                                  "condition_id": m.condition_id, "token_id": token, "slug": m.slug,
                                  "fills": mine, "match_time": now})

    async def ctl_faults(self, request):
        spec = await request.json()
        now = time.time()
        for name, params in spec.items():
            params = dict(params or {})
            if name == "engine_restart":
                secs = float(params.get("seconds", 5))
                self.faults[name] = {"until_425": now + secs, "until_post_only": now + 2 * secs}
            elif name == "rtds_stall":
                self.stalled_until = now + float(params.get("seconds", 20))
            elif name == "rtds_drop":
                for ws in list(self.rtds_clients):
                    asyncio.ensure_future(ws.close())
            elif name == "rtds_burst_hold":
                self.held = []
                self.hub.later(float(params.get("seconds", 2)), self._release_held)
            elif name == "malformed":
                self._send_malformed(int(params.get("count", 5)))
            else:
                params.setdefault("count", 1)
                self.faults[name] = params
        return web.json_response({"ok": True, "faults": self.faults})

    def _release_held(self) -> None:
        held, self.held = self.held or [], None
        for text in held:
            self._rtds_broadcast(text)

    def _send_malformed(self, count: int) -> None:
        """Truncated, oversized, type-confused and non-JSON frames on every websocket feed."""
        wallet = self.ex.source_wallet
        samples = ['{"topic":"activity","type":"trades","payload":{"proxyWallet":"' + wallet + '","price":"abc"',
                   "x" * 100_000, "[1,2,3]", "not json at all",
                   json.dumps({"topic": "activity", "type": "trades", "timestamp": 1,
                               "payload": {"proxyWallet": wallet, "side": 7, "price": [], "size": {}}}),
                   json.dumps({"topic": "activity", "type": "trades", "payload": "str"})]
        for i in range(count):
            text = samples[i % len(samples)]
            self.counters["malformed_sent"] += 1
            for ws in list(self.rtds_clients) + list(self.market_clients):
                if not ws.closed:
                    asyncio.ensure_future(self._safe_send(ws, text))

    async def ctl_state(self, request):
        by_owner: dict[str, int] = {}
        for o in self.ex.orders.values():
            by_owner[o.owner] = by_owner.get(o.owner, 0) + 1
        return web.json_response({"markets": len(self.ex.markets), "matches": self.ex.matches,
                                  "orders_by_owner": by_owner, "counters": self.counters,
                                  "rtds_clients": len(self.rtds_clients), "faults": self.faults})


class _DelayedAnswer(Exception):
    """The order was executed; the answer is withheld so the client times out (accepted-then-timed-out)."""

    def __init__(self, result, delay_s):
        super().__init__("delayed answer")
        self.result, self.delay_s = result, delay_s


@web.middleware
async def delayed_answers(request, handler):
    try:
        return await handler(request)
    except _DelayedAnswer as d:
        await asyncio.sleep(d.delay_s)
        resp, status = d.result
        return web.json_response(resp, status=status)


def clob_app(sim: Sim) -> web.Application:
    app = web.Application(middlewares=[delayed_answers], client_max_size=1 << 20)
    r = app.router
    r.add_get("/time", sim.time_)
    r.add_get("/version", sim.version)
    r.add_get("/tick-size", sim.tick_size)
    r.add_get("/neg-risk", sim.neg_risk)
    r.add_get("/fee-rate", sim.fee_rate)
    r.add_get("/book", sim.book)
    r.add_post("/books", sim.books)
    r.add_get("/price", sim.price)
    r.add_get("/midpoint", sim.midpoint)
    r.add_get("/clob-markets/{cid}", sim.clob_market)
    r.add_get("/markets/{cid}", sim.clob_market)
    r.add_get("/markets-by-token/{token}", sim.market_by_token)
    r.add_post("/auth/api-key", sim.create_key)
    r.add_get("/auth/derive-api-key", sim.derive_key)
    r.add_post("/order", sim.post_order)
    r.add_delete("/order", sim.cancel)
    r.add_delete("/orders", sim.cancel)
    r.add_delete("/cancel-all", sim.cancel)
    r.add_get("/data/order/{hash}", sim.get_order)
    r.add_get("/data/orders", sim.get_orders)
    r.add_get("/data/trades", sim.get_trades)
    r.add_get("/balance-allowance", sim.balance_allowance)
    r.add_get("/balance-allowance/update", sim.balance_allowance)
    r.add_post("/v1/heartbeats", sim.heartbeat)
    r.add_get("/ws/market", sim.market_ws)
    r.add_post("/_sim/source-fill", sim.ctl_source_fill)
    r.add_post("/_sim/faults", sim.ctl_faults)
    r.add_get("/_sim/state", sim.ctl_state)
    return app


def gamma_app(sim: Sim) -> web.Application:
    app = web.Application()
    app.router.add_get("/events", sim.gamma_events)
    app.router.add_get("/events/slug/{slug}", sim.gamma_event_slug)
    app.router.add_get("/markets", sim.gamma_markets)
    app.router.add_get("/markets/slug/{slug}", sim.gamma_market_slug)
    return app


def data_app(sim: Sim) -> web.Application:
    app = web.Application()
    app.router.add_get("/v2/trades", sim.data_v2_trades)
    app.router.add_get("/trades", sim.data_v1_trades)
    return app


def rtds_app(sim: Sim) -> web.Application:
    app = web.Application()
    app.router.add_get("/", sim.rtds)
    return app


