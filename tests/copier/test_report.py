"""The report and the acceptance verdict, from a real store file — including proof the verdict can fail."""
import pytest

from copier.config import Config
from copier.decision import decide
from copier.exposure import ExposureBook
from copier.report import build_report, render_text
from copier.store import Store
from copier.types import Batch, Side
from helpers import T0, fill, market


@pytest.fixture()
def store(tmp_path):
    s = Store.open(str(tmp_path / "r.sqlite"))
    yield s
    s.close()


def _record(store, fills, kind, submit_after_ms, status="MATCHED"):
    b = Batch(fills[0].condition_id, fills[0].outcome, fills[0].asset, tuple(fills), kind, T0)
    d = decide(ExposureBook(), b, market(), T0, Config())
    first = min(f.recv_ns for f in fills)
    store.record_decision(list(fills), d, first + 1000)
    store.record_signed(d.intent_id, f"0xh{d.intent_id}", "{}", first)
    store.update_order(d.intent_id, first, status=status, submit_ns=first + int(submit_after_ms * 1e6),
                       filled_size=d.size, avg_price=0.5)
    return d


def _burst(n0, count=6):
    return [fill(n0 + i, t=T0 + i * 0.2) for i in range(count)]


def test_report_figures_and_passing_verdict(store):
    burst = _burst(0)
    _record(store, burst[:1], "leading", 2.0)
    _record(store, burst[1:], "trailing", 900.0 / 5)
    rep = build_report(store, Config())
    assert rep["source_fills"] == 6 and rep["eligible_fills"] == 6 and rep["copied_pct"] == 100.0
    assert rep["orders"] == 2 and rep["orders_per_intent_max"] == 1
    assert rep["leading_copy_delay_ms"]["p50"] == pytest.approx(2.0)
    assert rep["acceptance"]["passed"], rep["acceptance"]
    assert "acceptance          PASS" in render_text(rep)


def test_verdict_fails_on_a_burst_split_into_three_orders(store):
    burst = _burst(10)
    _record(store, burst[:1], "leading", 2.0)
    _record(store, burst[1:3], "trailing", 50.0)
    _record(store, burst[3:], "trailing", 50.0)
    rep = build_report(store, Config())
    acc = rep["acceptance"]
    assert not acc["passed"] and "bursts" in acc["failures"]
    text = render_text(rep)
    assert "FAIL bursts" in text


def test_slow_copies_fail_the_delay_criterion(store):
    for i in range(5):
        _record(store, [fill(100 + i, t=T0 + i * 10)], "leading", 1200.0)
    acc = build_report(store, Config())["acceptance"]
    assert "copy_delay" in acc["failures"] and "p50=1200.0ms" in acc["failures"]["copy_delay"][0]


def test_a_trailing_fill_waiting_for_its_burst_is_not_judged_as_bot_slowness(store):
    burst = _burst(200)
    _record(store, burst[:1], "leading", 2.0)
    _record(store, burst[1:], "trailing", 1300.0)     # first trailing fill waited for the burst to end
    rep = build_report(store, Config())
    assert rep["copy_delay_ms"]["max"] == 1300.0
    assert rep["order_delay_ms"]["max"] < 1300.0 and "copy_delay" not in rep["acceptance"]["failures"]


def test_refusals_are_counted_by_reason(store):
    f = fill(50, side=Side.SELL)
    b = Batch(f.condition_id, f.outcome, f.asset, (f,), "leading", T0)
    store.record_decision([f], decide(ExposureBook(), b, market(), T0, Config()), f.recv_ns)
    rep = build_report(store, Config())
    assert rep["refusals"] == {"no_position": 1} and rep["eligible_fills"] == 0
