"""The report's PnL section and `copier positions`, from a store: ours against the source's on the same markets."""
import math

from test_position_watch import CID, DOWN, T0, UP, filled, source_fill

from copier.config import Config
from copier.pnl_report import pnl_section, positions_table, render_pnl, render_positions
from copier.report import build_report, render_text
from copier.store import Store
from copier.types import Side, Skip


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
