"""What the latency work must not break: the signed order is committed before the venue can see the POST, INFO log
lines are deferred but never lost or reordered against warnings."""
import io
import json
import logging
import sqlite3

import gevent
from gevent.pywsgi import WSGIServer

from copier.clock import LiveClock
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
from helpers import T0, fill, market

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
