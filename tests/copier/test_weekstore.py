"""The week-store generator (polylab.weekstore): the store it writes is the copier's own (its coalescer, decision
and caps), and under retention the dedupe-only tables stop growing once the horizon has passed. Timing lives in
`make bench-week`, not here."""
from collections import Counter, defaultdict

import pytest

from copier.config import parse_config
from copier.exposure import DAY_S
from copier.report import build_report
from copier.store import Store
from polylab.weekstore import WEEK_CONFIG, Pattern, main, write_week

END = 1_800_000_000.0


def _cfg(path):
    return parse_config({**WEEK_CONFIG, "store": {"path": str(path)}})


def test_weekstore_writes_decisions_the_copier_would_make(tmp_path):
    path = tmp_path / "w.sqlite"
    cfg = _cfg(path)
    rows = write_week(path, days=0.25, pattern=Pattern(), scale=1.0, seed=3, end=END, retention=True, cfg=cfg)
    assert len(rows) == 1 and rows[0].fills > 300
    store = Store.open(str(path))
    try:
        rep = build_report(store, cfg, since=END - DAY_S)
        intents = list(store.intents_since(0))
        orders = list(store.orders_since(0))
        assert rep["source_fills"] == rows[0].fills and rep["orders_per_intent_max"] == 1
        assert rep["acceptance"]["failures"].get("duplicate_executions") is None
        assert {i["kind"] for i in intents} == {"leading", "trailing"}
        assert {o["intent_id"] for o in orders} <= {i["intent_id"] for i in intents if i["decision"] == "order"}
        # the coalescer's budget: at most 2 order decisions per (market, outcome) in any 2 s
        times = defaultdict(list)
        for i in intents:
            if i["decision"] == "order":
                times[(i["condition_id"], i["outcome"])].append(i["decided_at"])
        assert all(b - a >= 2.0 for ts in times.values() for a, b in zip(sorted(ts), sorted(ts)[2:], strict=False))
        reasons = Counter(i["reason"] for i in intents if i["decision"] == "skip")
        assert "near_expiry_cutoff" in reasons and "no_liquidity_within_budget" in reasons
        sightings = list(store.sightings_since(0))
        assert len(sightings) == 5 * rep["source_fills"]
        assert sum(s["first"] for s in sightings) == rep["source_fills"]
    finally:
        store.close()


def test_weekstore_under_retention_keeps_the_record_and_only_the_horizon_of_sightings(tmp_path):
    kept, full = tmp_path / "kept.sqlite", tmp_path / "full.sqlite"
    days, pattern = 4.0, Pattern(bursts_per_window=1.0)
    a = write_week(kept, days=days, pattern=pattern, scale=1.0, seed=5, end=END, retention=True, cfg=_cfg(kept))
    b = write_week(full, days=days, pattern=pattern, scale=1.0, seed=5, end=END, retention=False, cfg=_cfg(full))
    assert [r.fills for r in a] == [r.fills for r in b]            # the record is the same with or without
    assert [r.sightings for r in b] == [5 * r.fills for r in b]    # without retention they grow with the fills
    # with it: what arrived in the last 2 days (the retention), give or take one upkeep interval's arrivals (300 s of
    # a day's 86,400, but bursts make one interval hold several times its share: 5% of two days)
    assert a[1].sightings == b[1].sightings
    for day in (2, 3):
        last_two_days = b[day].sightings - b[day - 2].sightings
        assert abs(a[day].sightings - last_two_days) <= 0.05 * last_two_days, (day, a[day], last_two_days)
    assert a[-1].db_bytes < b[-1].db_bytes


def test_weekstore_refuses_nonsense_arguments(capsys):
    assert main(["--days", "0", "--runs", "0"]) == 2
    assert "--days" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--scale", "1000"], ["--rate", "-1"]])
def test_weekstore_refuses_rates_out_of_range(argv):
    assert main([*argv, "--runs", "0"]) == 2


def test_weekstore_reuse_times_the_store_an_earlier_run_wrote_and_leaves_it_as_it_was(tmp_path, capsys):
    out = tmp_path / "w.sqlite"
    assert main(["--out", str(out), "--reuse", "--runs", "0"]) == 2                 # nothing written yet
    assert "missing" in capsys.readouterr().err
    assert main(["--out", str(out), "--days", "0.05", "--runs", "0"]) == 0
    store = Store.open(str(out))
    before = [store.db.execute_sql(f"SELECT count(*), max(id) FROM {t}").fetchone() for t in ("fills", "orders")]
    store.close()
    assert main(["--out", str(out), "--reuse", "--html", str(tmp_path / "w.html")]) == 2   # no growth to draw
    capsys.readouterr()
    assert main(["--out", str(out), "--reuse", "--runs", "1", "--max-report-s", "600"]) == 0
    assert "copier report --since 7d" in capsys.readouterr().out and not (tmp_path / "w.html").exists()
    store = Store.open(str(out))
    assert [store.db.execute_sql(f"SELECT count(*), max(id) FROM {t}").fetchone() for t in ("fills", "orders")] \
        == before and before[0][0] > 0
    store.close()
