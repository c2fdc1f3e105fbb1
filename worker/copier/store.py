"""Durable state on one sqlite file (WAL): processed fills, intents, orders, cursors, halt flag, heartbeat.

Money safety lives here: a fill's dedupe key is unique (a fill is decided once), an intent has at most one order
(unique intent_id on orders), and the signed order is written BEFORE it is posted (write-ahead), so a restart can
look it up by hash instead of signing a new one. Schema changes are explicit, numbered migrations.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import gevent
import peewee as pw

from copier.errors import OperationalError
from copier.exposure import ExposureRow
from copier.types import NOT_EXECUTED, UNRESOLVED, OrderIntent, OrderStatus, Side, Skip, SourceFill

# One connection for every greenlet (peewee's default under gevent is one per greenlet): a write by any connection
# discards every other connection's page cache, so each executor greenlet's first write re-read its B-tree pages
# (stage.persist_decision_ms p50 0.36 -> 0.24 ms, p90 0.79 -> 0.34 ms). Safe because no store method yields to the
# hub inside a transaction: sqlite calls block the thread, they never switch greenlets.
db = pw.SqliteDatabase(None, thread_safe=False)


class _Model(pw.Model):
    class Meta:
        database = db


class FillRow(_Model):
    dedupe_key = pw.CharField(unique=True)
    tx_hash = pw.CharField(index=True)
    asset = pw.CharField()
    condition_id = pw.CharField()
    outcome = pw.CharField()
    side = pw.CharField()
    price = pw.FloatField()
    size = pw.FloatField()
    match_ts = pw.FloatField()
    recv_ns = pw.BigIntegerField(index=True)
    feed = pw.CharField()
    confirmed = pw.BooleanField(default=True)
    intent_id = pw.CharField(index=True)

    class Meta:
        table_name = "fills"


class IntentRow(_Model):
    intent_id = pw.CharField(unique=True)
    kind = pw.CharField()
    decision = pw.CharField()          # order | skip
    reason = pw.CharField(default="")
    detail = pw.TextField(default="")
    condition_id = pw.CharField(index=True)
    asset = pw.CharField()
    outcome = pw.CharField()
    side = pw.CharField()
    size = pw.FloatField(default=0.0)
    price_cap = pw.FloatField(default=0.0)
    notional = pw.FloatField(default=0.0)
    source_price = pw.FloatField(default=0.0)
    net_source_size = pw.FloatField(default=0.0)
    n_fills = pw.IntegerField(default=0)
    first_recv_ns = pw.BigIntegerField()
    decided_ns = pw.BigIntegerField(index=True)
    decided_at = pw.FloatField()
    capped_by = pw.CharField(default="")
    source_ts = pw.FloatField(default=0.0)         # the oldest source fill's match time
    market_end_ts = pw.FloatField(default=0.0)
    fee_rate = pw.FloatField(default=0.0)
    fee_exponent = pw.FloatField(default=1.0)

    class Meta:
        table_name = "intents"


class OrderRow(_Model):
    intent_id = pw.CharField(unique=True)      # one order per intent, enforced by the database
    order_hash = pw.CharField(unique=True)
    body = pw.TextField()                      # the exact signed bytes we post, retried unchanged
    status = pw.CharField(index=True)
    attempts = pw.IntegerField(default=0)
    signed_ns = pw.BigIntegerField()
    submit_ns = pw.BigIntegerField(default=0)
    ack_ns = pw.BigIntegerField(default=0)
    filled_size = pw.FloatField(default=0.0)
    avg_price = pw.FloatField(default=0.0)
    error = pw.TextField(default="")
    updated_ns = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "orders"


class SightingRow(_Model):
    """Every arrival of a source fill on any feed, first or not (per-feed lag and first share)."""
    dedupe_key = pw.CharField(index=True)
    feed = pw.CharField()
    stream = pw.CharField()
    recv_ns = pw.BigIntegerField(index=True)
    match_ts = pw.FloatField()
    first = pw.BooleanField(default=False)

    class Meta:
        table_name = "sightings"


class FillEventRow(_Model):
    """Life of a source fill after its first sighting: removed / reincluded by reorgs, retracted, reinstated."""
    dedupe_key = pw.CharField(index=True)
    kind = pw.CharField()
    reason = pw.CharField(default="")
    tx_hash = pw.CharField()
    at_ns = pw.BigIntegerField(index=True)
    copied = pw.BooleanField(default=False)
    intent_id = pw.CharField(default="")

    class Meta:
        table_name = "fill_events"


class AliasRow(_Model):
    """A pending transaction replaced by another (same sender and nonce): its fills are the original's."""
    tx_hash = pw.CharField(primary_key=True)
    original = pw.CharField()
    at_ns = pw.BigIntegerField(index=True)

    class Meta:
        table_name = "tx_aliases"


