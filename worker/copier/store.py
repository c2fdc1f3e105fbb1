"""Durable state on one sqlite file (WAL): processed fills, intents, orders, cursors, halt flag, heartbeat.

Money safety lives here: a fill's dedupe key is unique (a fill is decided once), an intent has at most one order
(unique intent_id on orders), and the signed order is written BEFORE it is posted (write-ahead), so a restart can
look it up by hash instead of signing a new one. Schema changes are explicit, numbered migrations.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import gevent
import peewee as pw

from copier.errors import OperationalError
from copier.exposure import ExposureRow
from copier.types import NOT_EXECUTED, UNRESOLVED, BookTop, OrderIntent, OrderStatus, Side, Skip, SourceFill


class _Model(pw.Model):
    """The schema. A Store binds its own copies of these models to its own database (see _Tables)."""


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
    book = pw.TextField(default="")                # the book it was priced on (JSON), for replay and the report
    parent_id = pw.CharField(default="")           # a remainder order's intent: the intent it completes

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


class ChainActionRow(_Model):
    """A redemption, merge or approval sent on chain (write-ahead, like orders): one EOA transaction or one relayer
    batch, its signed bytes recorded before it is sent (see redeem.py)."""
    action_id = pw.CharField(unique=True)
    via = pw.CharField()                       # eoa | relayer
    calls = pw.TextField()                     # JSON [{kind, condition_id, amount_units, payout_units}]
    nonce = pw.BigIntegerField()
    payload = pw.TextField()                   # the raw signed transaction (hex) or the signed relayer request
    tx_hash = pw.CharField(default="", index=True)
    relayer_id = pw.CharField(default="")
    deadline = pw.FloatField(default=0.0)      # a relayer batch's signed deadline
    status = pw.CharField(index=True)
    attempts = pw.IntegerField(default=0)
    error = pw.TextField(default="")
    gas_used = pw.BigIntegerField(default=0)
    gas_price = pw.BigIntegerField(default=0)  # wei per gas, as the receipt says
    created_ns = pw.BigIntegerField()
    updated_ns = pw.BigIntegerField()

    class Meta:
        table_name = "chain_actions"


class ResolutionRow(_Model):
    """A market's winner, as first learned (market channel, Gamma or the positions endpoint)."""
    condition_id = pw.CharField(unique=True)
    winning_asset = pw.CharField()
    resolved_at = pw.FloatField()
    origin = pw.CharField()

    class Meta:
        table_name = "resolutions"


class PnlSnapshotRow(_Model):
    """One position's valuation at one instant (the runtime writes a row when it changes: an open position's mark
    moves, a fill, a resolution)."""
    at = pw.FloatField(index=True)
    day = pw.IntegerField()                    # UTC day (epoch s of its midnight)
    condition_id = pw.CharField()
    asset = pw.CharField()
    outcome = pw.CharField()
    size = pw.FloatField()
    cost = pw.FloatField()
    mark = pw.FloatField(null=True)            # null: no book to mark it on
    realized = pw.FloatField()                 # the market's realised PnL so far
    unrealized = pw.FloatField()
    redeemable = pw.BooleanField(default=False)

    class Meta:
        table_name = "pnl_snapshots"


class ClosedMarketRow(_Model):
    """A market the runtime's positions ledger has settled for good: resolved a day ago, and nothing of it held but
    losing tokens. Its realised PnL per UTC day is summed here, so a start folds only the markets still open."""
    condition_id = pw.CharField(index=True)
    day = pw.IntegerField()                    # UTC day (epoch s of its midnight) the amount was realised on
    realized = pw.FloatField()
    closed_at = pw.FloatField()

    class Meta:
        table_name = "closed_markets"


class ClosedHoldingRow(_Model):
    """Losing tokens still held when their market closed (worth nothing, never redeemed): what reconciliation
    expects the venue's index to list for them."""
    asset = pw.CharField(unique=True)
    condition_id = pw.CharField()
    size = pw.FloatField()

    class Meta:
        table_name = "closed_holdings"


class KV(_Model):
    key = pw.CharField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "kv"


_UNRESOLVED = sorted(s.value for s in UNRESOLVED)
_NOT_EXECUTED = sorted(s.value for s in NOT_EXECUTED)
# A settled order of ours as the positions fold reads it: the order's columns, then its intent's ("id": the order's).
_OWN_ORDER_COLUMNS = ("id", "intent_id", "filled_size", "avg_price", "status", "submit_ns", "ack_ns", "updated_ns")
_OWN_INTENT_COLUMNS = ("condition_id", "asset", "outcome", "side", "fee_rate", "fee_exponent", "market_end_ts")
_OWN_COLUMNS = (*_OWN_ORDER_COLUMNS, *_OWN_INTENT_COLUMNS)
_own_order, _own_intent = itemgetter(*_OWN_ORDER_COLUMNS), itemgetter(*_OWN_INTENT_COLUMNS)
_OWN_FILLS_SQL = (
    "SELECT " + ", ".join([*(f'o."{c}"' for c in _OWN_ORDER_COLUMNS), *(f'i."{c}"' for c in _OWN_INTENT_COLUMNS)])
    + ' FROM "orders" AS o JOIN "intents" AS i ON i."intent_id" = o."intent_id" '
    f'WHERE o."filled_size" > 0 AND o."status" NOT IN ({", ".join("?" * len(_UNRESOLVED))}) AND o."updated_ns" >= ?')
