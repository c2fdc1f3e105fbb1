"""`copier report --html`: one self-contained page whose figures and tables hold the text report's numbers; the
plotting extra is needed only for it; and the report's `since` boundary."""
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import pytest
from helpers import CID, T0, UP, fill
from test_position_watch import filled
from test_report import _record

from copier.cli import main
from copier.config import Config
from copier.exposure import DAY_S
from copier.pnl_report import PnlPoint
from copier.report import build_report, percentile
from copier.report_html import Growth, html_data, render_html
from copier.store import Store
from copier.types import Side, Skip
from polylab.weekstore import WEEK_CONFIG, Pattern, write_week

END = 1_800_000_000.0


@pytest.fixture()
def store(tmp_path):
    s = Store.open(str(tmp_path / "h.sqlite"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    """Two days of the PRD's pattern, decided by the copier's own stages (polylab.weekstore)."""
    import yaml

    from copier.config import parse_config

    d = tmp_path_factory.mktemp("week")
    path = d / "copier.sqlite"
    doc = {**WEEK_CONFIG, "store": {"path": str(path)}}
    (d / "copier.yaml").write_text(yaml.safe_dump(doc))
    write_week(path, days=2.0, pattern=Pattern(bursts_per_window=2.0), scale=1.0, seed=11, end=END, retention=True,
               cfg=parse_config(doc))
    return d


def _svgs(page):
    return page.count("<svg")


def test_html_report_is_one_self_contained_page_with_every_figure(week, capsys):
    out = week / "r.html"
    assert main(["report", "--config", str(week / "copier.yaml"), "--html", str(out)]) in (0, 1)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # delay histogram, per-day delays, copy rate, bursts, refusals, PnL (the week's SELLs realise PnL)
    assert _svgs(page) == 6
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)       # nothing fetched from elsewhere
    assert "<script" not in page
    assert "PnL over time" in page and "realised PnL only, no unrealised PnL" in page      # the week has no snapshots
    assert "html report:" in capsys.readouterr().err


def test_html_figures_hold_the_text_reports_numbers(week):
    s = Store.open(str(week / "copier.sqlite"))
    try:
        rep = build_report(s, Config(), since=0.0)
        data = html_data(s, 0.0)
    finally:
        s.close()
    assert len(data.copy_delays_ms) == rep["copy_delay_ms"]["n"]
    assert percentile(data.copy_delays_ms, 99) == rep["copy_delay_ms"]["p99"]
    assert dict(data.refusals) == rep["refusals"]
    assert sum(d.intended_usd for d in data.days) == pytest.approx(rep["intended_usd"], abs=1e-3)
    assert sum(d.filled_usd for d in data.days) == pytest.approx(rep["filled_usd"], abs=1e-3)
    assert len(data.days) in (2, 3)                   # two days of data: two or three UTC dates
    assert sum(d.delays for d in data.days) == len(data.copy_delays_ms)
    page = render_html(rep, data)
    for d in data.days:                               # each day's percentiles are in its table row
        assert f"<td>{d.day}</td><td>{d.delays}</td><td>{d.p50:.1f}</td><td>{d.p95:.1f}</td>" in page
    for reason, n in data.refusals.items():
        assert f"<td>{reason}</td><td>{n}</td>" in page
    assert sum(data.orders_per_burst.values()) == sum(data.burst_peak_2s.values()) > 0
    assert max(data.burst_peak_2s) <= 2 < max(data.orders_per_burst)      # the budget is per 2 s, not per burst


def test_orders_per_burst_counts_the_orders_sent_for_each_burst(store):
    burst = [fill(i, t=T0 + i * 0.2) for i in range(6)]
    _record(store, burst[:1], "leading", 2.0)
    _record(store, burst[1:3], "trailing", 50.0)
    _record(store, burst[3:], "trailing", 50.0)
    lone = [fill(100 + i, t=T0 + 60 + i * 0.2) for i in range(5)]
    _record(store, lone, "leading", 2.0)              # five fills, one order
    few = [fill(200, t=T0 + 120)]                      # one fill: not a burst
    _record(store, few, "leading", 2.0)
    data = html_data(store, 0.0)
    assert data.orders_per_burst == Counter({3: 1, 1: 1})
    assert data.burst_peak_2s == Counter({3: 1, 1: 1})          # the three of the first burst came within 1 s


def test_html_report_draws_pnl_and_growth_when_given_and_escapes_what_it_prints(store):
    f = fill(1, t=T0)
    store.record_decision([f], Skip("i1", CID, UP, "Up", f.side, "<script>alert(1)</script>", "", (f.dedupe_key,),
                                    "leading", T0), f.recv_ns)

    class Pnl:
        def pnl_points(self, since):
            return [PnlPoint(T0, 0.0, None), PnlPoint(T0 + 3600, 12.5, 1.5), PnlPoint(T0 + 7200, -3.0, 0.25)]

    data = html_data(store, 0.0, pnl=Pnl())
    growth = Growth(at=[T0, T0 + DAY_S], curves={"store size": [10.0, 20.0], "RSS": [70.0, 71.0]},
                    unit={"store size": "MiB", "RSS": "MiB"})
    page = render_html(build_report(store, Config()), data, growth=growth)
    assert _svgs(page) == 5 + 1 + 2 and "No PnL source was given" not in page
    assert f"<td>{_hm(T0 + 7200)}</td><td>-3.00</td><td>0.25</td><td>-2.75</td>" in page     # the day's last point
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_html_report_without_a_pnl_source_or_pnl_says_so(store):
    class Nothing:
        def pnl_points(self, since):
            return []

    rep = build_report(store, Config())
    assert "No PnL source was given" in render_html(rep, html_data(store, 0.0))
    assert "No PnL yet" in render_html(rep, html_data(store, 0.0, pnl=Nothing()))


def test_html_report_draws_the_stores_pnl_over_time_to_its_final_value(tmp_path):
    """`copier report --html` on a small store: realised PnL from our orders and a resolution, marked with the
    running copier's snapshots; the PnL figure's table ends at the text report's realised PnL."""
    path = tmp_path / "s.sqlite"
    (tmp_path / "c.yaml").write_text(f"store:\n  path: {path}\n")
    store = Store.open(str(path))
    filled(store, "a", size=10.0, price=0.40, at=T0, n=1)                        # 10 Up at 0.40
    filled(store, "b", side=Side.SELL, size=4.0, price=0.70, at=T0 + 3600, n=2)   # realises 4 x (0.70 - 0.40)
    store.record_pnl_snapshot([dict(at=T0 + 3700, day=0, condition_id=CID, asset=UP, outcome="Up", size=6.0,
                                    cost=2.4, mark=0.75, realized=1.2, unrealized=2.1, redeemable=False)])
    store.record_resolution(CID, UP, T0 + 7300, "market_ws")               # 6 Up win: realises 6 - 2.40
    store.record_pnl_snapshot([dict(at=T0 + 7400, day=0, condition_id=CID, asset=UP, outcome="Up", size=6.0,
                                    cost=0.0, mark=1.0, realized=4.8, unrealized=0.0, redeemable=True)])
    rep = build_report(store, Config())
    store.close()
    assert rep["pnl"]["realized_usd"] == pytest.approx(1.2 + 3.6)
    out = tmp_path / "r.html"
    assert main(["report", "--config", str(tmp_path / "c.yaml"), "--html", str(out)]) in (0, 1)
    page = out.read_text()
    pnl = page[page.index("<h2>PnL over time</h2>"):]
    assert "<svg" in pnl[:pnl.index("</section>")]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>",
                      pnl[:pnl.index("</table>")])
    assert rows == [(_hm(T0 + 7400), f"{rep['pnl']['realized_usd']:.2f}", "0.00", "4.80")]
    assert "Marked adds the unrealised PnL" in pnl