class KV(_Model):
    key = pw.CharField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "kv"


_UNRESOLVED = sorted(s.value for s in UNRESOLVED)
_NOT_EXECUTED = sorted(s.value for s in NOT_EXECUTED)


def _migration_1(database: pw.SqliteDatabase) -> None:
    database.create_tables([FillRow, IntentRow, OrderRow, KV])


def _migration_2(database: pw.SqliteDatabase) -> None:
    database.create_tables([SightingRow, FillEventRow])


def _migration_3(database: pw.SqliteDatabase) -> None:
    """What the gate before a repost and the caps after a restart need: the signal's age, the market window and
    the fee schedule of each intent; the dedupe's transaction aliases."""
    _add_columns(database, "intents", ("source_ts REAL NOT NULL DEFAULT 0", "market_end_ts REAL NOT NULL DEFAULT 0",
                                       "fee_rate REAL NOT NULL DEFAULT 0", "fee_exponent REAL NOT NULL DEFAULT 1"))
    database.create_tables([AliasRow])


def _add_columns(database: pw.SqliteDatabase, table: str, columns: tuple[str, ...]) -> None:
    """Columns a store made by an older copier lacks (migration 1 creates the tables as the models are now)."""
    have = {row[1] for row in database.execute_sql(f'PRAGMA table_info("{table}")')}
    for column in columns:
        if column.split()[0] not in have:
            database.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN {column}')


MIGRATIONS = [_migration_1, _migration_2, _migration_3]   # append only; index + 1 = schema version


class _Insert:
    """One prepared INSERT of a model's columns. Peewee builds and renders a fresh query object per call (~0.1 ms
    for an intent, tens of us per row in insert_many); sqlite3 keeps this statement prepared per connection."""

    def __init__(self, model):
        meta = model._meta
        self.names = tuple(f.name for f in meta.sorted_fields if not isinstance(f, pw.AutoField))
        self.defaults = {n: meta.fields[n].default for n in self.names if meta.fields[n].default is not None}
        columns = ", ".join(f'"{meta.fields[n].column_name}"' for n in self.names)
        self.sql = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ({", ".join("?" * len(self.names))})'

    def params(self, values: dict) -> tuple:
        return tuple(values[n] if n in values else self.defaults[n] for n in self.names)

    def one(self, **values) -> None:
        db.execute_sql(self.sql, self.params(values))

    def many(self, rows) -> None:
        """Rows (dicts) in one executemany; the caller holds the transaction."""
        with pw.__exception_wrapper__:
            db.cursor().executemany(self.sql, [self.params(r) for r in rows])


def _update_sql(fields: tuple[str, ...]) -> str:
    cols = ", ".join(f'"{OrderRow._meta.fields[n].column_name}" = ?' for n in fields)
    return f'UPDATE "orders" SET {cols} WHERE "intent_id" = ?'


_INTENT, _FILL, _ORDER = _Insert(IntentRow), _Insert(FillRow), _Insert(OrderRow)
_SIGHTING, _FILL_EVENT = _Insert(SightingRow), _Insert(FillEventRow)


