"""The report's PnL section and `copier positions`, from a store: ours against the source's on the same markets."""
import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_position_watch import CID, DOWN, T0, UP, filled, intent, source_fill

from copier.config import Config, parse_config
from copier.pnl_report import (
    pnl_over_time,
    pnl_section,
    positions_table,
    render_pnl,
    render_positions,
    source_ledger,
)
from copier.report import build_report, render_text
from copier.store import Store
from copier.types import OrderStatus, Side, Skip
from polylab.weekstore import WEEK_CONFIG, Pattern, write_week


def test_pnl_section_ours_next_to_the_source_per_market_and_per_day(tmp_path):
    store = Store.open(str(tmp_path / "s.sqlite"))
    filled(store, "a", size=10.0, price=0.4, n=1)                       # ours: 10 Up at 0.40
    # the source: 100 Up at 0.40 (the fill above) and 50 more it bought that we refused
    store.record_decision([source_fill(2, size=90.0, price=0.4)],
                          Skip("s", CID, UP, "Up", Side.BUY, "max_notional_per_market", "", ("k2",), "single", T0),
                          int(T0 * 1e9))
    filled(store, "b", asset=DOWN, size=5.0, price=0.5, n=3)           # ours only (the source's fill is Up)
    store.record_resolution(CID, UP, T0 + 900, "market_ws")
    pnl = pnl_section(store)
    (m,) = pnl["markets"]
    assert math.isclose(m["realized_usd"], 10 - 4.0 - 2.5) and math.isclose(m["bought_usd"], 6.5)
    # the source's fill behind our DOWN order was 5 Up at 0.5 (the helper's source fills are all Up): 105 Up win
    assert math.isclose(m["source_bought_usd"], 40.0 + 2.5)
    assert math.isclose(m["source_realized_usd"], 105 - 40.0 - 2.5)
    assert pnl["tracked_markets"] == 1 and math.isclose(
        pnl["tracking_error_pct"], abs(m["return_pct"] - m["source_return_pct"]), abs_tol=1e-3)
    assert list(pnl["by_day"].values()) == [m["realized_usd"]]
    text = "\n".join(render_pnl(pnl))
    assert "redeemed or not" in text and "tracking error" in text
    rows = positions_table(store)
    assert {(r["outcome"], r["redeemable"], r["resolved"]) for r in rows} == {("Up", True, True), ("Up", False, True)}
    assert "redeemable" in render_positions(rows)
    rep = build_report(store, Config())
    assert rep["pnl"]["realized_usd"] == pnl["realized_usd"] and "pnl realised" in render_text(rep)
    store.close()


# ---- the history around the report's record -----------------------------------------------------------------
# The report reads its record (fills, intents, orders from `since` on) once; the PnL reads only what came before and
# joins the two. It must fold exactly what reading the whole history gives.
END = 1_800_000_000.0


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """A day of the PRD's pattern decided by the copier's own stages, its markets resolved (one in ten left open)
    and one in three of them redeemed."""
    path = tmp_path_factory.mktemp("day") / "copier.sqlite"
    cfg = parse_config({**WEEK_CONFIG, "store": {"path": str(path)}})
    write_week(path, days=1.0, pattern=Pattern(bursts_per_window=2.0), scale=1.0, seed=13, end=END, retention=True,
               cfg=cfg)
    store = Store.open(str(path))
    markets = sorted({(i["condition_id"], i["asset"], i["market_end_ts"]) for i in store.intents_since(0)
                      if i["market_end_ts"]})
    redeem = []
    for n, (cid, asset, end) in enumerate(markets):
        if n % 10 and store.record_resolution(cid, asset, end + 30, "market_ws") and n % 3 == 0:
            calls = json.dumps([{"kind": "redeem", "condition_id": cid}])
            redeem.append(dict(action_id=f"r{n}", via="eoa", calls=calls,
                               nonce=n, payload="0x", status="CONFIRMED", created_ns=int((end + 90) * 1e9),
                               updated_ns=int((end + 90) * 1e9)))
    store.record_chain_actions(redeem)
    store.close()
    return path


