"""The live executor against a scripted CLOB on loopback: real HTTP, real signatures, a real sqlite file."""
import json

import gevent
import pytest
from gevent.pywsgi import WSGIServer

from copier.clock import FakeClock, LiveClock
from copier.config import Config, ExecutionConfig
from copier.decision import decide
from copier.errors import OperationalError
from copier.executor import ClobExecutor
from copier.exposure import ExposureBook
from copier.metrics import NullMetrics
from copier.signing import OrderSigner
from copier.store import Store
from copier.transport import ApiCreds, ClobTransport
from copier.types import Batch
from helpers import T0, fill, market

KEY = "0x" + "42" * 32
CREDS = ApiCreds("key-1", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=", "pass-1")


class ScriptedClob:
    """Answers POST /order from a script; remembers every body and every order it 'accepted'."""

    def __init__(self, script):
        self.script = list(script)
        self.posts: list[str] = []
        self.known: dict[str, dict] = {}
        self.lookups = 0
        self.funds_queries: list[str] = []
        self.funds_answer = ("200 OK", {"balance": "0", "allowances": {}})

    def __call__(self, environ, start_response):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if method == "POST" and path == "/order":
            body = environ["wsgi.input"].read().decode()
            self.posts.append(body)
            step = self.script.pop(0) if self.script else ("200", {"success": True, "status": "matched"})
            status, payload = step[0], step[1]
            order = json.loads(body)["order"]
            if len(step) > 2 and step[2] == "accept_then_hang":
                self.known[order["salt"]] = order
                gevent.sleep(1.0)
            if status.startswith("200"):
                self.known[order["salt"]] = order
                payload = {"orderID": "0x01", "makingAmount": order["makerAmount"],
                           "takingAmount": order["takerAmount"], "errorMsg": "", **payload}
            headers = [("Content-Type", "application/json")]
            if len(step) > 2 and isinstance(step[2], dict):
                headers += list(step[2].items())
            start_response(status, headers)
            return [json.dumps(payload).encode()]
        if method == "GET" and path == "/balance-allowance":
            self.funds_queries.append(environ["QUERY_STRING"])
            start_response(self.funds_answer[0], [("Content-Type", "application/json")])
            return [json.dumps(self.funds_answer[1]).encode()]
        if method == "GET" and path.startswith("/data/order/"):
            self.lookups += 1
            start_response("200 OK", [("Content-Type", "application/json")])
            if not self.known:
                return [b"null"]
            o = next(iter(self.known.values()))
            return [json.dumps({"id": path.rsplit("/", 1)[1], "status": "MATCHED",
                                "size_matched": str(int(o["takerAmount"]) / 1e6), "price": "0.5"}).encode()]
        start_response("404 Not Found", [])
        return [b""]


@pytest.fixture()
def env(tmp_path):
    servers, stores = [], []

    def make(script, clock=None, **exec_kw):
        app = ScriptedClob(script)
        server = WSGIServer(("127.0.0.1", 0), app, log=None)
        server.start()
        servers.append(server)
        cfg = Config(execution=ExecutionConfig(post_timeout_s=0.3, retry_backoff_s=0.01, **exec_kw))
        store = Store.open(str(tmp_path / "copier.sqlite"))
        stores.append(store)
        clock = clock or LiveClock()
        signer = OrderSigner(KEY, 137, 0, "", CREDS.api_key)
        transport = ClobTransport(f"http://127.0.0.1:{server.server_port}", CREDS, signer.address, clock=clock,
                                  timeout_s=cfg.execution.post_timeout_s)
        ex = ClobExecutor(cfg, signer=signer, transport=transport, store=store, clock=clock, metrics=NullMetrics())
        return app, ex, store

    yield make
    for s in servers:
        s.stop()
    for st in stores:
        st.close()


def _decided(store, n=1):
    f = fill(n, size=20)
    d = decide(ExposureBook(), Batch(f.condition_id, f.outcome, f.asset, (f,), "leading", T0), market(), T0, Config())
    store.record_decision([f], d, 1)
    return d


def test_matched_order_reports_filled_shares_and_is_persisted_before_send(env):
    app, ex, store = env([("200 OK", {"success": True, "status": "matched"})])
    d = _decided(store)
    r = ex.submit(d, market())
    assert r.status == "MATCHED" and r.filled_size == 20.0 and abs(r.avg_price - 0.5) < 1e-9
    row = store.order_for(d.intent_id)
    assert row["body"] == app.posts[0] and row["order_hash"] == r.order_hash and row["status"] == "MATCHED"


def test_transient_failures_retry_the_same_signed_bytes(env):
    app, ex, store = env([("500 Internal Server Error", {"error": "order timed out"}),
                          ("429 Too Many Requests", {"error": "Too Many Requests"}, {"Retry-After": "0.05"}),
                          ("425 Too Early", {"error": "engine restarting"}),
                          ("200 OK", {"success": True, "status": "matched"})])
    d = _decided(store)
    r = ex.submit(d, market())
    assert r.status == "MATCHED" and r.attempts == 4
    assert len(set(app.posts)) == 1 and len(app.posts) == 4


def test_retries_stop_when_the_retry_budget_is_spent(env):
    clock = FakeClock(T0)                     # sleeps advance it: the budget is counted in backoff time
    outage = [("503 Service Unavailable", {"error": "Trading is currently disabled"})] * 20
    app, ex, store = env(outage, clock=clock, retry_budget_s=1.0, max_post_attempts=20)
    r = ex.submit(_decided(store), market())
    # backoff 0.01, 0.02, 0.04, ... : the 8th wait (1.28 s in all) would pass the 1 s budget
    assert r.status == "FAILED" and r.attempts == 7 and len(set(app.posts)) == 1 and len(app.posts) == 7
    assert app.lookups == 1                   # a 5xx may have reached the engine: asked by hash before failing


def test_accepted_then_timed_out_is_resolved_by_hash_without_a_second_order(env):
    app, ex, store = env([("200 OK", {"success": True, "status": "matched"}, "accept_then_hang"),
                          ("400 Bad Request", {"error": "order 0x01 is invalid. Duplicated."})])
    d = _decided(store)
    r = ex.submit(d, market())
    assert r.status == "MATCHED" and r.filled_size == 20.0
    assert app.lookups == 1 and len(set(app.posts)) == 1 and len(app.known) == 1


def test_fak_without_liquidity_is_killed_and_bad_orders_rejected(env):
    app, ex, store = env([("400 Bad Request", {"error": "no orders found to match with FAK order. FAK orders are "
                                                         "partially filled or killed if no match is found."}),
                          ("400 Bad Request", {"error": "not enough balance / allowance"})])
    assert ex.submit(_decided(store, 1), market()).status == "KILLED"
    r = ex.submit(_decided(store, 2), market())
    assert r.status == "REJECTED" and "balance" in r.error and len(app.posts) == 2


def test_auth_failure_is_operational(env):
    app, ex, store = env([("401 Unauthorized", {"error": "Unauthorized/Invalid api key"})])
    with pytest.raises(OperationalError):
        ex.submit(_decided(store), market())


def test_a_second_submit_of_one_intent_never_posts(env):
    app, ex, store = env([])
    d = _decided(store)
    assert ex.submit(d, market()).status == "MATCHED"
    again = ex.submit(d, market())
    assert again.status == "REJECTED" and len(app.posts) == 1


def _crashed_after_persisting(ex, store, d):
    signed = ex.signer.sign(d, market())
    store.record_signed(d.intent_id, signed.order_hash, signed.body, ex.clock.now_ns())
    return signed


def test_recover_reposts_the_persisted_bytes_of_an_order_the_venue_never_saw(env):
    app, ex, store = env([])
    d1, d2 = _decided(store, 1), _decided(store, 2)
    signed = _crashed_after_persisting(ex, store, d1)
    reports = {r.intent_id: r for r in ex.recover(may_repost=True)}
    assert reports[d1.intent_id].status == "MATCHED"
    assert reports[d2.intent_id].status == "ABANDONED"        # decided, never signed
    assert app.posts == [signed.body] and app.lookups == 1   # looked up first, then the same bytes, never re-signed
    assert store.unresolved_orders() == [] and store.orphan_intents() == []


def test_recover_never_reposts_when_halted_or_stale(env):
    app, ex, store = env([])
    d1 = _decided(store, 1)
    _crashed_after_persisting(ex, store, d1)
    assert [r.status for r in ex.recover(may_repost=False)] == ["FAILED"]
    d2 = _decided(store, 2)
    signed = ex.signer.sign(d2, market())
    store.record_signed(d2.intent_id, signed.order_hash, signed.body, ex.clock.now_ns() - int(31e9))  # > 30 s old
    assert [r.status for r in ex.recover(may_repost=True)] == ["FAILED"]
    assert app.posts == []


def test_recover_adopts_an_order_the_venue_has(env):
    app, ex, store = env([])
    d = _decided(store, 1)
    signed = _crashed_after_persisting(ex, store, d)
    app.known["x"] = json.loads(signed.body)["order"]       # the POST reached the venue before the crash
    [report] = ex.recover(may_repost=True)
    assert report.status == "MATCHED" and report.filled_size == d.size and app.posts == []


def test_reconcile_resolves_orders_left_unknown(env):
    app, ex, store = env([])
    d = _decided(store, 1)
    signed = _crashed_after_persisting(ex, store, d)
    store.update_order(d.intent_id, 1, status="UNKNOWN", error="lookups got no answer")
    app.known["x"] = json.loads(signed.body)["order"]
    [report] = ex.reconcile()
    assert report.status == "MATCHED" and store.unresolved_orders() == [] and app.posts == []


def test_funds_are_read_for_the_collateral_and_bad_answers_give_none(env):
    """(The L2 signature over the path without the query is checked by the simulator: tests/e2e.)"""
    app, ex, _ = env([])
    app.funds_answer = ("200 OK", {"balance": "3500000", "allowances": {"0xe111": "0"}})
    funds = ex.funds()
    assert funds.balance_usd == 3.5 and funds.allowances_usd == (("0xe111", 0.0),)
    assert app.funds_queries == ["asset_type=COLLATERAL&signature_type=0"]
    app.funds_answer = ("200 OK", {"balance": "a lot"})
    assert ex.funds() is None
    app.funds_answer = ("503 Service Unavailable", {"error": "Trading is currently disabled"})
    assert ex.funds() is None
