"""`copier replay`: the live pipeline (coalescer, confirmation gate, market filter, decision, risk, the order step)
on a recorded history, with a virtual clock.

Two histories:
- `--fills`: Data API trade rows. Each fill arrives at its match time. Data API timestamps are whole seconds, so a
  quiet gap shorter than a second cannot be seen in them: the coalescer's quiet window is widened to that resolution.
- `--recorded`: a copier's own store. Every sighting it recorded arrives again at the instant it arrived then, on
  its feed and stream, so a fill first seen in the mempool is unconfirmed until its confirming sighting, exactly as
  live: the same arrivals give the same decisions as the run that recorded them.
Orders are assumed filled in full at their price cap (the worst case the caps allow for), so positions and caps
evolve as they would live. The decisions are printed as JSON lines, one per intent, in the order they were made.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from copier.alerts import NullAlerts
from copier.clock import FakeClock
from copier.config import Config, load_config
from copier.dedupe import Deduper
from copier.detection import Detection
from copier.errors import ConfigError, MalformedMessage
from copier.exposure import ExposureBook
from copier.markets import markets_from_gamma
from copier.metrics import NullMetrics
from copier.pipeline import OrderStep, Pipeline
from copier.schemas import parse_data_api_trade
from copier.store import Store, book_from_json
from copier.types import BookTop, ExecutionReport, Feed, Funds, MarketMeta, OrderIntent, OrderStatus, Side, SourceFill


def _load_json_docs(path: str) -> list:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, list) else [doc]
    except ValueError:
        pass
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                docs.append(json.loads(line))
            except ValueError:
                raise ConfigError(f"{path} line {n}: not JSON") from None
    return docs


def load_fills(path: str) -> list[SourceFill]:
    rows = _load_json_docs(path)
    if len(rows) == 1 and isinstance(rows[0], dict) and isinstance(rows[0].get("data"), list):
        rows = rows[0]["data"]          # a whole /v2/trades page
    fills = []
    for n, row in enumerate(rows, 1):
        try:
            fills.append(parse_data_api_trade(row, recv_ns=0))
        except MalformedMessage as exc:
            raise ConfigError(f"{path} row {n}: {exc}") from None
    return fills


def load_markets(path: str) -> list[MarketMeta]:
    out = []
    for doc in _load_json_docs(path):
        try:
            out += markets_from_gamma(doc)
        except MalformedMessage as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return out


class StaticMarkets:
    """The replay's market metadata: what the markets file holds, nothing looked up."""

    def __init__(self, markets: list[MarketMeta], cfg: Config):
        self._by_asset = {t: m for m in markets for t in m.token_ids}
        self._prefixes = cfg.markets.slug_prefixes

    def by_asset(self, asset: str) -> MarketMeta | None:
        return self._by_asset.get(asset)

    def lookup(self, condition_id: str, asset: str) -> MarketMeta | None:
        return self._by_asset.get(asset)

    def listed(self, slug: str) -> bool:
        return any(slug.startswith(p) for p in self._prefixes)

    def fresh_tick(self, asset: str) -> float | None:
        market = self._by_asset.get(asset)
        return market.tick_size if market is not None else None


class FilledAtCap:
    """Replay's executor: every order fills in full at its price cap, recorded like any order."""

    def __init__(self, store: Store, clock: FakeClock):
        self.store = store
        self.clock = clock

    def submit(self, intent: OrderIntent, market: MarketMeta) -> ExecutionReport:
        now_ns = self.clock.now_ns()
        order_hash = f"replay:{intent.intent_id}"
        self.store.record_signed(intent.intent_id, order_hash, "", now_ns)
        self.store.update_order(intent.intent_id, now_ns, status=OrderStatus.MATCHED, submit_ns=now_ns, ack_ns=now_ns,
                                filled_size=intent.size, avg_price=intent.price_cap, attempts=1)
        return ExecutionReport(intent.intent_id, order_hash, OrderStatus.MATCHED, filled_size=intent.size,
                               avg_price=intent.price_cap, submit_ns=now_ns, ack_ns=now_ns)

    def recover(self) -> list[ExecutionReport]:
        return []

    def reconcile(self) -> list[ExecutionReport]:
        return []

    def funds(self) -> Funds | None:
        return None

    def keep_warm(self) -> None:
        pass

    def close(self) -> None:
        pass


