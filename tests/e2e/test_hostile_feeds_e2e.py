"""`copier run` (a real process, dry run) with one peer replaced by a hostile one on loopback, the simulator serving
everything else. Through every hostile frame or answer (invalid UTF-8, deep nesting, wrong types, NaN, far-future
timestamps, HTML instead of JSON, binary, empty, huge) the process stays up, counts what it refused by reason, and
still records the next valid source fill in its sqlite store; a fill dated in the future is never recorded.
"""
import json
import os
import secrets
import signal
import sqlite3
import time

import httpx
import pytest
from hostile import BINARY, HostileHttp, HostileWebsocket, StatsdSink

from polylab.harness import DEFAULT_SOURCE, copier_config, eventually, run_copier, start_copier, write_config

SOURCE = DEFAULT_SOURCE
NO_CHAIN = {"use_chain_logs": False, "use_mempool": False}


# ---- helpers -----------------------------------------------------------------------------------------------------
def _market(sim, asset: str = "btc") -> dict:
    """The simulator's current window market for `asset`, as its Gamma serves it."""
    start = int(time.time() // sim.window_s * sim.window_s)
    event = httpx.get(f"{sim.urls['gamma']}/events/slug/{asset}-updown-15m-{start}", timeout=5).json()
    m = event["markets"][0]
    return {"condition_id": m["conditionId"], "tokens": json.loads(m["clobTokenIds"]), "slug": m["slug"],
            "event_slug": event["slug"]}


def _tx() -> str:
    return "0x" + secrets.token_hex(32)


def _payload(market: dict, tx: str, ts, price: float = 0.5, size: float = 10.0) -> dict:
    return {"asset": market["tokens"][0], "conditionId": market["condition_id"], "eventSlug": market["event_slug"],
            "outcome": "Up", "outcomeIndex": 0, "price": price, "proxyWallet": SOURCE, "side": "BUY", "size": size,
            "slug": market["slug"], "timestamp": ts, "transactionHash": tx}


def _rtds_frame(payload: dict) -> str:
    return json.dumps({"connection_id": "hostile", "payload": payload, "timestamp": int(time.time() * 1000),
                       "topic": "activity", "type": "trades"})


def _v2_row(market: dict, tx: str, ts) -> dict:
    return {"proxy_wallet": SOURCE, "side": "BUY", "token_id": market["tokens"][0],
            "condition_id": market["condition_id"], "size": 10, "price": 0.5, "timestamp": ts, "outcome": "Up",
            "outcome_index": 0, "transaction_hash": tx, "slug": market["slug"], "event_slug": market["event_slug"]}


def _page(*rows) -> bytes:
    return json.dumps({"data": list(rows), "pagination": {"has_more": False, "next_cursor": None}}).encode()


def _stored(db_path, tx: str) -> list[tuple]:
    """(feed, decision, reason, order status, avg price) of every stored fill of `tx`."""
    if not os.path.exists(db_path):
        return []
    with sqlite3.connect(db_path) as db:
        try:
            return db.execute("select f.feed, i.decision, i.reason, o.status, o.avg_price from fills f "
                              "join intents i on i.intent_id = f.intent_id "
                              "left join orders o on o.intent_id = f.intent_id where f.tx_hash = ?", (tx,)).fetchall()
        except sqlite3.OperationalError:           # not migrated yet
            return []


def _cursor(db_path) -> float | None:
    with sqlite3.connect(db_path) as db:
        row = db.execute("select value from kv where key = 'cursor:data_api'").fetchone()
    return json.loads(row[0]) if row else None


def _heartbeat_feeds(config) -> dict:
    out = run_copier("status", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    beat = json.loads(out.stdout)["heartbeat"] or {}
    return {f["name"]: f for f in beat.get("feeds", [])}


class Copier:
    """`copier run` as a subprocess with its config, log, store and a StatsD sink."""

    def __init__(self, tmp_path, sim, endpoints: dict, feeds: dict | None = None, markets: dict | None = None):
        self.statsd = StatsdSink()
        self.db = tmp_path / "copier.sqlite"
        cfg = copier_config(sim.urls, self.db, speed=900 / sim.window_s, statsd_port=self.statsd.port,
                            overrides={"endpoints": endpoints, "feeds": feeds or {}, "markets": markets or {}})
        self.config = write_config(tmp_path / "copier.yaml", cfg)
        self.log = tmp_path / "copier.log"
        self.proc = None

    def start(self) -> "Copier":
        self.proc = start_copier(self.config, self.log)
        return self

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        return code

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.statsd.stop()

    def refused(self, reason: str) -> float:
        return self.statsd.counter(f"copier.feed.refused.{reason}")

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def until(self, cond, timeout: float, what: str):
        """eventually(cond), failing at once if the copier process has exited."""
        def check():
            if not self.alive():
                pytest.fail(f"copier exited with {self.proc.returncode} waiting for {what}:\n{self.log_tail()}")
            return cond()
        return eventually(check, timeout, 0.3, what)


@pytest.fixture()
def copier(tmp_path, sim):
    made = []

    def make(endpoints: dict, feeds: dict | None = None, markets: dict | None = None) -> Copier:
        c = Copier(tmp_path, sim, endpoints, feeds, markets)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def _hostile_source_frames(market: dict) -> list[tuple[bytes, int]]:
    """What a hostile feed sends before the next valid fill: every kind of bad frame."""
    future = _payload(market, _tx(), int(time.time() * 1_000_000))          # microseconds: ~50,000 years ahead
    return [
        (b'{"topic": "activity", "type": "trades", "payload": {"price": "\xff\xfe"}}', 1),   # invalid UTF-8
        (b"[" * 30_000, 1),                                                                   # nested past recursion
        (b'{"topic": "activity", "type": ["trades"], "payload": {}}', 1),                     # unhashable type
        (json.dumps({"topic": "activity", "type": "trades", "payload": {**_payload(market, _tx(), 1), "price": [1],
                                                                         "size": {"n": 2}}}).encode(), 1),
        (_rtds_frame(_payload(market, _tx(), int(time.time()))).replace('"price": 0.5', '"price": NaN').encode(), 1),
        (_rtds_frame(_payload(market, _tx(), int(time.time()))).replace('"size": 10.0', '"size": 1' + "0" * 400
                                                                        ).encode(), 1),      # a 401-digit size
        (_rtds_frame(future).encode(), 1),                                                    # far-future timestamp
        (b"<html><body><h1>502 Bad Gateway</h1></body></html>", 1),
        (os.urandom(2048), BINARY),
        (b"", 1),
        (b'{"topic": "activity", "x": "' + b"x" * (9 * 1024 * 1024) + b'"}', 1),           # 9 MB
    ]


# ---- RTDS --------------------------------------------------------------------------------------------------------
def test_copier_run_survives_every_hostile_rtds_frame_and_records_the_next_fill(sim, tmp_path, copier):
    rtds = HostileWebsocket("rtds")
    c = copier({"rtds_ws": rtds.url}, NO_CHAIN).start()
    try:
        c.until(lambda: len(rtds.live()) >= 2 and len(rtds.received) >= 2, 30, "both RTDS sockets subscribed")
        sim.fresh_window(20)
        market = _market(sim)
        hostile = _hostile_source_frames(market)
        future_tx = json.loads(hostile[6][0])["payload"]["transactionHash"]
        for data, opcode in hostile:
            assert rtds.broadcast(data, opcode) >= 1
        valid_tx = _tx()
        rtds.broadcast(_rtds_frame(_payload(market, valid_tx, int(time.time()))))
        rows = c.until(lambda: _stored(c.db, valid_tx), 30, "the valid fill in the store")
        assert rows[0][0] == "rtds.trades" and rows[0][1] == "order", rows       # copied, not merely recorded
        assert c.alive(), c.log_tail()
        feeds = c.until(lambda: (f := _heartbeat_feeds(c.config)).get("rtds-a", {}).get("malformed", 0) >= 8 and f,
                        15, "the refusals in the heartbeat")
        assert feeds["rtds-a"]["errors"] == 0                       # each one refused as input, none an accident
        for reason in ("not_utf8", "too_deep", "not_json", "too_large", "future_timestamp", "malformed"):
            assert c.refused(reason) >= 1, (reason, c.statsd.counts)
        assert _stored(c.db, future_tx) == []
    finally:
        code = c.stop()
        rtds.stop()
    assert code == 0, c.log_tail()


# ---- the CLOB market channel -------------------------------------------------------------------------------------
def test_copier_run_survives_every_hostile_market_ws_frame_and_keeps_its_book(sim, tmp_path, copier):
    market_ws = HostileWebsocket("market")
    c = copier({"market_ws": market_ws.url}, NO_CHAIN).start()
    try:
        c.until(lambda: any("assets_ids" in r for r in market_ws.received), 30, "the book subscription")
        sim.fresh_window(20)
        market = _market(sim)
        token = market["tokens"][0]
        for data, opcode in _hostile_source_frames(market) + [
                (json.dumps({"event_type": "book", "asset_id": token, "bids": [{"price": "NaN", "size": "1"}],
                             "asks": []}).encode(), 1),
                (json.dumps([{"event_type": "price_change", "price_changes": [{"asset_id": [token]}]}]).encode(), 1),
                (json.dumps({"event_type": "tick_size_change", "asset_id": token, "old_tick_size": "0.01",
                             "new_tick_size": "0.0123"}).encode(), 1)]:
            market_ws.broadcast(data, opcode)
        # The next valid book: one ask no simulator book has. A copy that fills there proves it was applied.
        book = json.dumps([{"event_type": "book", "asset_id": token, "market": market["condition_id"], "bids": [],
                            "asks": [{"price": "0.02", "size": "100000"}], "timestamp": str(int(time.time() * 1000))}])
        market_ws.greeting = [book.encode()]            # again after any resubscription (a REST snapshot comes first)
        market_ws.broadcast(book)
        fill = sim.source_fill(asset="btc", outcome="Up", side="BUY", size=8)
        assert fill["token_id"] == token
        rows = c.until(lambda: _stored(c.db, fill["tx_hash"]), 30, "the copy of the next fill")
        assert rows[0][1:4] == ("order", "", "PAPER_FILLED") and rows[0][4] == pytest.approx(0.02), rows
        assert c.alive(), c.log_tail()
        for reason in ("not_utf8", "too_deep", "not_json", "too_large", "malformed"):
            assert c.refused(reason) >= 1, (reason, c.statsd.counts)
        assert c.statsd.counter("copier.feed.market_ws.errors") == 0
    finally:
        code = c.stop()
        market_ws.stop()
    assert code == 0, c.log_tail()


# ---- Polygon JSON-RPC: OrderFilled logs and pending matchOrders -------------------------------------------------
def _order_filled(market: dict, tx: str, block_ts: int) -> dict:
    from eth_abi import encode

    from copier.chain import TOPIC_ORDER_FILLED, pad_topic
    data = encode(["uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"],
                  [0, int(market["tokens"][0]), 5_000_000, 10_000_000, 0, b"\0" * 32, b"\0" * 32])
    exchange = "0xe111180000d2663c0091e4f400237545b87b996b"
    topics = [TOPIC_ORDER_FILLED, "0x" + "77" * 32, pad_topic(SOURCE), pad_topic(exchange)]
    return {"address": exchange, "topics": topics,
            "data": "0x" + data.hex(), "blockNumber": "0x10", "transactionHash": tx, "transactionIndex": "0x0",
            "blockHash": "0x" + secrets.token_hex(32), "blockTimestamp": hex(block_ts), "logIndex": "0x1",
            "removed": False}


def _match_orders(market: dict, tx: str, order_ts_ms: int) -> dict:
    """The source takes 12 Down shares at 0.50 from one maker (Down: its own batch, apart from the log's Up fill)."""
    from eth_abi import encode

    from copier.chain import MATCH_ORDERS_ARGS, MATCH_ORDERS_SELECTOR
    token = int(market["tokens"][1])

    def order(maker, making, taking, side):
        return (1, maker, maker, token, making, taking, side, 0, order_ts_ms, b"\0" * 32, b"\0" * 32, b"\1" * 65)
    args = [bytes.fromhex(market["condition_id"][2:]), order(SOURCE, 6_000_000, 12_000_000, 0),
            [order("0x" + "a1" * 20, 12_000_000, 6_000_000, 1)], 6_000_000, [12_000_000], 0, [0]]
    return {"hash": tx, "to": "0xe111180000d2663c0091e4f400237545b87b996b", "from": "0x" + "01" * 20,
            "input": MATCH_ORDERS_SELECTOR + encode(MATCH_ORDERS_ARGS, args).hex(), "blockNumber": None}


def test_copier_run_survives_hostile_json_rpc_logs_and_mempool_and_records_the_next_fills(sim, tmp_path, copier):
    node = HostileWebsocket("rpc")
    c = copier({"polygon_ws": node.url}, {"use_chain_logs": True, "use_mempool": True}).start()
    try:
        c.until(lambda: node.subscribed("logs") and node.subscribed("newPendingTransactions"), 30,
                "both chain subscriptions")
        sim.fresh_window(20)
        market = _market(sim)
        now = int(time.time())
        for data, opcode in _hostile_source_frames(market):
            node.broadcast(data, opcode)
        future_log_tx, future_mem_tx = _tx(), _tx()
        bad_logs = [{"topics": "nope"}, [1, 2], {**_order_filled(market, _tx(), now), "data": "0xzz"},
                    {**_order_filled(market, _tx(), now), "blockTimestamp": hex(now * 1_000_000)},
                    {**_order_filled(market, _tx(), now), "transactionHash": None},
                    _order_filled(market, future_log_tx, now * 1_000_000)]
        for result in bad_logs:
            node.notify("logs", result)
        for result in [{"input": 7, "to": None}, {**_match_orders(market, _tx(), now * 1000), "input": "0x3c2b4399" +
                                                  SOURCE[2:] + "ff" * 40},
                       _match_orders(market, future_mem_tx, now * 1_000_000), "0x" + "ab" * 32]:
            node.notify("newPendingTransactions", result)
        node.broadcast(json.dumps({"jsonrpc": "2.0", "id": [2], "result": {"head": float("inf")}}).replace(
            "Infinity", "NaN"))
        log_tx, mem_tx = _tx(), _tx()
        c.until(lambda: node.subscribed("logs") and node.subscribed("newPendingTransactions"), 30,
                "both chain subscriptions after the hostile messages")
        assert node.notify("logs", _order_filled(market, log_tx, int(time.time()))) >= 1
        assert node.notify("newPendingTransactions", _match_orders(market, mem_tx, int(time.time() * 1000))) >= 1
        logged = c.until(lambda: _stored(c.db, log_tx), 30, "the valid log's fill in the store")
        pending = c.until(lambda: _stored(c.db, mem_tx), 30, "the valid pending transaction's fill")
        assert logged[0][0] == "chain.logs" and pending[0][0] == "chain.mempool"
        assert c.alive(), c.log_tail()
        feeds = c.until(lambda: (f := _heartbeat_feeds(c.config)).get("chain-logs", {}).get("malformed", 0) >= 8
                        and f.get("chain-mempool", {}).get("malformed", 0) >= 8 and f, 15,
                        "the refusals in the heartbeat")
        assert feeds["chain-logs"]["errors"] == 0 and feeds["chain-mempool"]["errors"] == 0, feeds
        assert c.refused("future_timestamp") >= 3 and c.refused("not_utf8") >= 2, c.statsd.counts
        assert _stored(c.db, future_log_tx) == [] and _stored(c.db, future_mem_tx) == []
    finally:
        code = c.stop()
        node.stop()
    assert code == 0, c.log_tail()


# ---- the Data API (gap-fill) -------------------------------------------------------------------------------------
HOSTILE_ANSWERS = [
    (200, "application/json", b'{"data": [{"price": "\xff"}]}'),
    (200, "application/json", b"[" * 30_000),
    (200, "application/json", json.dumps({"data": {"rows": 1}, "pagination": []}).encode()),
    (200, "application/json", b'{"data": [{"price": NaN, "size": Infinity}], "pagination": {"has_more": NaN}}'),
    (200, "text/html", b"<html><body>Attention Required! | Cloudflare</body></html>"),
    (502, "text/html", b"<html><body>502 Bad Gateway</body></html>"),
    (200, "application/octet-stream", os.urandom(4096)),
    (200, "application/json", b""),
    (200, "application/json", b'{"data": [' + b",".join([b'{"x": "' + b"y" * 1024 + b'"}'] * 9000) + b"]}"),  # 9 MB
]


def _quiet_rtds():
    """An RTDS that answers PINGs and sends nothing: the data watchdog reconnects it, and every reconnect asks the
    gap-filler for a pass (about one a second with QUIET_RTDS_FEEDS)."""
    return HostileWebsocket("rtds", chatter=False)


QUIET_RTDS_FEEDS = {**NO_CHAIN, "data_watchdog_s": 1.0}


def test_copier_run_survives_every_hostile_data_api_answer_and_gap_fills_the_next_fill(sim, tmp_path, copier):
    rtds, data_api = _quiet_rtds(), HostileHttp()
    c = copier({"rtds_ws": rtds.url, "data_api": data_api.url}, QUIET_RTDS_FEEDS)
    sim.fresh_window(40)
    market = _market(sim)
    future_tx, valid_tx = _tx(), _tx()
    data_api.queue("/v2/trades", *HOSTILE_ANSWERS)
    data_api.steady["/v2/trades"] = lambda path, query: (200, "application/json", _page(
        _v2_row(market, future_tx, int(time.time() * 1_000_000)), _v2_row(market, valid_tx, int(time.time()))))
    c.start()
    try:
        rows = c.until(lambda: _stored(c.db, valid_tx), 60, "the valid row gap-filled into the store")
        assert data_api.pending("/v2/trades") == 0                  # it went through every hostile answer first
        assert rows[0][0] == "data_api" and rows[0][1] == "order", rows
        assert _stored(c.db, future_tx) == [] and _cursor(c.db) <= time.time()
        assert c.statsd.counter("copier.gapfill.errors") >= 8
        for reason in ("not_utf8", "too_deep", "not_json", "too_large", "future_timestamp", "malformed"):
            assert c.refused(reason) >= 1, (reason, c.statsd.counts)
        assert c.alive(), c.log_tail()
    finally:
        code = c.stop()
        rtds.stop()
        data_api.stop()
    assert code == 0, c.log_tail()


def test_far_future_data_api_timestamps_never_move_the_cursor_across_a_restart(sim, tmp_path, copier):
    rtds, data_api = _quiet_rtds(), HostileHttp()
    c = copier({"rtds_ws": rtds.url, "data_api": data_api.url}, QUIET_RTDS_FEEDS)
    sim.fresh_window(30)
    market = _market(sim)
    micro_tx, hour_ahead_tx, valid_tx = _tx(), _tx(), _tx()

    def poisoned() -> list[dict]:              # microseconds, and milliseconds an hour ahead: real rows' shapes
        now = time.time()
        return [_v2_row(market, micro_tx, int(now * 1_000_000)),
                _v2_row(market, hour_ahead_tx, int((now + 3600) * 1000))]
    data_api.steady["/v2/trades"] = lambda path, query: (200, "application/json", _page(*poisoned()))
    c.start()
    try:
        # Three passes: what the first one admitted (a leading fill is decided at once) is stored by the third.
        c.until(lambda: data_api.served("/v2/trades") >= 3, 40, "three passes over the poisoned page")
        assert _stored(c.db, micro_tx) == [] and _stored(c.db, hour_ahead_tx) == []
        cursor = _cursor(c.db)
        assert cursor is None or cursor <= time.time()
        assert c.refused("future_timestamp") >= 6
        assert c.stop() == 0
        data_api.steady["/v2/trades"] = lambda path, query: (200, "application/json", _page(
            *poisoned(), _v2_row(market, valid_tx, int(time.time()))))
        served = data_api.served("/v2/trades")
        c.start()
        rows = c.until(lambda: _stored(c.db, valid_tx), 40, "the real fill copied after the restart")
        assert data_api.served("/v2/trades") > served and rows[0][1] == "order", rows
        assert _stored(c.db, micro_tx) == [] and _stored(c.db, hour_ahead_tx) == []
        assert _cursor(c.db) <= time.time()
    finally:
        code = c.stop()
        rtds.stop()
        data_api.stop()
    assert code == 0, c.log_tail()


# ---- Gamma ------------------------------------------------------------------------------------------------------
def test_copier_run_starts_through_a_hostile_gamma_and_copies_on_the_markets_that_parse(sim, tmp_path, copier):
    gamma = HostileHttp(upstream=sim.urls["gamma"])

    def eth_with_a_string_fee_schedule(path, query):
        r = httpx.get(f"{sim.urls['gamma']}{path}" + (f"?{query}" if query else ""), timeout=5)
        doc = r.json()
        for m in (doc.get("markets", []) if isinstance(doc, dict) else doc):
            if m.get("slug", "").startswith("eth-"):
                m["feeSchedule"] = "0.07"                              # not an object: the start-up crash
        return r.status_code, "application/json", json.dumps(doc).encode()

    gamma.steady["/events/slug/eth-"] = eth_with_a_string_fee_schedule
    gamma.steady["/markets"] = eth_with_a_string_fee_schedule
    gamma.queue("/events/slug/xrp-", *[(200, ctype, body) for _, ctype, body in HOSTILE_ANSWERS[:5]],
                (200, "application/json", json.dumps({"markets": [{"conditionId": "0x" + "ab" * 32,
                                                                   "clobTokenIds": "[1]", "outcomes": '["Up"]',
                                                                   "endDate": 1.8e15}]}).encode()))
    c = copier({"gamma": gamma.url}, NO_CHAIN,
               {"slug_prefixes": ["btc-updown-15m", "eth-updown-15m", "xrp-updown-15m"]}).start()
    try:
        c.until(lambda: gamma.pending("/events/slug/xrp-") == 0, 40, "every hostile Gamma answer served")
        c.until(lambda: _heartbeat_feeds(c.config), 30, "a heartbeat after start-up")
        assert c.alive(), c.log_tail()
        sim.fresh_window(20)
        btc = sim.source_fill(asset="btc", outcome="Up", side="BUY", size=8)
        eth = sim.source_fill(asset="eth", outcome="Up", side="BUY", size=8)
        btc_rows = c.until(lambda: _stored(c.db, btc["tx_hash"]), 30, "the btc copy")
        eth_rows = c.until(lambda: _stored(c.db, eth["tx_hash"]), 30, "the eth fill recorded")
        assert btc_rows[0][1] == "order"
        assert eth_rows[0][1:3] == ("skip", "unknown_market")          # never priced on an unreadable fee schedule
        for reason in ("not_utf8", "too_deep", "not_json", "malformed", "future_timestamp"):
            assert c.refused(reason) >= 1, (reason, c.statsd.counts)
        assert c.statsd.counter("copier.feed.gamma.errors") == 0
        assert c.alive(), c.log_tail()
    finally:
        code = c.stop()
        gamma.stop()
    assert code == 0, c.log_tail()