_HALT_SQL = "SELECT 1 FROM kv WHERE key = 'halt'"


class Store:
    def __init__(self, path: str):
        self.path = path
        self._updates: dict[tuple[str, ...], str] = {}

    @classmethod
    def open(cls, path: str) -> "Store":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # No automatic checkpoints: sqlite would run one inside whichever commit crosses 1000 WAL pages, fsyncs
        # included, on the hub's thread; the runtime calls checkpoint() instead, which runs in a native thread.
        db.init(path, pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 5000,
                               "foreign_keys": 1, "wal_autocheckpoint": 0})
        db.connect(reuse_if_open=True)
        store = cls(path)
        store._migrate()
        return store

    def _migrate(self) -> None:
        version = db.execute_sql("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise OperationalError(f"store {self.path} has schema v{version}, newer than this copier "
                                   f"(v{len(MIGRATIONS)}): upgrade the copier")
        for n in range(version, len(MIGRATIONS)):
            with db.atomic():
                MIGRATIONS[n](db)
                db.execute_sql(f"PRAGMA user_version = {n + 1}")

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database file, from a native thread on its own connection: sqlite
        releases the GIL while it works, so greenlets keep running. PASSIVE never blocks writers or readers."""
        gevent.get_hub().threadpool.apply(_passive_checkpoint, (self.path,))

    def close(self) -> None:
        if not db.is_closed():
            db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()

    # ---- decisions ---------------------------------------------------------------------------------------
    def record_decision(self, fills: list[SourceFill], decision: OrderIntent | Skip, now_ns: int) -> bool:
        """Persist the fills and their decision atomically. False if any fill was already decided (a replay)."""
        is_order = isinstance(decision, OrderIntent)
        net = sum(f.side.sign * f.size for f in fills)
        try:
            with db.atomic():
                _INTENT.one(
                    intent_id=decision.intent_id, kind=decision.kind, decision="order" if is_order else "skip",
                    reason="" if is_order else decision.reason, detail="" if is_order else decision.detail,
                    condition_id=decision.condition_id, asset=decision.asset, outcome=decision.outcome,
                    side=decision.side.value, size=decision.size,
                    price_cap=decision.price_cap if is_order else 0.0, notional=decision.notional,
                    source_price=decision.source_price if is_order else 0.0, net_source_size=net,
                    n_fills=len(fills), first_recv_ns=min(f.recv_ns for f in fills), decided_ns=now_ns,
                    decided_at=decision.decided_at, capped_by=decision.capped_by if is_order else "",
                    source_ts=min(f.match_ts for f in fills), market_end_ts=decision.market_end_ts if is_order else 0.0,
                    fee_rate=decision.fee_rate if is_order else 0.0,
                    fee_exponent=decision.fee_exponent if is_order else 1.0)
                _FILL.many(dict(
                    dedupe_key=f.dedupe_key, tx_hash=f.tx_hash, asset=f.asset, condition_id=f.condition_id,
                    outcome=f.outcome, side=f.side.value, price=f.price, size=f.size, match_ts=f.match_ts,
                    recv_ns=f.recv_ns, feed=f.feed, confirmed=f.confirmed, intent_id=decision.intent_id)
                    for f in fills)
        except pw.IntegrityError:
            return False
        return True

    def decided(self, intent_id: str) -> bool:
        return IntentRow.select().where(IntentRow.intent_id == intent_id).exists()

    # ---- orders (write-ahead) ----------------------------------------------------------------------------
    def record_signed(self, intent_id: str, order_hash: str, body: str, now_ns: int) -> None:
        """Must succeed before the first POST; raises IntegrityError if this intent already has an order."""
        _ORDER.one(intent_id=intent_id, order_hash=order_hash, body=body, status=OrderStatus.SIGNED.value, signed_ns=now_ns,
                   updated_ns=now_ns)

    def order_for(self, intent_id: str) -> dict | None:
        row = OrderRow.select().where(OrderRow.intent_id == intent_id).dicts().first()
        return row

    def update_order(self, intent_id: str, now_ns: int, **fields) -> None:
        fields["updated_ns"] = now_ns
        if isinstance(fields.get("status"), OrderStatus):
            fields["status"] = fields["status"].value
        names = tuple(fields)
        sql = self._updates.get(names)
        if sql is None:
            sql = self._updates[names] = _update_sql(names)     # KeyError for a field orders does not have
        db.execute_sql(sql, (*fields.values(), intent_id))

    def unresolved_orders(self) -> list[dict]:
        return list(OrderRow.select().where(OrderRow.status.in_(_UNRESOLVED)).dicts())

    def intent(self, intent_id: str) -> OrderIntent | None:
        """An order decision as persisted (for the gate before a repost after a restart)."""
        r = IntentRow.select().where((IntentRow.intent_id == intent_id) & (IntentRow.decision == "order")).dicts().first()
        if r is None:
            return None
        fills = list(FillRow.select(FillRow.dedupe_key, FillRow.match_ts).where(FillRow.intent_id == intent_id).tuples())
        side = Side(r["side"])
        return OrderIntent(
            intent_id=intent_id, condition_id=r["condition_id"], asset=r["asset"], outcome=r["outcome"], side=side,
            size=r["size"], price_cap=r["price_cap"], notional=r["notional"], source_price=r["source_price"],
            fill_keys=tuple(sorted(k for k, _ in fills)), kind=r["kind"], decided_at=r["decided_at"],
            opening=side is Side.BUY, capped_by=r["capped_by"],
            source_ts=r["source_ts"] or min((t for _, t in fills), default=0.0), market_end_ts=r["market_end_ts"],
            fee_rate=r["fee_rate"], fee_exponent=r["fee_exponent"])

    def orphan_intents(self) -> list[str]:
        """Order decisions that never got a signed order (crash between decision and signing)."""
        q = (IntentRow.select(IntentRow.intent_id)
             .join(OrderRow, pw.JOIN.LEFT_OUTER, on=(IntentRow.intent_id == OrderRow.intent_id))
             .where((IntentRow.decision == "order") & (OrderRow.id.is_null())))
        return [r.intent_id for r in q]

    def record_abandoned(self, intent_id: str, reason: str, now_ns: int) -> None:
        """Mark an order decision as never sent, so it is neither retried nor counted as in flight."""
        OrderRow.insert(intent_id=intent_id, order_hash=f"none:{intent_id}", body="", status=OrderStatus.ABANDONED.value,
                        signed_ns=now_ns, updated_ns=now_ns, error=reason).on_conflict_ignore().execute()

    # ---- restart state -----------------------------------------------------------------------------------
    def seen_keys(self, since: float) -> list[str]:
        return [r.dedupe_key for r in FillRow.select(FillRow.dedupe_key).where(FillRow.match_ts >= since)]

    def exposure_rows(self, since: float) -> list[ExposureRow]:
        """Every order decided since `since` (in flight or not), and every order still in flight however old."""
        q = (IntentRow.select(IntentRow, OrderRow.status, OrderRow.filled_size, OrderRow.avg_price)
             .join(OrderRow, pw.JOIN.LEFT_OUTER, on=(IntentRow.intent_id == OrderRow.intent_id))
             .where((IntentRow.decision == "order") & ((IntentRow.decided_at >= since) | OrderRow.id.is_null()
                                                       | OrderRow.status.in_(_UNRESOLVED))).dicts())
        return [ExposureRow(intent_id=r["intent_id"], condition_id=r["condition_id"], asset=r["asset"],
                            side=Side(r["side"]), decided_at=r["decided_at"], notional=r["notional"], size=r["size"],
                            filled_size=r.get("filled_size") or 0.0, avg_price=r.get("avg_price") or 0.0,
                            in_flight=r.get("status") is None or r["status"] in _UNRESOLVED,
                            market_end_ts=r["market_end_ts"], fee_rate=r["fee_rate"], fee_exponent=r["fee_exponent"])
                for r in q]

    # ---- report queries ----------------------------------------------------------------------------------
    def fills_since(self, since: float):
        return FillRow.select().where(FillRow.recv_ns >= int(since * 1e9)).order_by(FillRow.recv_ns).dicts()

    def intents_since(self, since: float):
        return IntentRow.select().where(IntentRow.decided_ns >= int(since * 1e9)).order_by(IntentRow.decided_ns).dicts()

    def orders_since(self, since: float):
        return OrderRow.select().where(OrderRow.signed_ns >= int(since * 1e9)).order_by(OrderRow.signed_ns).dicts()

    # ---- detection (sightings per feed, confirm / retract) -----------------------------------------------
    def record_sightings(self, rows: list[dict]) -> None:
        with db.atomic():
            _SIGHTING.many(rows)

    def record_fill_events(self, rows: list[dict]) -> None:
        with db.atomic():
            _FILL_EVENT.many(rows)

    def record_aliases(self, rows: list[dict]) -> None:
        with db.atomic():
            AliasRow.insert_many(rows).on_conflict_ignore().execute()

    def aliases_since(self, since: float) -> list[tuple[str, str]]:
        return list(AliasRow.select(AliasRow.tx_hash, AliasRow.original)
                    .where(AliasRow.at_ns >= int(since * 1e9)).order_by(AliasRow.at_ns).tuples())

    def confirm_fills(self, keys: list[str]) -> None:
        FillRow.update(confirmed=True).where(FillRow.dedupe_key.in_(keys)).execute()

    def copy_of(self, dedupe_key: str) -> dict | None:
        """The order that copied this fill and may have executed, or None."""
        return (OrderRow.select(OrderRow.intent_id, OrderRow.order_hash, OrderRow.status)
                .join(FillRow, on=(FillRow.intent_id == OrderRow.intent_id))
                .where((FillRow.dedupe_key == dedupe_key) & OrderRow.status.not_in(_NOT_EXECUTED))
                .dicts().first())

    def sightings_since(self, since: float):
        return SightingRow.select().where(SightingRow.recv_ns >= int(since * 1e9)).order_by(SightingRow.recv_ns).dicts()

    def fill_events_since(self, since: float):
        return FillEventRow.select().where(FillEventRow.at_ns >= int(since * 1e9)).order_by(FillEventRow.at_ns).dicts()

    # ---- cursors, halt flag, heartbeat -------------------------------------------------------------------
    def _get(self, key: str):
        row = KV.get_or_none(KV.key == key)
        return json.loads(row.value) if row else None

    def _put(self, key: str, value) -> None:
        KV.insert(key=key, value=json.dumps(value)).on_conflict_replace().execute()

    def cursor(self, name: str) -> float | None:
        return self._get(f"cursor:{name}")

    def set_cursor(self, name: str, value: float) -> None:
        self._put(f"cursor:{name}", value)

    def is_halted(self) -> bool:
        """The halt flag read straight from the file: `copier halt` from another process is seen at once (the last
        gate before every POST asks this; one indexed lookup on a prepared statement)."""
        return db.execute_sql(_HALT_SQL).fetchone() is not None

    def halted(self) -> tuple[bool, str]:
        v = self._get("halt")
        return (True, v["reason"]) if v else (False, "")

    def halt(self, reason: str, now: float) -> None:
        self._put("halt", {"reason": reason, "since": now})

    def resume(self) -> None:
        KV.delete().where(KV.key == "halt").execute()

    def heartbeat(self) -> dict | None:
        return self._get("heartbeat")

    def set_heartbeat(self, info: dict) -> None:
        self._put("heartbeat", info)

    def size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))


def _passive_checkpoint(path: str) -> None:
    con = sqlite3.connect(path, timeout=5.0)
    try:
        con.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        con.close()