_OWN_FILLS_ORDER = ' ORDER BY o."updated_ns", o."id"'
_NOT_CLOSED = ' AND {column} NOT IN (SELECT "condition_id" FROM "closed_markets")'


class _Tables:
    """The models bound to one store's database: no module-global connection, two stores never share one."""
    # Any to mypy: peewee's bundled stubs type a .dicts() or .tuples() query as yielding model instances and omit
    # the implicit `id` field. Store's methods state the types of what they return.
    FillRow: Any
    IntentRow: Any
    OrderRow: Any
    SightingRow: Any
    FillEventRow: Any
    AliasRow: Any
    ChainActionRow: Any
    ResolutionRow: Any
    PnlSnapshotRow: Any
    ClosedMarketRow: Any
    ClosedHoldingRow: Any
    KV: Any

    def __init__(self, database: pw.SqliteDatabase) -> None:
        for model in (FillRow, IntentRow, OrderRow, SightingRow, FillEventRow, AliasRow, ChainActionRow, ResolutionRow,
                      PnlSnapshotRow, ClosedMarketRow, ClosedHoldingRow, KV):
            meta = type("Meta", (), {"database": database, "table_name": model._meta.table_name})
            setattr(self, model.__name__, type(model.__name__, (model,), {"Meta": meta, "__module__": __name__}))


def _migration_1(database: pw.SqliteDatabase, t: _Tables) -> None:
    database.create_tables([t.FillRow, t.IntentRow, t.OrderRow, t.KV])


def _migration_2(database: pw.SqliteDatabase, t: _Tables) -> None:
    database.create_tables([t.SightingRow, t.FillEventRow])


def _migration_3(database: pw.SqliteDatabase, t: _Tables) -> None:
    """What the gate before a repost and the caps after a restart need: the signal's age, the market window and
    the fee schedule of each intent; the book each was priced on and a remainder order's parent; the dedupe's
    transaction aliases."""
    _add_columns(database, "intents", ("source_ts REAL NOT NULL DEFAULT 0", "market_end_ts REAL NOT NULL DEFAULT 0",
                                       "fee_rate REAL NOT NULL DEFAULT 0", "fee_exponent REAL NOT NULL DEFAULT 1",
                                       "book TEXT NOT NULL DEFAULT ''", "parent_id VARCHAR(255) NOT NULL DEFAULT ''"))
    database.create_tables([t.AliasRow])


def _add_columns(database: pw.SqliteDatabase, table: str, columns: tuple[str, ...]) -> None:
    """Columns a store made by an older copier lacks (migration 1 creates the tables as the models are now)."""
    have = {row[1] for row in database.execute_sql(f'PRAGMA table_info("{table}")')}
    for column in columns:
        if column.split()[0] not in have:
            database.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN {column}')