RECORDED_BOOK_S = 1.0


class RecordedBooks:
    """The books a recorded run priced its decisions on, each served at the instant it was used: the snapshot of
    that asset recorded nearest the replay's clock, within RECORDED_BOOK_S (a batch the confirmation gate held is
    decided a few ms apart live and in replay). None: no book, priced at the budget's edge, as the run did."""

    def __init__(self, clock: FakeClock, snapshots: dict[str, list[tuple[float, BookTop]]] | None = None):
        self.clock = clock
        self.snapshots = snapshots or {}

    @classmethod
    def of(cls, store: Store, clock: FakeClock) -> RecordedBooks:
        snapshots: dict[str, list[tuple[float, BookTop]]] = {}
        for i in store.intents_since(0):
            book = book_from_json(i["asset"], i["book"])
            if book is not None:
                snapshots.setdefault(i["asset"], []).append((i["decided_at"], book))
        return cls(clock, snapshots)

    def top(self, asset: str) -> BookTop | None:
        now = self.clock.now()
        near = [(abs(at - now), book) for at, book in self.snapshots.get(asset, ()) if abs(at - now) <= RECORDED_BOOK_S]
        return min(near, key=lambda n: n[0])[1] if near else None


class Replay:
    """The pipeline wired to recorded inputs, an in-memory store and a virtual clock."""

    def __init__(self, cfg: Config, markets: list[MarketMeta], *, detection: bool, time_resolution_s: float = 0.0,
                 books: RecordedBooks | None = None):
        self.clock = books.clock if books is not None else FakeClock(0.0)
        self.store = Store.open(":memory:")
        metrics = NullMetrics()
        exposure = ExposureBook(cfg.markets.window_seconds)
        self.detection = Detection(Deduper(), cfg.feeds, clock=self.clock, metrics=metrics, alerts=NullAlerts()) \
            if detection else None
        self.deduper = Deduper()
        book_source = books if books is not None else RecordedBooks(self.clock)
        static = StaticMarkets(markets, cfg)
        step = OrderStep(cfg, executor=FilledAtCap(self.store, self.clock), store=self.store, exposure=exposure,
                         markets=static, books=book_source, metrics=metrics, alerts=NullAlerts(), clock=self.clock)
        self.pipeline = Pipeline(cfg, exposure=exposure, markets=static, books=book_source, store=self.store,
                                 metrics=metrics, clock=self.clock, dispatch=step, detection=self.detection,
                                 time_resolution_s=time_resolution_s)

    def at(self, t: float) -> None:
        """Move the virtual clock to t, running whatever falls due on the way (confirmation timers, releases)."""
        while (wake := self.pipeline.next_wakeup(self.clock.now())) is not None and wake < t:
            self._advance(wake)
        self._advance(t)

    def _advance(self, t: float) -> None:
        self.clock.advance(t - self.clock.now())
        if self.detection is not None:
            self.detection.step()
        self.pipeline.tick(self.clock.now())

    def finish(self) -> None:
        """Let every held batch go: run the clock until nothing is due."""
        while (wake := self.pipeline.next_wakeup(self.clock.now())) is not None:
            self._advance(max(wake, self.clock.now()))
            if self.clock.now() > 1e12:
                break

    def decisions(self) -> list[dict]:
        return decision_lines(self.store)


