"""A scripted CLOB on loopback for the live executor: real HTTP, real signatures checked by hash, a venue log.

The venue's own record (what it executed) is kept apart from what it answers: every answer can be scripted to be
anything a real edge sends (a 404 before indexing, 401/403, 429, 5xx, an HTML page, a hang past the client's
timeout, a broken body), while `orders` says what really happened. Order hashes are computed with the simulator's
independent EIP-712 implementation.
"""
from __future__ import annotations

import json

import gevent
from gevent.pywsgi import WSGIServer

from polysim.crypto import EXCHANGE_V2, order_hash_and_signer

HTML = b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"
# What a lookup or a trade-history read can be answered with: "truth" tells what the venue did; the rest are edges.
ANSWERS = ("truth", "null", "empty", "404", "401", "403", "429", "500", "html", "timeout", "garbage")
HANG_S = 1.0                # longer than the executor's post_timeout_s in these tests


def order_hash(body: str) -> str:
    return order_hash_and_signer(json.loads(body)["order"], EXCHANGE_V2, "2")[0]


class ScriptedClob:
    def __init__(self, post_script=(), lookups=(), trades=()):
        """post_script: per POST, (HTTP status line, JSON answer or None for the venue's truthful answer, how):
        how = "take" (the venue executes it; default for a 200), a fraction (it matches that part, the rest is
        killed), "take_then_hang" (executes it, the answer never comes in time), "hang" (never reaches the engine),
        "" (refused, nothing executed).
        lookups / trades: one answer kind (ANSWERS) per GET /data/order and GET /data/trades; "truth" once spent."""
        self.post_script = list(post_script)
        self.lookup_script = list(lookups)
        self.trade_script = list(trades)
        self.posts: list[str] = []
        self.orders: dict[str, dict] = {}        # hash -> what the venue executed (the venue's log)
        self.lookups = 0
        self.trade_reads = 0
        self.funds_queries: list[str] = []
        self.funds_answer = ("200 OK", {"balance": "0", "allowances": {}})

    # ---- the venue's truth -------------------------------------------------------------------------------
    def _execute(self, body: str, fraction: float = 1.0) -> dict:
        """The venue matches `fraction` of the order at its limit (a FAK: the rest is killed)."""
        order = json.loads(body)["order"]
        shares, usd = (int(order["takerAmount"]), int(order["makerAmount"])) if order["side"] == "BUY" else \
            (int(order["makerAmount"]), int(order["takerAmount"]))
        shares, usd = round(shares * fraction / 10_000) * 10_000, round(usd * fraction / 10_000) * 10_000
        record = {"id": order_hash(body), "status": "MATCHED", "size_matched": str(shares / 1e6),
                  "price": str(round(usd / shares, 6)), "side": order["side"], "original_size": str(shares / 1e6)}
        self.orders[record["id"]] = record
        making, taking = (usd, shares) if order["side"] == "BUY" else (shares, usd)
        return {"success": True, "status": "matched", "orderID": record["id"], "makingAmount": str(making),
                "takingAmount": str(taking), "errorMsg": "", "tradeIDs": ["t-" + record["id"][-8:]]}

    def truthful_lookup(self, h: str):
        return self.orders.get(h)

    def truthful_trades(self) -> dict:
        rows = [{"id": "t-" + h[-8:], "taker_order_id": h, "size": o["size_matched"], "price": o["price"],
                 "status": "TRADE_STATUS_CONFIRMED", "maker_orders": []} for h, o in self.orders.items()]
        return {"data": rows, "next_cursor": "LTE=", "limit": 100, "count": len(rows)}

    # ---- WSGI --------------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if method == "POST" and path == "/order":
            return self._post(environ, start_response)
        if method == "GET" and path == "/balance-allowance":
            self.funds_queries.append(environ["QUERY_STRING"])
            return _json(start_response, *self.funds_answer)
        if method == "GET" and path.startswith("/data/order/"):
            self.lookups += 1
            kind = self.lookup_script.pop(0) if self.lookup_script else "truth"
            return self._answer(kind, start_response, lambda: self.truthful_lookup(path.rsplit("/", 1)[1]))
        if method == "GET" and path == "/data/trades":
            self.trade_reads += 1
            kind = self.trade_script.pop(0) if self.trade_script else "truth"
            return self._answer(kind, start_response, self.truthful_trades)
        start_response("404 Not Found", [])
        return [b""]

    def _post(self, environ, start_response):
        body = environ["wsgi.input"].read().decode()
        self.posts.append(body)
        scripted = self.post_script.pop(0) + (None, None) if self.post_script else ("200 OK", None, None)
        status, answer, how = scripted[:3]
        how = how if how is not None else ("take" if status.startswith("200") else "")
        h = order_hash(body)
        if h in self.orders:
            return _json(start_response, "400 Bad Request", {"error": f"order {h} is invalid. Duplicated."})
        if isinstance(how, float):
            answer = {**self._execute(body, how), **(answer or {})}
        elif how in ("take", "take_then_hang"):
            answer = {**self._execute(body), **(answer or {})}
        if how in ("take_then_hang", "hang"):
            gevent.sleep(HANG_S)
        return _json(start_response, status, answer if answer is not None else {})

    def _answer(self, kind: str, start_response, truth):
        if kind == "truth":
            return _json(start_response, "200 OK", truth())
        if kind == "null":
            return _json(start_response, "200 OK", None)
        if kind == "empty":
            return _json(start_response, "200 OK", {"data": [], "next_cursor": "LTE=", "limit": 100, "count": 0})
        if kind == "html":
            start_response("200 OK", [("Content-Type", "text/html")])
            return [HTML]
        if kind == "timeout":
            gevent.sleep(HANG_S)
            return _json(start_response, "200 OK", truth())
        if kind == "garbage":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"id": "0x01", "status": ']
        code = int(kind)
        return _json(start_response, f"{code} Error", {"error": f"edge says {code}"})


def _json(start_response, status: str, payload):
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(payload).encode()]


def serve(app: ScriptedClob) -> WSGIServer:
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    return server
