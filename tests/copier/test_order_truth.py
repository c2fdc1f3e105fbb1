"""Order truth: no answer never becomes FAILED. A matrix of what a lookup (and the trade history) can be answered
with, against a venue whose own log says what it executed; the store must end where the venue's log is."""
import json

import pytest
from helpers import T0, market
from test_executor import CREDS, KEY, _crashed_after_persisting, _decided
from venue_stub import ScriptedClob, serve

from copier.clock import FakeClock
from copier.config import Config, ExecutionConfig
from copier.executor import ClobExecutor
from copier.metrics import NullMetrics
from copier.signing import OrderSigner
from copier.store import Store
from copier.transport import ClobTransport
from copier.types import OrderStatus

EDGES = ["404", "401", "403", "429", "500", "html", "timeout", "garbage"]
NEVER_FINAL_WRONGLY = {OrderStatus.FAILED, OrderStatus.KILLED, OrderStatus.REJECTED, OrderStatus.ABANDONED,
                       OrderStatus.UNMATCHED}


@pytest.fixture()
def venue(tmp_path):
    made = []

    def make(post_script=(), lookups=(), trades=()):
        app = ScriptedClob(post_script, lookups, trades)
        server = serve(app)
        clock = FakeClock(T0 + 5)
        cfg = Config(execution=ExecutionConfig(post_timeout_s=0.3, retry_backoff_s=0.01, retry_budget_s=0.05))
        store = Store.open(str(tmp_path / "copier.sqlite"))
        signer = OrderSigner(KEY, 137, 0, "", CREDS.api_key)
        transport = ClobTransport(f"http://127.0.0.1:{server.server_port}", CREDS, signer.address, clock=clock,
                                  timeout_s=0.3)
        ex = ClobExecutor(cfg, signer=signer, transport=transport, store=store, clock=clock, metrics=NullMetrics())
        made.append((server, store))
        return app, ex, store, clock

    yield make
    for server, store in made:
        server.stop()
        store.close()


def settle(ex, clock, first):
    """Reconcile until the order is resolved or its horizon passed; every status the store held, in order."""
    seen = [first.status]
    for _ in range(40):
        if not first.status.unresolved and not ex.store.unresolved_orders():
            break
        clock.advance(31)
        seen += [r.status for r in ex.reconcile()]
        if clock.now() - T0 > ex.cfg.order_horizon_s + 100:
            break
    return seen


@pytest.mark.parametrize("edge", EDGES)
def test_an_order_the_venue_matched_is_never_failed_whatever_the_lookups_answer(venue, edge):
    # The POST executes but its answer never comes; the order index lags, and the edge answers `edge` meanwhile.
    app, ex, store, clock = venue([("200 OK", None, "take_then_hang"), ("503 Service Unavailable", "")],
                                  lookups=[edge, "null", edge, "null"], trades=[edge, "empty", edge])
    d = _decided(store)
    seen = settle(ex, clock, ex.submit(d, market()))
    assert not NEVER_FINAL_WRONGLY & set(seen), seen
    row = store.order_for(d.intent_id)
    truth = app.orders[row["order_hash"]]
    assert row["status"] == "MATCHED" and row["filled_size"] == float(truth["size_matched"]) == d.size
    assert len(app.orders) == 1 and len(set(app.posts)) == 1


@pytest.mark.parametrize("edge", EDGES)
def test_an_order_the_venue_never_took_fails_only_on_its_own_evidence_past_the_horizon(venue, edge):
    app, ex, store, clock = venue([("200 OK", None, "hang")] * 10,
                                  lookups=[edge, edge, "null"], trades=[edge, "empty"])
    d = _decided(store)
    first = ex.submit(d, market())
    seen = settle(ex, clock, first)
    assert OrderStatus.MATCHED not in seen and app.orders == {}
    assert seen[-1] is OrderStatus.FAILED
    assert all(s.unresolved for s in seen[:-1]), seen
    row = store.order_for(d.intent_id)
    assert row["status"] == "FAILED" and row["updated_ns"] / 1e9 - row["signed_ns"] / 1e9 > ex.cfg.order_horizon_s


@pytest.mark.parametrize("edge", EDGES)
def test_after_a_restart_a_duplicated_repost_is_never_failed(venue, edge):
    # The POST reached the venue just before a crash; after the restart the order index has not caught up: the
    # same bytes go again, the venue answers "duplicated", and the lookups answer `edge` for a while.
    app, ex, store, clock = venue(lookups=["null", edge, "null", edge], trades=["empty", edge, "empty"])
    d = _decided(store)
    signed = _crashed_after_persisting(ex, store, d)
    app._execute(signed.body)
    [first] = ex.recover()
    seen = settle(ex, clock, first)
    assert not NEVER_FINAL_WRONGLY & set(seen), seen
    assert app.posts == [signed.body]                                  # reposted once, the same bytes
    row = store.order_for(d.intent_id)
    assert row["status"] == "MATCHED" and row["filled_size"] == d.size


def test_the_trade_history_proves_a_fill_the_order_index_does_not_show(venue):
    app, ex, store, clock = venue([("200 OK", None, "take_then_hang"), ("502 Bad Gateway", "")],
                                  lookups=["null"] * 10)
    d = _decided(store)
    r = ex.submit(d, market())
    assert r.status is OrderStatus.MATCHED and r.filled_size == d.size and app.trade_reads == 1


class LimitPricedLookups(ScriptedClob):
    """The venue's order record gives the order's limit as its price (GET /data/order), as the CLOB does; the fills
    happened at a better price, which only the trade history shows."""

    def _execute(self, body, fraction=1.0):
        answer = super()._execute(body, fraction)
        self.fill_price = self.orders[answer["orderID"]]["price"]
        self.orders[answer["orderID"]]["price"] = "0.99" if json.loads(body)["order"]["side"] == "BUY" else "0.01"
        return answer

    def truthful_trades(self):
        doc = super().truthful_trades()
        for row in doc["data"]:
            row["price"] = self.fill_price
        return doc


def test_a_recovered_fill_is_priced_from_the_trade_history_not_the_order_limit(tmp_path):
    app = LimitPricedLookups([("200 OK", None, "take_then_hang"), ("502 Bad Gateway", "")])
    server = serve(app)
    try:
        clock = FakeClock(T0 + 5)
        cfg = Config(execution=ExecutionConfig(post_timeout_s=0.3, retry_backoff_s=0.01, retry_budget_s=0.05))
        store = Store.open(str(tmp_path / "copier.sqlite"))
        signer = OrderSigner(KEY, 137, 0, "", CREDS.api_key)
        transport = ClobTransport(f"http://127.0.0.1:{server.server_port}", CREDS, signer.address, clock=clock,
                                  timeout_s=0.3)
        ex = ClobExecutor(cfg, signer=signer, transport=transport, store=store, clock=clock, metrics=NullMetrics())
        d = _decided(store)
        r = ex.submit(d, market())
        assert r.status is OrderStatus.MATCHED and r.filled_size == d.size
        assert abs(r.avg_price - float(app.fill_price)) < 1e-9 and r.avg_price != 0.99
        assert store.order_for(d.intent_id)["avg_price"] == r.avg_price
        store.close()
    finally:
        server.stop()
