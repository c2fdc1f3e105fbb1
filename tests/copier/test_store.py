import sqlite3

import pytest
from helpers import T0, fill, market

from copier.config import Config
from copier.decision import decide
from copier.exposure import ExposureBook
from copier.store import MIGRATIONS, Store
from copier.types import Batch, OrderStatus, Side, Skip


@pytest.fixture()
def store(tmp_path):
    s = Store.open(str(tmp_path / "copier.sqlite"))
    yield s
    s.close()


def _intent(n=1, size=20.0):
    f = fill(n, size=size)
    d = decide(ExposureBook(), Batch(f.condition_id, f.outcome, f.asset, (f,), "leading", T0), market(), T0, Config())
    return f, d


def test_file_is_wal_sqlite_with_explicit_schema_version(store, tmp_path):
    raw = sqlite3.connect(tmp_path / "copier.sqlite")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert {r[0] for r in raw.execute("select name from sqlite_master where type='table'")} >= {
        "fills", "intents", "orders", "kv"}


def test_a_fill_is_decided_once(store):
    f, d = _intent()
    assert store.record_decision([f], d, 1) is True
    assert store.record_decision([f], d, 2) is False
    assert store.seen_keys(0) == [(f.dedupe_key, f.recv_ns / 1e9)]


def test_one_order_per_intent_is_enforced_by_the_database(store):
    import peewee
    f, d = _intent()
    store.record_decision([f], d, 1)
    store.record_signed(d.intent_id, "0xhash1", "{}", 5)
    with pytest.raises(peewee.IntegrityError):
        store.record_signed(d.intent_id, "0xhash2", "{}", 6)
    assert [o["order_hash"] for o in store.orders_since(0)] == ["0xhash1"]


def test_unresolved_and_orphans_are_found_after_a_restart(tmp_path):
    path = str(tmp_path / "s.sqlite")
    s = Store.open(path)
    f1, d1 = _intent(1)
    f2, d2 = _intent(2)
    s.record_decision([f1], d1, 1)
    s.record_decision([f2], d2, 1)
    s.record_signed(d1.intent_id, "0xh", '{"order":{"side":"BUY"}}', 2)
    s.close()
    s = Store.open(path)                     # a new process
    assert [o["intent_id"] for o in s.unresolved_orders()] == [d1.intent_id]
    assert s.orphan_intents() == [d2.intent_id]
    rows = {r.intent_id: r for r in s.exposure_rows(0)}
    assert rows[d1.intent_id].in_flight and rows[d2.intent_id].in_flight
    s.record_abandoned(d2.intent_id, "restart", 3)
    assert s.orphan_intents() == []
    s.close()


def test_halt_survives_reopen_and_resume_clears_it(tmp_path):
    path = str(tmp_path / "s.sqlite")
    s = Store.open(path)
    s.halt("operator: maintenance", T0)
    s.set_cursor("data_api", 123.5)
    s.close()
    s = Store.open(path)
    assert s.halted() == (True, "operator: maintenance")
    assert s.cursor("data_api") == 123.5
    s.resume()
    assert s.halted() == (False, "")
    s.close()


def test_skip_decisions_keep_reason_and_timestamps(store):
    f = fill(7, side=Side.SELL)
    skip = Skip("iid7", f.condition_id, f.asset, f.outcome, Side.SELL, "no_position", "reduce-only", (f.dedupe_key,),
                "leading", T0)
    store.record_decision([f], skip, 99)
    row = list(store.intents_since(0))[0]
    assert (row["decision"], row["reason"], row["decided_ns"], row["first_recv_ns"]) == ("skip", "no_position", 99,
                                                                                          f.recv_ns)


def test_migration_3_adds_the_intent_columns_to_a_version_2_store_and_reads_old_rows(tmp_path):
    path = str(tmp_path / "v2.sqlite")
    s = Store.open(path)
    f, d = _intent(1)
    s.record_decision([f], d, 1)
    for column in ("source_ts", "market_end_ts", "fee_rate", "fee_exponent"):
        s.db.execute_sql(f"ALTER TABLE intents DROP COLUMN {column}")
    s.db.execute_sql("PRAGMA user_version = 2")
    s.close()
    s = Store.open(path)
    try:
        again = s.intent(d.intent_id)
        # An old row has no source_ts: the signal's age falls back to its fills' match times.
        assert again.source_ts == f.match_ts and again.fee_exponent == 1.0 and again.size == d.size
        assert again.fill_keys == d.fill_keys and again.opening
    finally:
        s.close()


def test_the_halt_flag_is_read_from_the_file_another_process_writes(tmp_path):
    path = str(tmp_path / "s.sqlite")
    running = Store.open(path)
    assert running.is_halted() is False
    cli = sqlite3.connect(path)                      # `copier halt` is another process with its own connection
    cli.execute("""INSERT INTO kv (key, value) VALUES ('halt', '{"reason": "operator", "since": 1}')""")
    cli.commit()
    assert running.is_halted() is True
    cli.execute("DELETE FROM kv WHERE key = 'halt'")
    cli.commit()
    assert running.is_halted() is False
    running.close()


def test_an_order_in_flight_for_days_is_still_restored_reserved(store):
    f, d = _intent(1)
    store.record_decision([f], d, 1)
    store.record_signed(d.intent_id, "0xh", "{}", 2)
    store.update_order(d.intent_id, 3, status=OrderStatus.UNKNOWN)
    [row] = store.exposure_rows(since=T0 + 10 * 86400)
    assert row.in_flight and row.notional == d.notional and row.market_end_ts == d.market_end_ts


def test_two_stores_in_one_process_keep_their_own_files(tmp_path):
    a, b = Store.open(str(tmp_path / "a.sqlite")), Store.open(str(tmp_path / "b.sqlite"))
    try:
        f, d = _intent(1)
        assert a.record_decision([f], d, 1) and b.seen_keys(0) == []
        assert b.record_decision([f], d, 2) and [r["decided_ns"] for r in b.intents_since(0)] == [2]
        memory = Store.open(":memory:")
        assert memory.record_decision([f], d, 3) and a.seen_keys(0) == [(f.dedupe_key, f.recv_ns / 1e9)]
        memory.close()
    finally:
        a.close()
        b.close()


def test_each_start_keeps_its_source_seed_in_its_own_row_and_an_older_builds_list_is_still_read(store):
    older = [{"at": T0 - 100, "held": {"1111": 1.0}}]
    store._put("source_seeds", older)                      # as a build before one row per start kept them
    store.record_source_seed(T0 + 1, {})
    store.record_source_seed(T0, {"2222": 2.5})
    assert store.source_seeds() == [*older, {"at": T0, "held": {"2222": 2.5}}, {"at": T0 + 1, "held": {}}]
    assert store._get("source_seeds") == older              # a start does not rewrite the history