def _hm(at):
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def test_html_report_of_an_empty_window_still_renders(store):
    page = render_html(build_report(store, Config(), since=T0 + 10 * DAY_S), html_data(store, T0 + 10 * DAY_S))
    assert _svgs(page) == 5 and "n=0" not in page


def test_html_report_to_an_unwritable_path_exits_2_in_one_line(week, capsys):
    assert main(["report", "--config", str(week / "copier.yaml"), "--html", str(week / "no" / "such" / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("copier report: cannot write") and "No such file" in err[-1]


def test_nothing_the_copier_runs_imports_the_plotting_library():
    probe = ("import sys, copier.runtime, copier.cli, copier.report; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'numpy', 'copier.report_html')"
             " or m == 'copier.report_html'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_report_since_an_instant_between_a_decision_and_its_order_counts_without_failing(store):
    """The order is signed after its decision: a `since` between the two keeps the order and not its intent."""
    _record(store, [fill(1, t=T0)], "leading", 2.0)
    f = fill(2, t=T0 + 60)
    _record(store, [f], "leading", 2.0)                  # decided and signed at its receive instant
    order = list(store.orders_since(0))[-1]
    store.update_order(order["intent_id"], f.recv_ns, filled_size=1.0)    # partly filled: the partial check runs
    store.db.execute_sql("UPDATE orders SET signed_ns = signed_ns + 1000000 WHERE intent_id = ?",
                         (order["intent_id"],))
    rep = build_report(store, Config(), since=f.recv_ns / 1e9 + 1e-4)
    assert rep["orders"] == 1 and rep["intents"] == 0 and rep["orders_partial"] == 0