def replay(fills: list[SourceFill], markets: list[MarketMeta], cfg: Config) -> list[dict]:
    """Data API history: each fill arrives at its match time. Deterministic."""
    whole_seconds = all(float(f.match_ts).is_integer() for f in fills)
    r = Replay(cfg, markets, detection=False, time_resolution_s=1.0 if whole_seconds else 0.0)
    wallet = cfg.copy.source_wallet.lower()
    ordered = sorted(enumerate(fills), key=lambda p: (p[1].match_ts, p[0]))
    for _, fill in ordered:
        if fill.wallet and fill.wallet != wallet:
            continue
        t = fill.match_ts
        r.at(t)
        admitted = r.deduper.admit(_arrived(fill, t, Feed.REPLAY.value), "replay")
        if admitted is not None:
            r.pipeline.add(admitted, t)
    r.finish()
    return r.decisions()


def replay_recorded(store: Store, markets: list[MarketMeta], cfg: Config) -> list[dict]:
    """A copier's own recording: its sightings, in arrival order, through detection and the pipeline."""
    fills = {f["dedupe_key"]: f for f in store.fills_since(0)}
    r = Replay(cfg, markets, detection=True, books=RecordedBooks.of(store, FakeClock(0.0)))
    assert r.detection is not None
    seeds = store.source_seeds()        # the source's holdings each start of the run began from (the exit rule)
    for s in store.sightings_since(0):
        row = fills.get(s["dedupe_key"])
        if row is None:
            continue                    # seen, never decided: nothing to replay it from
        t = s["recv_ns"] / 1e9
        while seeds and seeds[0]["at"] <= t:
            seed = seeds.pop(0)
            r.at(max(seed["at"], r.clock.now()))
            r.pipeline.source.seed(seed["held"], seed["at"])
        r.at(t)
        fill = SourceFill(tx_hash=row["tx_hash"], asset=row["asset"], condition_id=row["condition_id"],
                          outcome=row["outcome"], outcome_index=999, side=Side(row["side"]), price=row["price"],
                          size=row["size"], match_ts=row["match_ts"], recv_ns=s["recv_ns"], feed=s["feed"],
                          confirmed=s["feed"] != Feed.MEMPOOL.value)
        if s["first"]:
            admitted = r.detection.sight(fill, s["stream"])
            if admitted is not None:
                r.pipeline.add(admitted, t)
        else:
            r.detection.confirm_only(fill, s["stream"])
    r.finish()
    return r.decisions()


def _arrived(fill: SourceFill, t: float, feed: str) -> SourceFill:
    from dataclasses import replace
    return replace(fill, recv_ns=int(t * 1e9), feed=feed)


def decision_lines(store: Store) -> list[dict]:
    """Every decision a store recorded, in the order it was made, as replay prints it."""
    keys: dict[str, list[str]] = {}
    for f in store.fills_since(0):
        keys.setdefault(f["intent_id"], []).append(f["dedupe_key"])
    return [_line(i, sorted(keys.get(i["intent_id"], []))) for i in store.intents_since(0)]


def _line(intent: dict, fills: list[str]) -> dict:
    is_order = intent["decision"] == "order"
    return {"t": round(intent["decided_at"], 3), "action": intent["decision"], "market": intent["condition_id"],
            "asset": intent["asset"], "side": intent["side"], "size": intent["size"],
            "notional_usd": round(intent["notional"], 6), "price_cap": intent["price_cap"] if is_order else None,
            "fills": fills, "reason": intent["capped_by"] if is_order else f"{intent['reason']}: {intent['detail']}"}


def main_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else Config()
    markets = load_markets(args.markets)
    if args.fills:
        lines = replay(load_fills(args.fills), markets, cfg)
    else:
        if not Path(args.recorded).is_file():
            raise ConfigError(f"--recorded {args.recorded}: no such store")
        recorded = Store.open(args.recorded)
        try:
            lines = replay_recorded(recorded, markets, cfg)
        finally:
            recorded.close()
    for line in lines:
        sys.stdout.write(json.dumps(line) + "\n")
    return 0
