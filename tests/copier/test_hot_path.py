"""What the latency work must not break: the signed order is committed before the venue can see the POST, a pooled
connection the server closed is never written to, connections are kept warm, INFO log lines are deferred but never
lost or reordered against warnings."""
import io
import json
import logging
import sqlite3

import gevent
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer
from helpers import T0, fill, market

from copier.clock import FakeClock, LiveClock
from copier.config import Config, ExecutionConfig
from copier.decision import decide
from copier.executor import ClobExecutor
from copier.exposure import ExposureBook
from copier.logs import DeferredStreamHandler, JsonFormatter
from copier.metrics import NullMetrics
from copier.signing import OrderSigner
from copier.store import Store
from copier.transport import ApiCreds, ClobTransport
from copier.types import Batch

KEY = "0x" + "42" * 32
CREDS = ApiCreds("key-1", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=", "pass-1")


def test_the_venue_never_sees_an_order_whose_bytes_and_hash_are_not_committed(tmp_path):
    db_path = tmp_path / "copier.sqlite"
    seen = []

    def venue(environ, start_response):
        body = environ["wsgi.input"].read().decode()
        # Another connection, as a restarted process would read it: committed rows only.
        row = sqlite3.connect(db_path).execute("select order_hash, body, status from orders").fetchone()
        seen.append((body, row))
        order = json.loads(body)["order"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"success": True, "status": "matched", "orderID": "0x1", "errorMsg": "",
                            "makingAmount": order["makerAmount"], "takingAmount": order["takerAmount"]}).encode()]

    server = WSGIServer(("127.0.0.1", 0), venue, log=None)
    server.start()
    store = Store.open(str(db_path))
    try:
        cfg = Config(execution=ExecutionConfig(post_timeout_s=1.0))
        signer = OrderSigner(KEY, 137, 0, "", CREDS.api_key)
        transport = ClobTransport(f"http://127.0.0.1:{server.server_port}", CREDS, signer.address,
                                  clock=LiveClock(), timeout_s=1.0)
        ex = ClobExecutor(cfg, signer=signer, transport=transport, store=store, clock=LiveClock(),
                          metrics=NullMetrics())
        f = fill(1, size=20)
        d = decide(ExposureBook(), Batch(f.condition_id, f.outcome, f.asset, (f,), "leading", T0), market(), T0,
                   Config())
        store.record_decision([f], d, 1)
        report = ex.submit(d, market())
        body, row = seen[0]
        assert row is not None and row[0] == report.order_hash and row[1] == body and row[2] in ("SIGNED", "POSTING")
        final = store.order_for(d.intent_id)
        assert final["status"] == "MATCHED" and final["submit_ns"] == report.submit_ns > 0 and final["attempts"] == 1
    finally:
        store.close()
        server.stop()


class _ClosingServer:
    """Answers one request per connection, keep-alive advertised, then closes it (an idle timeout at the venue)."""

    def __init__(self):
        self.connections = 0
        self.requests = []
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()

    def handle(self, sock, _addr):
        self.connections += 1
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        self.requests.append(data.split(b"\r\n", 1)[0].decode())
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                     b"Connection: keep-alive\r\n\r\n{}")
        gevent.sleep(0.05)
        sock.close()


def test_a_pooled_connection_the_server_closed_is_replaced_before_the_order_is_written():
    srv = _ClosingServer()
    metrics = NullMetrics()
    t = ClobTransport(f"http://127.0.0.1:{srv.server.server_port}", CREDS, "0xabc", clock=LiveClock(),
                      timeout_s=1.0, metrics=metrics)
    t.warm(1)                                     # GET /time, then the server closes the idle connection
    gevent.sleep(0.2)
    resp = t.request("POST", "/order", "{}")      # would be an UnknownOutcome on the dead socket
    assert resp.status == 200 and srv.requests == ["GET /time HTTP/1.1", "POST /order HTTP/1.1"]
    assert metrics.counts["clob.stale_connections"] == 1 and metrics.counts["clob.connects"] == 2
    t.close()
    srv.server.stop()


