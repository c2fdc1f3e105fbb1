"""The report and the acceptance verdict, from a real store file — including proof the verdict can fail."""
import pytest
from helpers import CID, T0, UP, fill, market

from copier.config import Config, SizingConfig
from copier.decision import decide
from copier.exposure import ExposureBook
from copier.report import build_report, render_text
from copier.store import Store
from copier.types import Batch, Side


@pytest.fixture()
def store(tmp_path):
    s = Store.open(str(tmp_path / "r.sqlite"))
    yield s
    s.close()


def _record(store, fills, kind, submit_after_ms, status="MATCHED"):
    at = max(f.recv_ns for f in fills) / 1e9
    b = Batch(fills[0].condition_id, fills[0].outcome, fills[0].asset, tuple(fills), kind, at)
    d = decide(ExposureBook(), b, market(), at, Config())
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


def test_a_third_order_held_back_by_the_budget_passes_the_burst_criterion(store):
    burst = [fill(300 + i, t=T0 + t) for i, t in enumerate((0.0, 0.1, 0.2, 0.9, 1.0, 1.1))]
    _record(store, burst[:1], "leading", 2.0)
    _record(store, burst[1:3], "trailing", 300.0)
    released_ns = int((T0 + 2.0) * 1e9)                # the third batch waited until the budget freed
    b = Batch(CID, "Up", UP, tuple(burst[3:]), "trailing", T0 + 2.0)
    d = decide(ExposureBook(), b, market(), T0 + 2.0, Config())
    store.record_decision(burst[3:], d, released_ns)
    store.record_signed(d.intent_id, "0xthird", "{}", released_ns)
    store.update_order(d.intent_id, released_ns, status="MATCHED", submit_ns=released_ns)
    rep = build_report(store, Config())
    assert rep["orders"] == 3 and "bursts" not in rep["acceptance"]["failures"], rep["acceptance"]


def test_a_fill_joining_a_held_batch_2_s_after_the_last_is_judged_with_its_burst(store):
    # The trailing batch waits for the order budget; a fill arriving 2 s after the one before it joins it. The burst
    # is judged whole (orders net 36 = the source's 36), not split where the 2 s gap falls (36 vs 30).
    cfg = Config(sizing=SizingConfig(size_tolerance=0.01))
    sizes = (7, 5, 5, 8, 5, 6)
    times = (0.0, 1.25, 1.2501, 1.2502, 1.2503, 3.2504)
    burst = [fill(500 + i, t=T0 + t, size=size) for i, (t, size) in enumerate(zip(times, sizes, strict=True))]
    _record(store, burst[:1], "leading", 2.0)
    _record(store, burst[1:], "trailing", 300.0)
    assert "bursts" not in build_report(store, cfg)["acceptance"]["failures"]


def _residual_burst(store, n0, short_by=0.0, residual_at=0.8):
    """Six fills in three batches: a leading BUY, a trailing batch of three BUYs (its order `short_by` shares short
    of the policy), and a last batch BUY 10, SELL 8 netting 2 shares, below the 5-share minimum."""
    from dataclasses import replace
    burst = [fill(n0 + i, t=T0 + i * 0.1) for i in range(5)] + [fill(n0 + 5, t=T0 + 0.5, side=Side.SELL, size=8)]
    _record(store, burst[:1], "leading", 2.0)
    trailing = Batch(CID, "Up", UP, tuple(burst[1:4]), "trailing", T0 + 0.4)
    d = decide(ExposureBook(), trailing, market(), T0 + 0.4, Config())
    d = replace(d, size=d.size - short_by)
    store.record_decision(burst[1:4], d, burst[1].recv_ns)
    store.record_signed(d.intent_id, f"0xh{d.intent_id}", "{}", burst[1].recv_ns)
    store.update_order(d.intent_id, burst[1].recv_ns, status="MATCHED", submit_ns=burst[3].recv_ns,
                       filled_size=d.size, avg_price=0.5)
    residual = Batch(CID, "Up", UP, tuple(burst[4:]), "trailing", T0 + residual_at)
    r = decide(ExposureBook(), residual, market(), T0 + residual_at, Config())
    assert r.reason == "below_min_size" and r.size == 2
    store.record_decision(burst[4:], r, burst[-1].recv_ns)


def test_a_residual_below_the_order_minimum_is_not_a_burst_size_miss(store):
    # No order can carry the last batch's 2 shares, and the orders before it were already sent: the orders (40)
    # plus that residual (2) make the intended 42, so even a 1% tolerance passes.
    cfg = Config(sizing=SizingConfig(size_tolerance=0.01))
    _residual_burst(store, 400)
    assert "bursts" not in build_report(store, cfg)["acceptance"]["failures"]


def test_a_residual_decided_before_the_bursts_last_order_is_a_size_miss(store):
    # An order followed it, so the residual could have joined that order: it excuses nothing.
    cfg = Config(sizing=SizingConfig(size_tolerance=0.01))
    _residual_burst(store, 400, residual_at=0.3)
    failures = build_report(store, cfg)["acceptance"]["failures"]
    assert "orders net 40 shares vs intended 42" in failures["bursts"][0]