@pytest.mark.parametrize("ago_h", [None, 23.5, 12.0, 1.0, -1.0])
def test_pnl_section_around_a_record_folds_the_whole_history(day, ago_h):
    store = Store.open(str(day))
    try:
        since = 0.0 if ago_h is None else END - ago_h * 3600
        record = store.record_since(since)
        assert store.own_fills_with(record) == store.own_fills()
        resolutions = store.resolutions()
        assert len(resolutions) > 20 and store.redeemed_markets()
        assert source_ledger(store, resolutions, record) == source_ledger(store, resolutions)
        around, whole = pnl_section(store, record), pnl_section(store)
        first_day = int(since // 86400) * 86400
        assert around["by_day"] == {d: v for d, v in whole["by_day"].items()
                                    if datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp() >= first_day}
        assert {**around, "by_day": None} == {**whole, "by_day": None}
        assert around["realized_usd"] != 0 and around["markets"]
    finally:
        store.close()


def test_own_fills_around_a_record_join_an_order_to_an_intent_decided_before_it(tmp_path):
    """An order signed after `since` whose intent was decided before it (and one signed before its intent's decision
    instant: a wall clock stepped back) are joined as the whole read joins them."""
    store = Store.open(str(tmp_path / "s.sqlite"))
    store.record_decision([source_fill(1)], intent("early"), int(T0 * 1e9))
    store.record_signed("early", "0xhash-early", "{}", int((T0 + 2) * 1e9))
    store.update_order("early", int((T0 + 3) * 1e9), status=OrderStatus.MATCHED, filled_size=10.0, avg_price=0.4,
                       submit_ns=int((T0 + 2) * 1e9), ack_ns=int((T0 + 3) * 1e9))
    store.record_decision([source_fill(2)], intent("stepped"), int((T0 + 5) * 1e9))
    store.record_signed("stepped", "0xhash-stepped", "{}", int((T0 - 5) * 1e9))
    store.update_order("stepped", int((T0 + 6) * 1e9), status=OrderStatus.MATCHED, filled_size=5.0, avg_price=0.5,
                       submit_ns=int((T0 + 6) * 1e9), ack_ns=int((T0 + 6) * 1e9))
    filled(store, "live", size=4.0, at=T0 + 7, n=3)
    store.record_signed("unsettled", "0xhash-unsettled", "{}", int((T0 + 8) * 1e9))    # no intent row: never joined
    record = store.record_since(T0 + 1)
    assert [o["intent_id"] for o in record.orders] == ["early", "live", "unsettled"]
    assert [i["intent_id"] for i in record.intents] == ["stepped", "live"]
    whole = store.own_fills()
    assert [r["intent_id"] for r in whole] == ["early", "stepped", "live"]
    assert store.own_fills_with(record) == whole
    store.close()


# ---- PnL over time -------------------------------------------------------------------------------------------
_instant = st.floats(T0 - 2 * 86400, T0 + 2 * 86400, allow_nan=False)
_amount = st.floats(-500, 500, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(realizations=st.lists(st.tuples(_instant, _amount), max_size=40),
       marks=st.lists(st.tuples(_instant, st.sampled_from(["u", "d", "x"]), _amount), max_size=20),
       since=st.one_of(st.just(0.0), _instant))
def test_pnl_over_time_is_the_running_total_at_each_hours_last_change(realizations, marks, since):
    points = pnl_over_time(realizations, marks, since)
    changes = [(at, v, None) for at, v in realizations] + [(at, v, asset) for at, asset, v in marks]

    def state(include):
        """(realised, unrealised) after every change at an instant `include` accepts; marks in the order given."""
        shown = sorted((c for c in changes if include(c[0])), key=lambda c: (c[0], c[2] is not None))
        last = {asset: v for _, v, asset in shown if asset is not None}
        return math.fsum(v for _, v, asset in shown if asset is None), (math.fsum(last.values()) if last else None)

    def same(point, expected):
        assert point.realized == pytest.approx(expected[0], abs=1e-6)
        assert (point.unrealized is None) == (expected[1] is None)
        assert point.unrealized is None or point.unrealized == pytest.approx(expected[1], abs=1e-6)

    assert [p.at for p in points] == sorted(p.at for p in points) and all(p.at >= since for p in points)
    later = points
    if any(at < since for at, _, _ in changes):                          # history before: its value at `since`
        assert points[0].at == since
        same(points[0], state(lambda at: at < since))
        later = points[1:]
    hours: dict[int, float] = {}
    for at, _, _ in changes:
        if at >= since:
            hours[int(at // 3600)] = max(hours.get(int(at // 3600), at), at)
    assert [p.at for p in later] == sorted(hours.values())               # each changed hour's last change
    for p in later:
        same(p, state(lambda at, p=p: at <= p.at))