def _migration_4(database: pw.SqliteDatabase, t: _Tables) -> None:
    """Bounded growth: an index for every report query's `since` bound (orders had none), and incremental auto-vacuum
    so the pages that pruning frees go back to the file system. auto_vacuum changes only with a VACUUM (one rewrite
    of the file, done once, at the upgrade), and a VACUUM cannot run in a transaction: this migration runs outside one
    and is idempotent, so a crash inside it re-runs it."""
    database.execute_sql('CREATE INDEX IF NOT EXISTS "orders_signed_ns" ON "orders" ("signed_ns")')
    if database.execute_sql("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
        database.execute_sql(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
        database.execute_sql("VACUUM")


def _migration_5(database: pw.SqliteDatabase, t: _Tables) -> None:
    """Redemptions and merges on chain (write-ahead)."""
    database.create_tables([t.ChainActionRow])


def _migration_6(database: pw.SqliteDatabase, t: _Tables) -> None:
    """Positions and PnL: the markets' winners, and the periodic valuation of every position."""
    database.create_tables([t.ResolutionRow, t.PnlSnapshotRow])


_SEED_PREFIX = "source_seed:"      # kv rows of the source's holdings at each start, by instant
_INCREMENTAL = 2                # PRAGMA auto_vacuum: 0 none, 1 full, 2 incremental

Row = dict[str, Any]     # one table row, column name -> value


_RECORD_FILL_COLUMNS = ("id", "dedupe_key", "asset", "condition_id", "outcome", "side", "price", "size", "match_ts",
                        "recv_ns", "feed", "intent_id")
_RECORD_INTENT_COLUMNS = ("id", "intent_id", "kind", "decision", "reason", "condition_id", "asset", "outcome", "side",
                          "size", "notional", "source_price", "first_recv_ns", "decided_at", "capped_by",
                          "market_end_ts", "fee_rate", "fee_exponent", "parent_id")
_RECORD_ORDER_COLUMNS = ("id", "intent_id", "order_hash", "status", "submit_ns", "ack_ns", "filled_size", "avg_price",
                         "updated_ns")


@dataclass(frozen=True)
class Record:
    """The store's record from `since` on, read once for every section of a report: fills by receive instant,
    intents by decision instant, orders by signing instant (each in its index's order), with the columns the
    report reads."""
    since: float
    fills: list[Row]
    intents: list[Row]
    orders: list[Row]


def _names(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _settled(order: Row) -> Row:
    order["at"] = (order["ack_ns"] or order["submit_ns"] or order["updated_ns"]) / 1e9
    return order


def _migration_7(database: pw.SqliteDatabase, t: _Tables) -> None:
    """The markets the positions ledger settled for good (a start reads only the open ones), and the losing tokens
    still held in them."""
    database.create_tables([t.ClosedMarketRow, t.ClosedHoldingRow])


def _migration_8(database: pw.SqliteDatabase, t: _Tables) -> None:
    """An index for the positions ledger's pass over the orders settled since its last one (it scanned every order
    ever placed, several times a minute)."""
    database.execute_sql('CREATE INDEX IF NOT EXISTS "orders_updated_ns" ON "orders" ("updated_ns")')


MIGRATIONS = [_migration_1, _migration_2, _migration_3, _migration_4, _migration_5,
              _migration_6, _migration_7, _migration_8]   # append only; index + 1 = schema version
_OUTSIDE_TRANSACTION = {_migration_4}          # idempotent migrations that sqlite cannot run inside a transaction


class _Insert:
    """One prepared INSERT of a model's columns. Peewee builds and renders a fresh query object per call (~0.1 ms
    for an intent, tens of us per row in insert_many); sqlite3 keeps this statement prepared per connection."""

    def __init__(self, model: type[pw.Model], database: pw.SqliteDatabase) -> None:
        meta = model._meta
        self.db = database
        self.names = tuple(f.name for f in meta.sorted_fields if not isinstance(f, pw.AutoField))
        self.defaults = {n: meta.fields[n].default for n in self.names if meta.fields[n].default is not None}
        columns = ", ".join(f'"{meta.fields[n].column_name}"' for n in self.names)
        self.sql = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ({", ".join("?" * len(self.names))})'

    def params(self, values: Row) -> tuple[Any, ...]:
        return tuple(values[n] if n in values else self.defaults[n] for n in self.names)

    def one(self, **values: Any) -> None:
        self.db.execute_sql(self.sql, self.params(values))

    def many(self, rows: Iterable[Row]) -> None:
        """Rows (dicts) in one executemany; the caller holds the transaction."""
        with pw.__exception_wrapper__:    # type: ignore[attr-defined]  # peewee's stubs omit it
            self.db.cursor().executemany(self.sql, [self.params(r) for r in rows])


def _update_sql(fields: tuple[str, ...]) -> str:
    cols = ", ".join(f'"{OrderRow._meta.fields[n].column_name}" = ?' for n in fields)
    return f'UPDATE "orders" SET {cols} WHERE "intent_id" = ?'


_HALT_SQL = "SELECT 1 FROM kv WHERE key = 'halt'"
BOOK_LEVELS = 10                # levels a side kept with a decision: what pricing looks at, and then some


def book_json(book: BookTop | None) -> str:
    if book is None:
        return ""
    return json.dumps({"b": book.bids[:BOOK_LEVELS], "a": book.asks[:BOOK_LEVELS], "t": book.received_at},
                      separators=(",", ":"))


def book_from_json(asset: str, text: str) -> BookTop | None:
    if not text:
        return None
    doc = json.loads(text)
    return BookTop(asset, tuple((p, s) for p, s in doc["b"]), tuple((p, s) for p, s in doc["a"]),
                   received_at=doc["t"])


def _intent_columns(decision: OrderIntent | Skip) -> Row:
    common = dict(intent_id=decision.intent_id, kind=decision.kind, condition_id=decision.condition_id,
                  asset=decision.asset, outcome=decision.outcome, side=decision.side.value, size=decision.size,
                  notional=decision.notional, decided_at=decision.decided_at, source_price=decision.source_price,
                  book=book_json(decision.book))
    if isinstance(decision, OrderIntent):
        return dict(common, decision="order", reason="", detail="", price_cap=decision.price_cap,
                    capped_by=decision.capped_by, market_end_ts=decision.market_end_ts, fee_rate=decision.fee_rate,
                    fee_exponent=decision.fee_exponent, parent_id=decision.parent_id)
    return dict(common, decision="skip", reason=decision.reason, detail=decision.detail, price_cap=0.0, capped_by="",
                market_end_ts=0.0, fee_rate=0.0, fee_exponent=1.0, parent_id="")


class Store:
    def __init__(self, database: pw.SqliteDatabase) -> None:
        """database: an open sqlite database (see `open`); the store migrates it to this copier's schema."""
        self.db = database
        self.path = database.database
        self.t = _Tables(database)
        t = self.t
        self._intent, self._fill, self._order = (_Insert(t.IntentRow, database), _Insert(t.FillRow, database),
                                                 _Insert(t.OrderRow, database))
        self._sighting, self._fill_event = _Insert(t.SightingRow, database), _Insert(t.FillEventRow, database)
        self._updates: dict[tuple[str, ...], str] = {}
        self._migrate()

    @classmethod
    def open(cls, path: str) -> Store:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection for every greenlet (peewee's default under gevent is one per greenlet): a write by any
        # connection discards every other connection's page cache (stage.persist_decision_ms p50 0.36 -> 0.24 ms).
        # Safe because no store method yields to the hub inside a transaction: sqlite calls block the thread.
        # No automatic checkpoints: sqlite would run one inside whichever commit crosses 1000 WAL pages, fsyncs
        # included, on the hub's thread; the runtime calls checkpoint() instead, which runs in a native thread.
        database = pw.SqliteDatabase(path, thread_safe=False, pragmas={
            "journal_mode": "wal", "synchronous": "normal", "busy_timeout": 5000, "foreign_keys": 1,
            "wal_autocheckpoint": 0})
        database.connect()
        return cls(database)

    def _migrate(self) -> None:
        version = self.db.execute_sql("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise OperationalError(f"store {self.path} has schema v{version}, newer than this copier "
                                   f"(v{len(MIGRATIONS)}): upgrade the copier")
        for n in range(version, len(MIGRATIONS)):
            with contextlib.nullcontext() if MIGRATIONS[n] in _OUTSIDE_TRANSACTION else self.db.atomic():
                MIGRATIONS[n](self.db, self.t)
                self.db.execute_sql(f"PRAGMA user_version = {n + 1}")

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database file, from a native thread on its own connection: sqlite
        releases the GIL while it works, so greenlets keep running. PASSIVE never blocks writers or readers."""
        if self.path != ":memory:":
            gevent.get_hub().threadpool.apply(_passive_checkpoint, (self.path,))

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.close()

    # ---- decisions ---------------------------------------------------------------------------------------
    def record_decision(self, fills: list[SourceFill], decision: OrderIntent | Skip, now_ns: int) -> bool:
        """Persist the fills and their decision atomically. False if any fill was already decided (a replay)."""
        net = sum(f.side.sign * f.size for f in fills)
        try:
            with self.db.atomic():
                self._intent.one(**_intent_columns(decision), net_source_size=net, n_fills=len(fills),
                                 first_recv_ns=min(f.recv_ns for f in fills), decided_ns=now_ns,
                                 source_ts=min(f.match_ts for f in fills))
                self._fill.many(dict(
                    dedupe_key=f.dedupe_key, tx_hash=f.tx_hash, asset=f.asset, condition_id=f.condition_id,
                    outcome=f.outcome, side=f.side.value, price=f.price, size=f.size, match_ts=f.match_ts,
                    recv_ns=f.recv_ns, feed=f.feed, confirmed=f.confirmed, intent_id=decision.intent_id)
                    for f in fills)
        except pw.IntegrityError:
            return False
        return True

    def record_remainder(self, intent: OrderIntent, first_recv_ns: int, now_ns: int) -> bool:
        """A remainder order's decision (its fills are its parent's). False if it was decided before: an intent's
        n-th remainder exists once."""
        try:
            self._intent.one(**_intent_columns(intent), net_source_size=0.0, n_fills=0, first_recv_ns=first_recv_ns,
                             decided_ns=now_ns, source_ts=intent.source_ts)
        except pw.IntegrityError:
            return False
        return True

    def decided(self, intent_id: str) -> bool:
        t = self.t
        return t.IntentRow.select().where(t.IntentRow.intent_id == intent_id).exists()

    # ---- orders (write-ahead) ----------------------------------------------------------------------------
    def record_signed(self, intent_id: str, order_hash: str, body: str, now_ns: int) -> None:
        """Must succeed before the first POST; raises IntegrityError if this intent already has an order."""
        self._order.one(intent_id=intent_id, order_hash=order_hash, body=body, status=OrderStatus.SIGNED.value,
                        signed_ns=now_ns, updated_ns=now_ns)

    def order_for(self, intent_id: str) -> Row | None:
        t = self.t
        row = t.OrderRow.select().where(t.OrderRow.intent_id == intent_id).dicts().first()
        return row

    def update_order(self, intent_id: str, now_ns: int, **fields: Any) -> None:
        fields["updated_ns"] = now_ns
        if isinstance(fields.get("status"), OrderStatus):
            fields["status"] = fields["status"].value
        names = tuple(fields)
        sql = self._updates.get(names)
        if sql is None:
            sql = self._updates[names] = _update_sql(names)     # KeyError for a field orders does not have
        self.db.execute_sql(sql, (*fields.values(), intent_id))

    def unresolved_orders(self) -> list[Row]:
        t = self.t
        return list(t.OrderRow.select().where(t.OrderRow.status.in_(_UNRESOLVED)).dicts())

    def intent(self, intent_id: str) -> OrderIntent | None:
        """An order decision as persisted (for the gate before a repost after a restart)."""
        t = self.t
        r = t.IntentRow.select().where((t.IntentRow.intent_id == intent_id) & (t.IntentRow.decision == "order")) \
            .dicts().first()
        if r is None:
            return None
        fills = list(t.FillRow.select(t.FillRow.dedupe_key, t.FillRow.match_ts)
                     .where(t.FillRow.intent_id == intent_id).tuples())
        side = Side(r["side"])
        return OrderIntent(
            intent_id=intent_id, condition_id=r["condition_id"], asset=r["asset"], outcome=r["outcome"], side=side,
            size=r["size"], price_cap=r["price_cap"], notional=r["notional"], source_price=r["source_price"],
            fill_keys=tuple(sorted(k for k, _ in fills)), kind=r["kind"], decided_at=r["decided_at"],
            opening=side is Side.BUY, capped_by=r["capped_by"],
            source_ts=r["source_ts"] or min((t for _, t in fills), default=0.0), market_end_ts=r["market_end_ts"],
            fee_rate=r["fee_rate"], fee_exponent=r["fee_exponent"], book=book_from_json(r["asset"], r["book"]),
            parent_id=r["parent_id"])

    def orphan_intents(self) -> list[str]:
        """Order decisions that never got a signed order (crash between decision and signing)."""
        t = self.t
        q = (t.IntentRow.select(t.IntentRow.intent_id)
             .join(t.OrderRow, pw.JOIN.LEFT_OUTER, on=(t.IntentRow.intent_id == t.OrderRow.intent_id))
             .where((t.IntentRow.decision == "order") & (t.OrderRow.id.is_null())))
        return [r.intent_id for r in q]

    def record_abandoned(self, intent_id: str, reason: str, now_ns: int) -> None:
        """Mark an order decision as never sent, so it is neither retried nor counted as in flight."""
        t = self.t
        t.OrderRow.insert(intent_id=intent_id, order_hash=f"none:{intent_id}", body="",
                          status=OrderStatus.ABANDONED.value, signed_ns=now_ns, updated_ns=now_ns,
                          error=reason).on_conflict_ignore().execute()

    # ---- redemptions (write-ahead) --------------------------------------------------------------------------
    def record_chain_actions(self, rows: list[Row]) -> None:
        """Signed transactions or relayer requests, all or none, BEFORE any is sent."""
        t = self.t
        with self.db.atomic():
            for row in rows:
                t.ChainActionRow.insert(**row).execute()

    def chain_actions(self, statuses: Iterable[str] = (), created_from_ns: int = 0) -> list[Row]:
        """The chain actions in these statuses (all without), created at or after `created_from_ns`, oldest first."""
        t = self.t
        q = t.ChainActionRow.select().where(t.ChainActionRow.created_ns >= created_from_ns)
        wanted = [str(s) for s in statuses]
        if wanted:
            q = q.where(t.ChainActionRow.status.in_(wanted))
        return list(q.order_by(t.ChainActionRow.id).dicts())

    def redeemed_markets(self, after_id: int = 0, open_only: bool = False) -> list[tuple[int, str, float]]:
        """(row id, condition id, confirmed at epoch s) of every redemption confirmed on chain; after_id: only rows
        after that one; open_only: not those of a closed market (read with sqlite's JSON functions, so a start
        does not parse every transaction ever confirmed)."""
        if open_only:
            cid = "json_extract(c.value, '$.condition_id')"
            rows = self.db.execute_sql(
                f'SELECT a."id", {cid}, a."updated_ns" FROM "chain_actions" AS a, json_each(a."calls") AS c '
                f"WHERE a.\"status\" = 'CONFIRMED' AND a.\"id\" > ? AND json_extract(c.value, '$.kind') = 'redeem' "
                f'AND {cid} NOT IN (SELECT "condition_id" FROM "closed_markets") ORDER BY a."id", c.key',
                (int(after_id),)).fetchall()
            return [(row_id, condition_id, updated_ns / 1e9) for row_id, condition_id, updated_ns in rows]
        t = self.t
        rows = (t.ChainActionRow.select(t.ChainActionRow.id, t.ChainActionRow.calls, t.ChainActionRow.updated_ns)
                .where((t.ChainActionRow.status == "CONFIRMED") & (t.ChainActionRow.id > after_id))
                .order_by(t.ChainActionRow.id).tuples())
        return [(row_id, call["condition_id"], updated_ns / 1e9) for row_id, calls, updated_ns in rows
                for call in json.loads(calls) if call.get("kind") == "redeem"]

    def update_chain_action(self, action_id: str, now_ns: int, **fields: Any) -> None:
        t = self.t
        t.ChainActionRow.update(updated_ns=now_ns, **fields).where(t.ChainActionRow.action_id == action_id).execute()

    def bought_markets(self, since: float, ended_by: float | None) -> list[tuple[str, str]]:
        """(condition id, asset) of every market we bought in (an order with a fill) decided since `since` (and
        ended by `ended_by` when given): what may hold tokens to redeem or merge."""
        t = self.t
        q = (t.IntentRow.select(t.IntentRow.condition_id, t.IntentRow.asset)
             .join(t.OrderRow, on=(t.IntentRow.intent_id == t.OrderRow.intent_id))
             .where((t.IntentRow.decision == "order") & (t.IntentRow.side == Side.BUY.value)
                    & (t.IntentRow.decided_at >= since) & (t.OrderRow.filled_size > 0)
                    & (t.IntentRow.market_end_ts <= (ended_by if ended_by is not None else float("inf"))))
             .distinct().tuples())
        return [(cid, asset) for cid, asset in q]

    # ---- restart state -----------------------------------------------------------------------------------
    def seen_keys(self, since: float) -> list[tuple[str, float]]:
        """(dedupe key, wall instant received) of the fills matched since `since`, in the order received."""
        t = self.t
        return [(key, recv_ns / 1e9) for key, recv_ns in t.FillRow.select(t.FillRow.dedupe_key, t.FillRow.recv_ns)
                .where(t.FillRow.match_ts >= since).order_by(t.FillRow.recv_ns).tuples()]

    def exposure_rows(self, since: float) -> list[ExposureRow]:
        """Every order decided since `since` (in flight or not), and every order still in flight however old."""
        t = self.t
        # The columns the exposure book keeps, not the decision's book and detail: a restart after a week reads
        # every order of the day, and what it reads stays in the process's heap.
        i = t.IntentRow
        q = (i.select(i.intent_id, i.condition_id, i.asset, i.side, i.decided_at, i.notional, i.size, i.market_end_ts,
                      i.fee_rate, i.fee_exponent, t.OrderRow.status, t.OrderRow.filled_size, t.OrderRow.avg_price)
             .join(t.OrderRow, pw.JOIN.LEFT_OUTER, on=(t.IntentRow.intent_id == t.OrderRow.intent_id))
             .where((t.IntentRow.decision == "order") & ((t.IntentRow.decided_at >= since) | t.OrderRow.id.is_null()
                                                       | t.OrderRow.status.in_(_UNRESOLVED))).dicts())
        return [ExposureRow(intent_id=r["intent_id"], condition_id=r["condition_id"], asset=r["asset"],
                            side=Side(r["side"]), decided_at=r["decided_at"], notional=r["notional"], size=r["size"],
                            filled_size=r.get("filled_size") or 0.0, avg_price=r.get("avg_price") or 0.0,
                            in_flight=r.get("status") is None or r["status"] in _UNRESOLVED,
                            market_end_ts=r["market_end_ts"], fee_rate=r["fee_rate"], fee_exponent=r["fee_exponent"])
                for r in q]

    # ---- report queries ----------------------------------------------------------------------------------
    # Plain cursor reads: peewee's per-value conversion cost ~20 us a row, most of `copier report` on a week's store.
    # Each query searches the index on its `since` column (tests/copier/test_upkeep.py checks the plans).
    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        cur = self.db.execute_sql(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]     # noqa: B905 (one name per column, by sqlite)

    def _rows_since(self, table: str, column: str, since: float, order: str, columns: tuple[str, ...] = ()) \
            -> list[Row]:
        return self._rows(f'SELECT {_names(columns) or "*"} FROM "{table}" WHERE "{column}" >= ? ORDER BY {order}',
                          (int(since * 1e9),))

    def map_for_reading(self, max_bytes: int = 1 << 30) -> None:
        """Read the file through a memory map (a report's reads walk indexes in a random order: a quarter faster
        than through sqlite's page cache on a week's store). For a reading process, not for the running copier."""
        self.db.execute_sql(f"PRAGMA mmap_size = {int(max_bytes)}")

    def fills_since(self, since: float) -> Iterable[Row]:
        return self._rows_since("fills", "recv_ns", since, '"recv_ns"')

    def intents_since(self, since: float) -> Iterable[Row]:
        return self._rows_since("intents", "decided_ns", since, '"decided_ns", "id"')

    def orders_since(self, since: float) -> Iterable[Row]:
        return self._rows_since("orders", "signed_ns", since, '"signed_ns"')

    def record_since(self, since: float) -> Record:
        """The report's record: the columns it reads (signed bodies, books and the like are left in the file)."""
        return Record(since, self._rows_since("fills", "recv_ns", since, '"recv_ns"', _RECORD_FILL_COLUMNS),
                      self._rows_since("intents", "decided_ns", since, '"decided_ns", "id"', _RECORD_INTENT_COLUMNS),
                      self._rows_since("orders", "signed_ns", since, '"signed_ns"', _RECORD_ORDER_COLUMNS))

    def fills_before(self, before: float) -> list[Row]:
        """Fills received before `before` (epoch s), as a record holds them: with a record's fills, every fill."""
        return self._rows(f'SELECT {_names(_RECORD_FILL_COLUMNS)} FROM "fills" WHERE "recv_ns" < ? ORDER BY "recv_ns"',
                          (int(before * 1e9),))

    # ---- detection (sightings per feed, confirm / retract) -----------------------------------------------
    def record_sightings(self, rows: list[Row]) -> None:
        with self.db.atomic():
            self._sighting.many(rows)

    def record_fill_events(self, rows: list[Row]) -> None:
        with self.db.atomic():
            self._fill_event.many(rows)

    def record_aliases(self, rows: list[Row]) -> None:
        t = self.t
        with self.db.atomic():
            t.AliasRow.insert_many(rows).on_conflict_ignore().execute()

    def aliases_since(self, since: float) -> list[tuple[str, str]]:
        t = self.t
        return list(t.AliasRow.select(t.AliasRow.tx_hash, t.AliasRow.original)
                    .where(t.AliasRow.at_ns >= int(since * 1e9)).order_by(t.AliasRow.at_ns).tuples())

    def confirm_fills(self, keys: list[str]) -> None:
        t = self.t
        t.FillRow.update(confirmed=True).where(t.FillRow.dedupe_key.in_(keys)).execute()

    def copy_of(self, dedupe_key: str) -> Row | None:
        """The order that copied this fill and may have executed, or None."""
        t = self.t
        return (t.OrderRow.select(t.OrderRow.intent_id, t.OrderRow.order_hash, t.OrderRow.status)
                .join(t.FillRow, on=(t.FillRow.intent_id == t.OrderRow.intent_id))
                .where((t.FillRow.dedupe_key == dedupe_key) & t.OrderRow.status.not_in(_NOT_EXECUTED))
                .dicts().first())

    def sightings_since(self, since: float) -> Iterable[Row]:
        return self._rows_since("sightings", "recv_ns", since, '"recv_ns"')

    def arrivals_since(self, since: float) -> list[tuple[str, str, int, float, int]]:
        """(dedupe key, feed, receive instant ns, match ts, first) of every sighting since `since`, by receive
        instant: what the report's detection section reads of 5 or more sightings per fill, as plain tuples."""
        return self.db.execute_sql('SELECT "dedupe_key", "feed", "recv_ns", "match_ts", "first" FROM "sightings" '
                                   'WHERE "recv_ns" >= ? ORDER BY "recv_ns"', (int(since * 1e9),)).fetchall()

    def fill_events_since(self, since: float) -> Iterable[Row]:
        return self._rows_since("fill_events", "at_ns", since, '"at_ns"')

    # ---- positions and PnL ------------------------------------------------------------------------------
    def own_fills(self, updated_from_ns: int = 0, signed_before: float | None = None, open_only: bool = False) \
            -> list[Row]:
        """Every order of ours that filled shares (live or on paper) and is final, oldest first, with its intent's
        market, side, fee schedule and market end; `at` is when the venue answered (epoch s). updated_from_ns: only
        orders last updated at or after this instant (the runtime's incremental pass); signed_before: only orders
        signed before this instant (epoch s); open_only: not those of a closed market (the runtime's ledger)."""
        # A plain cursor, as the report queries: a report folds every order ever settled.
        sql, params = _OWN_FILLS_SQL, (*_UNRESOLVED, int(updated_from_ns))
        if signed_before is not None:
            sql, params = sql + ' AND o."signed_ns" < ?', (*params, int(signed_before * 1e9))
        if open_only:
            sql += _NOT_CLOSED.format(column='i."condition_id"')
        return [_settled(r) for r in self._rows(sql + _OWN_FILLS_ORDER, params)]

    def own_fills_with(self, record: Record) -> list[Row]:
        """`own_fills()`, the record's orders taken from the record: those signed before it are read, the record's
        own are joined with their intents here (an intent decided before the record began is read)."""
        settled = [o for o in record.orders if o["filled_size"] > 0 and o["status"] not in _UNRESOLVED]
        intents = {i["intent_id"]: i for i in record.intents}
        missing = sorted({o["intent_id"] for o in settled} - intents.keys())
        for chunk in range(0, len(missing), 500):
            ids = missing[chunk:chunk + 500]
            intents.update((i["intent_id"], i) for i in self._rows(
                f'SELECT * FROM "intents" WHERE "intent_id" IN ({", ".join("?" * len(ids))})', tuple(ids)))
        rows = self.own_fills(signed_before=record.since)
        rows += [_settled(dict(zip(_OWN_COLUMNS, _own_order(o) + _own_intent(intents[o["intent_id"]]), strict=True)))
                 for o in settled if o["intent_id"] in intents]      # an inner join: no intent row, no fill
        rows.sort(key=itemgetter("updated_ns", "id"))
        return rows

    def source_fills(self, since: float = 0.0) -> list[Row]:
        """The source's fills as decided (every fill the copier saw, copied or not), oldest first."""
        return self._rows('SELECT "condition_id", "asset", "outcome", "side", "price", "size", "match_ts" FROM "fills" '
                          'WHERE "match_ts" >= ? ORDER BY "match_ts", "id"', (float(since),))

    def record_resolution(self, condition_id: str, winning_asset: str, at: float, origin: str) -> bool:
        """False when the market's winner was already known (the first word stands)."""
        t = self.t
        return bool(t.ResolutionRow.insert(condition_id=condition_id, winning_asset=winning_asset, resolved_at=at,
                                           origin=origin).on_conflict_ignore().execute())

    def resolutions(self, after_id: int = 0, open_only: bool = False) -> list[Row]:
        """Winners in the order they were recorded; after_id: only those recorded after that row; open_only: not
        those of a closed market."""
        closed = _NOT_CLOSED.format(column='"condition_id"') if open_only else ""
        return self._rows(f'SELECT * FROM "resolutions" WHERE "id" > ?{closed} ORDER BY "id"', (int(after_id),))

    def close_markets(self, rows: list[tuple[str, int, float]], held: list[tuple[str, str, float]], at: float) -> None:
        """Markets the positions ledger settled for good: rows (condition id, UTC day, pUSD realised that day), a row
        per day with an amount (a market that realised nothing has one row of 0); held (asset, condition id, shares):
        the losing tokens still held."""
        t = self.t
        with self.db.atomic():
            for chunk in range(0, len(rows), 500):
                t.ClosedMarketRow.insert_many(
                    [dict(condition_id=cid, day=day, realized=amount, closed_at=at)
                     for cid, day, amount in rows[chunk:chunk + 500]]).execute()
            for chunk in range(0, len(held), 500):
                t.ClosedHoldingRow.insert_many(
                    [dict(asset=asset, condition_id=cid, size=size) for asset, cid, size in held[chunk:chunk + 500]]
                ).on_conflict_replace().execute()

    def closed_holdings(self, assets: list[str]) -> dict[str, float]:
        """asset -> shares, of those among `assets` held when their market closed."""
        t = self.t
        out: dict[str, float] = {}
        for chunk in range(0, len(assets), 500):
            out.update(t.ClosedHoldingRow.select(t.ClosedHoldingRow.asset, t.ClosedHoldingRow.size)
                       .where(t.ClosedHoldingRow.asset.in_(assets[chunk:chunk + 500])).tuples())
        return out

    def closed_realized(self, from_day: int) -> tuple[float, dict[int, float]]:
        """The closed markets' realised PnL: in all, and per UTC day from `from_day` on."""
        total = self.db.execute_sql('SELECT COALESCE(SUM("realized"), 0) FROM "closed_markets"').fetchone()[0]
        days = self.db.execute_sql('SELECT "day", SUM("realized") FROM "closed_markets" WHERE "day" >= ? '
                                   'GROUP BY "day"', (int(from_day),)).fetchall()
        return float(total), {int(day): float(amount) for day, amount in days}

    def record_pnl_snapshot(self, rows: list[Row]) -> None:
        t = self.t
        with self.db.atomic():
            t.PnlSnapshotRow.insert_many(rows).execute()

    def latest_pnl_snapshot(self) -> list[Row]:
        """The newest row of every position (a row is written when its valuation changes)."""
        t = self.t
        newest = (t.PnlSnapshotRow.select(pw.fn.MAX(t.PnlSnapshotRow.id).alias("last"))
                  .group_by(t.PnlSnapshotRow.asset))
        return list(t.PnlSnapshotRow.select().where(t.PnlSnapshotRow.id.in_(newest)).dicts())

    def pnl_marks(self) -> list[tuple[float, str, float]]:
        """(instant, asset, unrealised PnL) of every PnL snapshot row, oldest first."""
        return self.db.execute_sql('SELECT "at", "asset", "unrealized" FROM "pnl_snapshots" ORDER BY "at", "id"'
                                   ).fetchall()

    def record_source_seed(self, at: float, held: dict[str, float]) -> None:
        """The source's holdings the copier started from (replay starts from the same ones at the same instant). One
        row per start: a start writes its own and reads none of the earlier ones."""
        self._put(f"{_SEED_PREFIX}{at:.6f}", {"at": at, "held": held})

    def source_seeds(self) -> list[Row]:
        """Every start's seed, oldest first: {at, held: {asset: shares}} (and those an older build kept in one list)."""
        t = self.t
        rows = t.KV.select(t.KV.value).where(t.KV.key.startswith(_SEED_PREFIX))
        seeds: list[Row] = [*(self._get("source_seeds") or []), *(json.loads(r.value) for r in rows)]
        return sorted(seeds, key=lambda seed: seed["at"])

    # ---- cursors, halt flag, heartbeat -------------------------------------------------------------------
    def _get(self, key: str) -> Any:
        t = self.t
        row = t.KV.get_or_none(t.KV.key == key)
        return json.loads(row.value) if row else None

    def _put(self, key: str, value: object) -> None:
        t = self.t
        t.KV.insert(key=key, value=json.dumps(value)).on_conflict_replace().execute()

    def cursor(self, name: str) -> float | None:
        return self._get(f"cursor:{name}")

    def set_cursor(self, name: str, value: float) -> None:
        self._put(f"cursor:{name}", value)

    def is_halted(self) -> bool:
        """The halt flag read straight from the file: `copier halt` from another process is seen at once (the last
        gate before every POST asks this; one indexed lookup on a prepared statement)."""
        return self.db.execute_sql(_HALT_SQL).fetchone() is not None

    def halted(self) -> tuple[bool, str]:
        v = self._get("halt")
        return (True, v["reason"]) if v else (False, "")

    def halt(self, reason: str, now: float) -> None:
        self._put("halt", {"reason": reason, "since": now})

    def resume(self) -> None:
        t = self.t
        t.KV.delete().where(t.KV.key == "halt").execute()

    def heartbeat(self) -> Row | None:
        return self._get("heartbeat")

    def set_heartbeat(self, info: Row) -> None:
        self._put("heartbeat", info)

    def size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    # ---- bounded growth (copier.upkeep drives these) -----------------------------------------------------
    def prune_dedupe_rows(self, before_ns: int, limit: int) -> int:
        """Delete up to `limit` sightings and `limit` transaction aliases recorded before `before_ns`: rows only
        the dedupe and the detection report read. Fills, intents, orders and fill events are the record: never."""
        deleted = 0
        with self.db.atomic():
            for table, column in (("sightings", "recv_ns"), ("tx_aliases", "at_ns")):
                cur = self.db.execute_sql(f'DELETE FROM "{table}" WHERE rowid IN (SELECT rowid FROM "{table}" '
                                          f'WHERE "{column}" < ? LIMIT ?)', (before_ns, limit))
                deleted += cur.rowcount
        return deleted

    def incremental_vacuum(self, pages: int) -> int:
        """Give up to `pages` free pages back to the file system; the free pages left."""
        self.db.execute_sql(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
        return int(self.db.execute_sql("PRAGMA freelist_count").fetchone()[0])

    def wal_bytes(self) -> int:
        wal = self.path + "-wal"
        return os.path.getsize(wal) if self.path != ":memory:" and os.path.exists(wal) else 0

    def truncate_wal(self) -> bool:
        """Checkpoint everything and cut the WAL file to zero, from a native thread (see checkpoint). True if it
        did; False if a reader or writer held it back (the next pass tries again)."""
        if self.path == ":memory:":
            return True
        busy = gevent.get_hub().threadpool.apply(_truncate_checkpoint, (self.path,))
        return not busy


TRUNCATE_BUSY_S = 0.2          # a truncating checkpoint waits this long for readers, then gives up until next time


def _truncate_checkpoint(path: str) -> bool:
    """True if the checkpoint was held back (SQLITE_BUSY)."""
    con = sqlite3.connect(path, timeout=TRUNCATE_BUSY_S)
    try:
        return bool(con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
    finally:
        con.close()


def _passive_checkpoint(path: str) -> None:
    con = sqlite3.connect(path, timeout=5.0)
    try:
        con.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        con.close()
