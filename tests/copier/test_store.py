import sqlite3

import pytest

from copier.store import Store
from copier.types import Side, Skip
from helpers import T0, fill, market
from copier.decision import decide
from copier.exposure import ExposureBook
from copier.config import Config
from copier.types import Batch


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
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    assert {r[0] for r in raw.execute("select name from sqlite_master where type='table'")} >= {
        "fills", "intents", "orders", "kv"}


def test_a_fill_is_decided_once(store):
    f, d = _intent()
    assert store.record_decision([f], d, 1) is True
    assert store.record_decision([f], d, 2) is False
    assert store.seen_keys(0) == [f.dedupe_key]


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