def test_residuals_that_a_later_batch_could_have_carried_are_a_size_miss(store):
    # No order at all: a leading BUY 3 and a last batch netting 2 shares, each below the 5-share minimum. Only the
    # last is unsendable whatever the copier does; the first could have joined it (5 shares).
    sizes_sides = ((3, Side.BUY), (10, Side.BUY), (8, Side.SELL), (1, Side.BUY), (1, Side.SELL))
    burst = [fill(600 + i, t=T0 + i * 0.1, side=side, size=size) for i, (size, side) in enumerate(sizes_sides)]
    for fills, at in ((burst[:1], T0), (burst[1:], T0 + 0.8)):
        d = decide(ExposureBook(), Batch(CID, "Up", UP, tuple(fills), "trailing", at), market(), at, Config())
        assert d.reason == "below_min_size"
        store.record_decision(fills, d, fills[0].recv_ns)
    failures = build_report(store, Config())["acceptance"]["failures"]
    assert "orders net 0 shares, 2 below the order minimums vs intended 5" in failures["bursts"][0]


def test_a_burst_whose_orders_miss_the_intended_size_fails_whatever_its_residual(store):
    # The trailing order asked for 2 shares less than its batch: the residual excuses its own 2 shares, not those.
    cfg = Config(sizing=SizingConfig(size_tolerance=0.01))
    _residual_burst(store, 400, short_by=2)
    failures = build_report(store, cfg)["acceptance"]["failures"]
    assert "bursts" in failures
    assert "orders net 38 shares, 2 below the order minimums vs intended 42" in failures["bursts"][0]
    assert "bursts" not in build_report(store, Config())["acceptance"]["failures"]     # 5% tolerates 2 of 42


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


def test_copied_means_filled_partial_fills_by_their_fraction_and_no_liquidity_stays_in_the_denominator(store):
    from dataclasses import replace

    from copier.decision import refuse
    # Arrange: one intent filled 40% then completed by a remainder order, one killed, one refused for no liquidity.
    full = _record(store, [fill(1, size=20, t=T0)], "leading", 2.0)
    store.update_order(full.intent_id, 1, filled_size=8.0, avg_price=0.51)
    child = replace(full, intent_id=full.intent_id + "-r1", size=12.0, kind="remainder", parent_id=full.intent_id)
    assert store.record_remainder(child, 1, 2)
    store.record_signed(child.intent_id, "0xchild", "{}", 3)
    store.update_order(child.intent_id, 4, status="MATCHED", submit_ns=5, filled_size=12.0, avg_price=0.52)
    killed = _record(store, [fill(2, size=10, t=T0 + 30, asset="2222", outcome="Down")], "leading", 2.0,
                     status="KILLED")
    store.update_order(killed.intent_id, 1, filled_size=0.0, avg_price=0.0)
    f3 = fill(3, size=10, t=T0 + 60)
    b3 = Batch(f3.condition_id, f3.outcome, f3.asset, (f3,), "leading", T0 + 60)
    store.record_decision([f3], refuse(b3, ("no_liquidity_within_budget", "thin"), T0 + 60, size=10.0,
                                       source_price=0.5), 6)
    # Act
    rep = build_report(store, Config())
    # Assert: 20 of 40 intended shares filled, all at the source's price 0.5
    assert rep["eligible_intents"] == 3 and rep["intended_usd"] == 20.0 and rep["filled_usd"] == 10.0
    assert rep["filled_pct"] == 50.0 == rep["copied_pct"]
    assert (rep["orders_sent"], rep["orders_killed"], rep["orders_partial"], rep["remainder_orders"]) == (3, 1, 1, 1)
    # BUY slippage: (8 x 0.51 + 12 x 0.52) / 20 = 0.516 against 0.5 = +320 bps (worse)
    assert rep["slippage_bps"]["BUY"]["p50"] == pytest.approx(320.0)
    assert rep["copied_fills"] == 1.0 and rep["eligible_fills"] == 3
    assert "filled_below_90pct" in rep["acceptance"]["failures"]
    assert "copied (filled)     50.0% of the intended notional" in render_text(rep)


def test_size_miss_a_sell_burst_is_judged_on_shares_only_under_the_size_exit_rule():
    from copier.config import Config, SizingConfig
    from copier.report import _size_miss

    run = [{"intent_id": "s", "side": "SELL", "size": 10.0} for _ in range(5)]
    intents = {"s": {"capped_by": "", "decision": "order", "reason": "", "side": "SELL", "size": 12.5,
                     "decided_at": T0}}
    assert _size_miss(run, intents, Config()) is None                       # fraction: 12.5 of ours is right
    assert "intended -50" in _size_miss(run, intents, Config(sizing=SizingConfig(exit_rule="size")))
