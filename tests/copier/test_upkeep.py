"""Bounded growth of the store: retention of the dedupe-only rows, incremental vacuum, the WAL size trigger, the
upgrade of an older store, and an index under every report query's `since` bound (EXPLAIN QUERY PLAN)."""
import re
import sqlite3

import pytest
from helpers import T0, RecordingMetrics, fill, market
from hypothesis import given, settings
from hypothesis import strategies as st

from copier import report, schemas
from copier.clock import FakeClock
from copier.config import DEDUPE_SEED_S, Config, StoreConfig, market_day_s, parse_config, replay_horizon_s
from copier.decision import decide
from copier.errors import ConfigError
from copier.exposure import DAY_S, ExposureBook
from copier.report import build_report, parse_since
from copier.store import MIGRATIONS, Store
from copier.types import Batch
from copier.upkeep import PRUNE_BATCH, StoreUpkeep


@pytest.fixture()
def store(tmp_path):
    s = Store.open(str(tmp_path / "u.sqlite"))
    yield s
    s.close()


def _sighting(key, recv_s):
    return {"dedupe_key": key, "feed": "rtds.trades", "stream": "a", "recv_ns": int(recv_s * 1e9),
            "match_ts": recv_s - 0.3, "first": True}


def _decide(store, n, at):
    f = fill(n, t=at)
    d = decide(ExposureBook(), Batch(f.condition_id, f.outcome, f.asset, (f,), "leading", at), market(end_ts=at + 900),
               at, Config())
    store.record_decision([f], d, f.recv_ns)
    store.record_signed(d.intent_id, f"0xh{n}", "{}", f.recv_ns)
    store.update_order(d.intent_id, f.recv_ns, status="MATCHED", submit_ns=f.recv_ns + 5_000_000, filled_size=d.size,
                       avg_price=0.5)
    return f


def _counts(store):
    return {t: store.db.execute_sql(f'SELECT count(*) FROM "{t}"').fetchone()[0]
            for t in ("fills", "intents", "orders", "sightings", "tx_aliases", "fill_events")}


# ---- the horizon and its configuration -----------------------------------------------------------------------
def test_replay_horizon_is_the_dedupe_seed_the_edge_and_the_runtime_agree_on():
    assert DEDUPE_SEED_S == schemas.MATCH_TS_HORIZON_S == DAY_S
    assert replay_horizon_s(Config()) == DEDUPE_SEED_S


def test_replay_horizon_follows_the_longest_configured_wait():
    cfg = parse_config({"copy": {"max_signal_age_s": 90_000}, "store": {"dedupe_retention_s": 200_000},
                        "execution": {"order_horizon_s": 100_000}})
    assert replay_horizon_s(cfg) == 90_000 + cfg.feeds.gap_fill_overlap_s
    cfg = parse_config({"feeds": {"reinclude_timeout_s": 100_000}, "store": {"dedupe_retention_s": 100_000}})
    assert replay_horizon_s(cfg) == 100_000


def test_replay_horizon_is_a_day_of_markets_when_the_windows_are_shorter():
    """A simulator at 225x market time: 4-second windows, a day of markets in 384 s, and retention to match."""
    cfg = parse_config({"markets": {"window_seconds": 4}, "store": {"dedupe_retention_s": 768}})
    assert market_day_s(cfg) == 384 and replay_horizon_s(cfg) == 384
    assert market_day_s(Config()) == DAY_S
    with pytest.raises(ConfigError, match=r"store\.dedupe_retention_s: must be >= 384"):
        parse_config({"markets": {"window_seconds": 4}, "store": {"dedupe_retention_s": 300}})


