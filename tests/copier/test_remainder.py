"""A killed or partly filled FAK followed by a remainder order: never more than the intent's size in all, whatever
instant a kill -9 strikes. Against the scripted venue (real HTTP, real signatures, a venue log), with a real store."""
import time

import pytest
from helpers import fill, market
from test_executor import CREDS, KEY
from venue_stub import ScriptedClob, order_hash, serve

from copier.alerts import NullAlerts
from copier.clock import LiveClock
from copier.config import Config, ExecutionConfig
from copier.decision import decide
from copier.executor import ClobExecutor
from copier.exposure import ExposureBook
from copier.metrics import NullMetrics
from copier.pipeline import OrderStep
from copier.signing import OrderSigner
from copier.store import Store
from copier.transport import ClobTransport
from copier.types import Batch, OrderStatus

CFG = Config(execution=ExecutionConfig(post_timeout_s=0.3, retry_backoff_s=0.01, max_slippage_bps=300,
                                       max_remainder_orders=1))


class Crash(BaseException):
    """kill -9: nothing after it runs, no handler sees it."""


class NoBooks:
    def top(self, asset):
        return None


class Markets:
    def by_asset(self, asset):
        return market()


def _executor(url, store):
    signer = OrderSigner(KEY, 137, 0, "", CREDS.api_key)
    transport = ClobTransport(url, CREDS, signer.address, clock=LiveClock(), timeout_s=0.3)
    return ClobExecutor(CFG, signer=signer, transport=transport, store=store, clock=LiveClock(),
                        metrics=NullMetrics())


def _step(executor, store):
    return OrderStep(CFG, executor=executor, store=store, exposure=ExposureBook(), markets=Markets(), books=NoBooks(),
                     metrics=NullMetrics(), alerts=NullAlerts(), clock=LiveClock())


def _arm(executor, store, point):
    """Make the process die at `point` of the remainder's path (after the first order's answer)."""
    def die(*args, **kwargs):
        raise Crash(point)

    if point == "before_recording":
        store.record_remainder = die
    elif point == "after_recording":
        record = store.record_remainder

        def recorded_then_die(*args, **kwargs):
            record(*args, **kwargs)
            raise Crash(point)
        store.record_remainder = recorded_then_die
    elif point in ("after_signing", "on_the_wire", "after_the_answer"):
        submit = executor.submit

        def submit_then(intent, m):
            if not intent.parent_id:
                return submit(intent, m)
            if point == "after_signing":
                executor.transport.request = die
            elif point == "on_the_wire":
                sent = executor._sent

                def sent_then_die(*args, **kwargs):
                    sent(*args, **kwargs)
                    raise Crash(point)
                executor._sent = sent_then_die
            submit(intent, m)
            raise Crash(point)
        executor.submit = submit_then


@pytest.mark.parametrize("point", ["before_recording", "after_recording", "after_signing", "on_the_wire",
                                   "after_the_answer", None])
def test_a_remainder_never_makes_the_total_exceed_the_intent_across_a_crash(tmp_path, point):
    # The first FAK fills 40% at its limit; the remainder order would fill the rest.
    app = ScriptedClob([("200 OK", None, 0.4), ("200 OK", None, "take")])
    server = serve(app)
    url = f"http://127.0.0.1:{server.server_port}"
    path = str(tmp_path / "copier.sqlite")
    f = fill(1, size=20, t=time.time())
    batch = Batch(f.condition_id, f.outcome, f.asset, (f,), "leading", f.match_ts)
    intent = decide(ExposureBook(), batch, market(end_ts=f.match_ts + 900), f.match_ts, CFG)
    store = Store.open(path)
    try:
        executor = _executor(url, store)
        step = _step(executor, store)
        _arm(executor, store, point)
        try:
            step(intent, batch, market(end_ts=f.match_ts + 900))
        except Crash:
            pass
        store.close()
        # The restart: a new process on the same store, the same venue.
        store = Store.open(path)
        reports = _executor(url, store).recover()
        assert all(r.status is not OrderStatus.FAILED for r in reports)
    finally:
        server.stop()
    executed = sum(float(o["size_matched"]) for o in app.orders.values())
    assert executed <= intent.size + 1e-9, (point, executed)
    assert len({order_hash(b) for b in app.posts}) <= 2 and len(app.orders) <= 2    # its order and one remainder
    rows = list(store.orders_since(0))
    assert len({r["intent_id"] for r in rows}) == len(rows)               # one order per intent id, children too
    if point is None:
        assert executed == intent.size                                    # no crash: the remainder filled the rest
    store.close()