def test_keep_warm_touches_idle_connections_and_tops_the_pool_up():
    hits = []

    def app(environ, start_response):
        hits.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    metrics = NullMetrics()
    t = ClobTransport(f"http://127.0.0.1:{server.server_port}", CREDS, "0xabc", clock=LiveClock(), timeout_s=1.0,
                      metrics=metrics)
    t.warm(2)
    t.keep_warm(3)
    assert hits == ["/time"] * 5 and metrics.counts["clob.connects"] == 3
    t.request("GET", "/time")
    assert metrics.counts["clob.connects"] == 3   # the order path reused a warm connection
    t.close()
    server.stop()


def _logger(stream, defer_s):
    handler = DeferredStreamHandler(stream, defer_s)
    handler.setFormatter(JsonFormatter(("hunter2",)))
    logger = logging.getLogger(f"test.deferred.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def test_info_lines_are_written_after_the_caller_yields_and_warnings_keep_their_order():
    stream = io.StringIO()
    logger, handler = _logger(stream, 0.01)
    logger.info("fill received", extra={"cid": "a1"})
    logger.info("decision order with hunter2")
    assert stream.getvalue() == ""                       # nothing formatted or written by the caller
    logger.warning("a warning")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["msg"] for x in lines] == ["fill received", "decision order with [redacted]", "a warning"]
    assert lines[0]["cid"] == "a1"
    logger.info("later")
    gevent.sleep(0.05)
    assert json.loads(stream.getvalue().splitlines()[-1])["msg"] == "later"


def test_held_info_lines_are_written_on_flush_at_shutdown():
    stream = io.StringIO()
    logger, handler = _logger(stream, 60.0)
    logger.info("held")
    handler.flush()
    assert json.loads(stream.getvalue())["msg"] == "held"


def test_commits_never_checkpoint_and_checkpoint_moves_the_wal_from_a_native_thread(tmp_path):
    store = Store.open(str(tmp_path / "copier.sqlite"))
    try:
        assert store.db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        rows = [{"dedupe_key": f"k{i}", "feed": "rtds.trades", "stream": "s", "recv_ns": i, "match_ts": 1.0,
                 "first": True} for i in range(20_000)]
        store.record_sightings(rows)
        main = (tmp_path / "copier.sqlite").stat().st_size
        assert (tmp_path / "copier.sqlite-wal").stat().st_size > 4 * main   # the rows are only in the WAL
        store.checkpoint()
        assert (tmp_path / "copier.sqlite").stat().st_size > 4 * main
        other = sqlite3.connect(tmp_path / "copier.sqlite")
        assert other.execute("select count(*) from sightings").fetchone() == (20_000,)
    finally:
        store.close()


def test_every_greenlet_uses_the_one_store_connection(tmp_path):
    store = Store.open(str(tmp_path / "copier.sqlite"))
    try:
        assert gevent.spawn(store.db.connection).get() is store.db.connection()
    finally:
        store.close()


def test_the_request_written_in_one_buffer_is_plain_http_with_the_signed_headers():
    raw = []

    def handle(sock, _addr):
        while True:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
            body = rest
            while len(body) < int(headers.get("Content-Length", 0)):
                body += sock.recv(65536)
            raw.append((head.decode().split("\r\n")[0], headers, body.decode()))
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                         b'{"ok":true}')

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    clock = FakeClock(T0)
    t = ClobTransport(f"http://127.0.0.1:{server.server_port}", CREDS, "0xabc", clock=clock, timeout_s=1.0)
    body = '{"order":{"salt":1}}'
    assert t.request("POST", "/order", body).body == {"ok": True}
    assert t.request("GET", "/data/order/0x01").body == {"ok": True}      # the same keep-alive connection
    (line1, h1, b1), (line2, h2, b2) = raw
    assert line1 == "POST /order HTTP/1.1" and b1 == body and h1["Content-Length"] == str(len(body))
    assert h1["Host"] == f"127.0.0.1:{server.server_port}"
    assert {k: h1[k] for k in t.headers("POST", "/order", body)} == t.headers("POST", "/order", body)
    assert line2 == "GET /data/order/0x01 HTTP/1.1" and b2 == "" and "Content-Length" not in h2
    assert h2["POLY_SIGNATURE"] == t.headers("GET", "/data/order/0x01")["POLY_SIGNATURE"]
    t.close()
    server.stop()
    try:
        ClobTransport("http://127.0.0.1:1", ApiCreds("k\r\nX: y", "s", "p"), "0xabc", clock=clock, timeout_s=1.0)
        raise AssertionError("a header-splitting credential was accepted")
    except ValueError:
        pass