@pytest.mark.parametrize("store_cfg, key", [
    ({"dedupe_retention_s": 3600}, "store.dedupe_retention_s"),
    ({"dedupe_retention_s": float("nan")}, "store.dedupe_retention_s"),
    ({"dedupe_retention_s": "2d"}, "store.dedupe_retention_s"),
    ({"maintenance_interval_s": 1}, "store.maintenance_interval_s"),
    ({"wal_truncate_bytes": 1000}, "store.wal_truncate_bytes"),
    ({"wal_truncate_bytes": 1.5e8}, "store.wal_truncate_bytes"),
])
def test_store_config_refuses_a_bad_value_naming_the_key(store_cfg, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config({"store": store_cfg})


def test_retention_below_a_lengthened_horizon_is_refused():
    with pytest.raises(ConfigError, match=r"store\.dedupe_retention_s: must be >= 180000"):
        parse_config({"feeds": {"reinclude_timeout_s": 180_000}})


# ---- pruning -------------------------------------------------------------------------------------------------
def test_upkeep_prunes_only_dedupe_rows_past_the_retention_and_keeps_the_record(store):
    clock = FakeClock(T0 + 3 * DAY_S)
    old, new = T0, T0 + 3 * DAY_S - 10
    _decide(store, 1, old)
    _decide(store, 2, new)
    store.record_sightings([_sighting("old", old), _sighting("new", new)])
    store.record_aliases([{"tx_hash": "0xold2", "original": "0xold1", "at_ns": int(old * 1e9)},
                          {"tx_hash": "0xnew2", "original": "0xnew1", "at_ns": int(new * 1e9)}])
    store.record_fill_events([{"dedupe_key": "old", "kind": "retracted", "reason": "never_confirmed", "tx_hash": "0x1",
                               "at_ns": int(old * 1e9), "copied": True, "intent_id": "i"}])
    metrics = RecordingMetrics()
    done = StoreUpkeep(store, StoreConfig(), clock=clock, metrics=metrics, pause=lambda: None).run()
    assert done.pruned == 2
    assert [s["dedupe_key"] for s in store.sightings_since(0)] == ["new"]
    assert store.aliases_since(0) == [("0xnew2", "0xnew1")]
    assert _counts(store) == {"fills": 2, "intents": 2, "orders": 2, "sightings": 1, "tx_aliases": 1,
                              "fill_events": 1}
    assert metrics.counts["store.pruned_rows"] == 2


def test_upkeep_prunes_a_backlog_in_batches_yielding_between_them(store):
    clock = FakeClock(T0 + 3 * DAY_S)
    n = 2 * PRUNE_BATCH + 7
    store.record_sightings([_sighting(f"k{i}", T0 + i) for i in range(n)])
    pauses = []
    done = StoreUpkeep(store, StoreConfig(), clock=clock,
                       metrics=RecordingMetrics(), pause=lambda: pauses.append(1)).run()
    assert done.pruned == n and _counts(store)["sightings"] == 0
    assert len(pauses) == 3              # after each batch that deleted something


@settings(max_examples=30, deadline=None)
@given(ages=st.lists(st.floats(min_value=0, max_value=5 * DAY_S, allow_nan=False), max_size=40),
       retention=st.floats(min_value=DAY_S, max_value=4 * DAY_S))
def test_upkeep_keeps_exactly_the_sightings_inside_the_retention(tmp_path_factory, ages, retention):
    s = Store.open(":memory:")
    now = T0 + 10 * DAY_S
    s.record_sightings([_sighting(f"k{i}", now - age) for i, age in enumerate(ages)])
    StoreUpkeep(s, StoreConfig(dedupe_retention_s=retention), clock=FakeClock(now), metrics=RecordingMetrics(),
                pause=lambda: None).run()
    cutoff_ns = int((now - retention) * 1e9)
    expected = sorted(f"k{i}" for i, age in enumerate(ages) if int((now - age) * 1e9) >= cutoff_ns)
    assert sorted(r["dedupe_key"] for r in s.sightings_since(0)) == expected
    s.close()


def test_pruned_pages_go_back_to_the_file_system(tmp_path):
    path = str(tmp_path / "v.sqlite")
    s = Store.open(path)
    s.record_sightings([_sighting(f"{'k' * 60}{i}", T0 + i) for i in range(20_000)])
    s.truncate_wal()
    full = s.size_bytes()
    upkeep = StoreUpkeep(s, StoreConfig(), clock=FakeClock(T0 + 3 * DAY_S),
                         metrics=RecordingMetrics(), pause=lambda: None)
    while upkeep.run().free_pages:
        pass
    s.truncate_wal()
    assert s.size_bytes() < full / 4
    s.close()


# ---- the WAL size trigger ------------------------------------------------------------------------------------
class WalStub:
    def __init__(self, wal, busy=False):
        self.wal, self.busy, self.truncations = wal, busy, 0

    def prune_dedupe_rows(self, before_ns, limit):
        return 0

    def incremental_vacuum(self, pages):
        return 0

    def wal_bytes(self):
        return self.wal

    def truncate_wal(self):
        self.truncations += 1
        return not self.busy

    def size_bytes(self):
        return 1


@pytest.mark.parametrize("wal, busy, truncations, truncated", [
    (10 << 20, False, 0, False), (100 << 20, False, 1, True), (100 << 20, True, 1, False)])
def test_upkeep_truncates_the_wal_only_past_its_limit(wal, busy, truncations, truncated):
    stub = WalStub(wal, busy)
    done = StoreUpkeep(stub, StoreConfig(), clock=FakeClock(), metrics=RecordingMetrics(), pause=lambda: None).run()
    assert (stub.truncations, done.truncated) == (truncations, truncated)


def test_truncate_wal_cuts_a_real_wal_file_to_nothing(store):
    store.record_sightings([_sighting(f"k{i}", T0 + i) for i in range(5000)])
    assert store.wal_bytes() > 0
    assert store.truncate_wal() is True
    assert store.wal_bytes() == 0
    assert len(list(store.sightings_since(0))) == 5000


# ---- the upgrade of an existing store ------------------------------------------------------------------------
def test_an_older_store_gains_incremental_vacuum_and_the_report_indexes_keeping_its_rows(tmp_path):
    path = str(tmp_path / "old.sqlite")
    s = Store.open(path)
    _decide(s, 1, T0)
    s.close()
    raw = sqlite3.connect(path)                 # as a v3 copier left it: no auto-vacuum, no orders index
    raw.execute("DROP INDEX orders_signed_ns")
    raw.execute("PRAGMA auto_vacuum = 0")
    raw.execute("VACUUM")
    raw.execute("PRAGMA user_version = 3")
    raw.commit()
    assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    raw.close()
    s = Store.open(path)
    assert s.db.execute_sql("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert s.db.execute_sql("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert _counts(s)["orders"] == 1 and _counts(s)["fills"] == 1
    assert "orders_signed_ns" in {r[1] for r in s.db.execute_sql("PRAGMA index_list(orders)")}
    s.close()


def test_a_new_store_is_incremental_from_the_start(store):
    assert store.db.execute_sql("PRAGMA auto_vacuum").fetchone()[0] == 2


# ---- every report query uses an index where a since bound applies ------------------------------------------
def test_every_report_query_with_a_since_bound_searches_an_index(store, monkeypatch):
    # Positions and PnL fold every fill of ours and of the source ever recorded (a position opened before `since`
    # is still held): those reads are whole-history by design, and the only ones allowed to scan.
    statements: list[str] = []
    fold_reads: list[str] = []

    def pnl_section(*args):
        start = len(statements)
        try:
            return real_pnl_section(*args)
        finally:
            fold_reads.extend(statements[start:])

    real_pnl_section = report.pnl_section
    monkeypatch.setattr(report, "pnl_section", pnl_section)
    for n in range(30):
        _decide(store, n, T0 + n)
    store.record_sightings([_sighting(f"k{i}", T0 + i) for i in range(30)])
    store.record_fill_events([{"dedupe_key": "k1", "kind": "removed", "reason": "", "tx_hash": "0x1",
                               "at_ns": int(T0 * 1e9), "copied": False, "intent_id": ""}])
    store.db.connection().set_trace_callback(statements.append)
    try:
        build_report(store, Config(), since=T0 + 10)
    finally:
        store.db.connection().set_trace_callback(None)
    assert fold_reads
    selects = [q for q in statements if q.lstrip().upper().startswith("SELECT") and q not in fold_reads]
    tables = set()
    for sql in selects:
        plan = [row[3] for row in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql).fetchall()]
        tables |= set(re.findall(r'FROM "(\w+)"', sql))
        assert not [p for p in plan if p.startswith("SCAN ")], (sql, plan)
        assert any("USING INDEX" in p or "USING COVERING INDEX" in p for p in plan), (sql, plan)
    assert {"fills", "intents", "orders", "sightings", "fill_events"} <= tables


# ---- --since spans ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [("7d", T0 - 7 * 86400), ("12h", T0 - 43200), ("30m", T0 - 1800),
                                            ("90s", T0 - 90), ("1.5d", T0 - 1.5 * 86400), (str(T0), T0)])
def test_parse_since_takes_a_span_back_from_now(text, expected):
    assert parse_since(text, T0) == expected


@pytest.mark.parametrize("text", ["7w", "-7d", "nan", "inf", "d7", "<html>", ""])
def test_parse_since_refuses_anything_else_in_one_line(text):
    with pytest.raises(ConfigError, match="--since"):
        parse_since(text, T0)


def test_the_runtime_runs_the_upkeep_as_a_periodic_task_at_the_configured_interval(tmp_path):
    import logging

    from copier.config import Secrets
    from copier.runtime import build

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    cfg = parse_config({"store": {"path": str(tmp_path / "rt.sqlite"), "maintenance_interval_s": 120},
                        "telemetry": {"ntp_server": ""}})
    rt = build(cfg, Secrets(), clock=FakeClock(T0))
    try:
        (task,) = [p for p in rt.periodic if p.name == "store_upkeep"]
        assert task.interval_s == 120
        assert task.run().pruned == 0
    finally:
        rt.store.close()
        root.handlers[:] = handlers           # build() installs the copier's log handler on this test's stderr
        root.setLevel(level)

