"""The live executor against a scripted CLOB on loopback: real HTTP, real signatures, a real sqlite file."""

import pytest
from helpers import T0, fill, market
from venue_stub import ScriptedClob, order_hash, serve

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
from copier.types import Batch, OrderStatus

KEY = "0x" + "42" * 32
CREDS = ApiCreds("key-1", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=", "pass-1")


class Gate:
    """Refuses with `reason` once armed; counts the questions."""

    def __init__(self):
        self.reason = None
        self.asked = 0

    def refusal(self, intent):
        self.asked += 1
        return (self.reason, "test gate") if self.reason else None


@pytest.fixture()
def env(tmp_path):
    servers, stores = [], []

    def make(script=(), clock=None, lookups=(), trades=(), gate=None, **exec_kw):
        app = ScriptedClob(script, lookups, trades)
        server = serve(app)
        servers.append(server)
        cfg = Config(execution=ExecutionConfig(post_timeout_s=0.3, retry_backoff_s=0.01, **exec_kw))
        store = Store.open(str(tmp_path / "copier.sqlite"))
        stores.append(store)
        clock = clock or LiveClock()
        signer = OrderSigner(KEY, 137, 0, "", CREDS.api_key)
        transport = ClobTransport(f"http://127.0.0.1:{server.server_port}", CREDS, signer.address, clock=clock,
                                  timeout_s=cfg.execution.post_timeout_s)
        ex = ClobExecutor(cfg, signer=signer, transport=transport, store=store, clock=clock, metrics=NullMetrics(),
                          gate=gate)
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
    assert r.status is OrderStatus.MATCHED and r.filled_size == 20.0 and abs(r.avg_price - 0.5) < 1e-9
    row = store.order_for(d.intent_id)
    assert row["body"] == app.posts[0] and row["order_hash"] == r.order_hash == order_hash(app.posts[0])
    assert row["status"] == "MATCHED"


def test_transient_failures_retry_the_same_signed_bytes(env):
    app, ex, store = env([("500 Internal Server Error", {"error": "order timed out"}),
                          ("429 Too Many Requests", {"error": "Too Many Requests"}),
                          ("425 Too Early", {"error": "engine restarting"}),
                          ("200 OK", None)])
    d = _decided(store)
    r = ex.submit(d, market())
    assert r.status is OrderStatus.MATCHED and r.attempts == 4
    assert len(set(app.posts)) == 1 and len(app.posts) == 4


def test_an_outage_past_the_retry_budget_stays_unknown_until_the_orders_horizon(env):
    clock = FakeClock(T0)                     # sleeps advance it: the budget is counted in backoff time
    outage = [("503 Service Unavailable", {"error": "Trading is currently disabled"})] * 20
    app, ex, store = env(outage, clock=clock, retry_budget_s=1.0, max_post_attempts=20)
    d = _decided(store)
    r = ex.submit(d, market())
    # backoff 0.01, 0.02, 0.04, ... : the 8th wait (1.28 s in all) would pass the 1 s budget
    assert r.attempts == 7 and len(set(app.posts)) == 1 and len(app.posts) == 7
    # A 5xx may have reached the engine: the venue has no such order and no trade of it, but the order's horizon has
    # not passed, so nothing proves it will not show up: unresolved, still reserved.
    assert r.status is OrderStatus.UNKNOWN and app.lookups == 1 and app.trade_reads == 1
    clock.advance(ex.cfg.order_horizon_s + 1)
    [late] = ex.reconcile()
    assert late.status is OrderStatus.FAILED and "no trade" in late.error and app.posts == [app.posts[0]] * 7


def test_accepted_then_timed_out_is_resolved_by_hash_without_a_second_order(env):
    app, ex, store = env([("200 OK", None, "take_then_hang")])
    d = _decided(store)
    r = ex.submit(d, market())
    assert r.status is OrderStatus.MATCHED and r.filled_size == 20.0
    assert app.lookups == 1 and len(set(app.posts)) == 1 and len(app.orders) == 1


def test_fak_without_liquidity_is_killed_and_bad_orders_rejected(env):
    app, ex, store = env([("400 Bad Request", {"error": "no orders found to match with FAK order. FAK orders are "
                                                         "partially filled or killed if no match is found."}),
                          ("400 Bad Request", {"error": "not enough balance / allowance"})])
    assert ex.submit(_decided(store, 1), market()).status is OrderStatus.KILLED
    r = ex.submit(_decided(store, 2), market())
    assert r.status is OrderStatus.REJECTED and "balance" in r.error and len(app.posts) == 2


def test_a_404_page_after_a_post_is_not_a_refusal(env):
    app, ex, store = env([("404 Not Found", "<html>not found</html>", "take")])
    r = ex.submit(_decided(store), market())
    assert r.status is OrderStatus.MATCHED and r.filled_size == 20.0 and app.lookups == 1


def test_auth_failure_is_operational(env):
    app, ex, store = env([("401 Unauthorized", {"error": "Unauthorized/Invalid api key"})])
    with pytest.raises(OperationalError):
        ex.submit(_decided(store), market())


def test_a_second_submit_of_one_intent_never_posts(env):
    app, ex, store = env([])
    d = _decided(store)
    assert ex.submit(d, market()).status is OrderStatus.MATCHED
    again = ex.submit(d, market())
    assert again.status is OrderStatus.REJECTED and len(app.posts) == 1


def test_a_delayed_answer_is_not_booked_as_filled_and_is_reconciled(env):
    app, ex, store = env([("200 OK", {"status": "delayed"})])
    d = _decided(store)
    r = ex.submit(d, market())
    assert r.status is OrderStatus.DELAYED and r.filled_size == 0.0
    assert [row["status"] for row in store.unresolved_orders()] == ["DELAYED"]
    ex._rechecks.clear()                          # due now
    [done] = ex.reconcile()
    assert done.status is OrderStatus.MATCHED and done.filled_size == 20.0 and store.unresolved_orders() == []


def test_the_gate_refuses_before_signing_and_before_every_retry(env):
    gate = Gate()
    gate.reason = "halted"
    app, ex, store = env([], gate=gate)
    d1 = _decided(store, 1)
    r = ex.submit(d1, market())
    assert r.status is OrderStatus.ABANDONED and "halted" in r.error and app.posts == []
    assert store.order_for(d1.intent_id)["status"] == "ABANDONED" and store.unresolved_orders() == []
    # A definite refusal (429), then the gate closes: no second attempt, and nothing was taken.
    gate.reason = None
    app.post_script = [("429 Too Many Requests", {"error": "Too Many Requests"})]
    original = ex._wait_to_retry

    def close_then_wait(*args):
        gate.reason = "stopping"
        return original(*args)

    ex._wait_to_retry = close_then_wait
    r = ex.submit(_decided(store, 2), market())
    assert r.status is OrderStatus.FAILED and len(app.posts) == 1 and app.orders == {}
    # An ambiguous attempt (timeout), then the gate closes: no retry, the venue is asked what happened.
    gate.reason = None
    app.post_script = [("200 OK", None, "take_then_hang")]
    r = ex.submit(_decided(store, 3), market())
    assert r.status is OrderStatus.MATCHED and len(app.posts) == 2 and app.lookups == 1


def _crashed_after_persisting(ex, store, d, age_s=0.0):
    signed = ex.signer.sign(d, market())
    store.record_signed(d.intent_id, signed.order_hash, signed.body, ex.clock.now_ns() - int(age_s * 1e9))
    return signed


def test_recover_reposts_the_persisted_bytes_of_an_order_the_venue_never_saw(env):
    app, ex, store = env([])
    d1, d2 = _decided(store, 1), _decided(store, 2)
    signed = _crashed_after_persisting(ex, store, d1)
    reports = {r.intent_id: r for r in ex.recover()}
    assert reports[d1.intent_id].status is OrderStatus.MATCHED
    assert reports[d2.intent_id].status is OrderStatus.ABANDONED       # decided, never signed
    assert app.posts == [signed.body] and app.lookups == 1             # looked up first, then the same bytes
    assert store.unresolved_orders() == [] and store.orphan_intents() == []


def test_recover_never_reposts_what_the_gate_refuses_and_fails_it_only_past_its_horizon(env):
    gate = Gate()
    gate.reason = "stale_signal"
    clock = FakeClock(T0 + 100)
    app, ex, store = env([], gate=gate, clock=clock)
    d = _decided(store, 1)
    _crashed_after_persisting(ex, store, d)
    assert [r.status for r in ex.recover()] == [OrderStatus.UNKNOWN]
    assert app.posts == [] and gate.asked == 1
    clock.advance(ex.cfg.order_horizon_s + 1)
    assert [r.status for r in ex.reconcile()] == [OrderStatus.FAILED]
    assert app.posts == []


def test_recover_adopts_an_order_the_venue_has(env):
    app, ex, store = env([])
    d = _decided(store, 1)
    signed = _crashed_after_persisting(ex, store, d)
    app._execute(signed.body)                                   # the POST reached the venue before the crash
    [report] = ex.recover()
    assert report.status is OrderStatus.MATCHED and report.filled_size == d.size and app.posts == []


def test_reconcile_resolves_orders_left_unknown(env):
    app, ex, store = env([])
    d = _decided(store, 1)
    signed = _crashed_after_persisting(ex, store, d)
    store.update_order(d.intent_id, 1, status=OrderStatus.UNKNOWN, error="lookups got no answer")
    app._execute(signed.body)
    [report] = ex.reconcile()
    assert report.status is OrderStatus.MATCHED and store.unresolved_orders() == [] and app.posts == []


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
