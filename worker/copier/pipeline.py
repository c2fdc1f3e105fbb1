"""The pipeline: one step from a source fill to decisions and orders, shared by `copier run` and `copier replay`.

    fill -> coalescer (a leading order at once, a trailing batch after the burst goes quiet)
         -> confirmation gate (an unconfirmed mempool fill may lead, never ride in a trailing batch)
         -> market (only listed markets, when configured) -> decide (pure) -> reserve the exposure
         -> an order for `dispatch` | a recorded refusal | held (a SELL waiting for our BUYs in flight)
    order -> OrderStep: record the decision, submit (the executor's gate, write-ahead, POST), settle the exposure

The caller owns time: `add(fill, now)` and `tick(now)` are the only ways in, so the live pipeline greenlet and a
replay's virtual clock drive the same code, decisions are made at the coalescer's release instant in both, and a
replay decides exactly what `run` decided on the same arrivals.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from copier.clock import Clock
from copier.coalescer import Coalescer
from copier.config import Config
from copier.decision import decide, refuse, remainder
from copier.detection import ConfirmationGate, Detection
from copier.errors import OperationalError
from copier.exposure import ExposureBook
from copier.logs import batch_fields, fill_cid
from copier.ports import Alerts, Books, Executor, Markets, Metrics
from copier.positions import SourceHoldings
from copier.store import Store
from copier.types import Batch, BookTop, ExecutionReport, Hold, MarketMeta, OrderIntent, OrderStatus, Skip, SourceFill

log = logging.getLogger("copier.pipeline")

RECHECK_S = 0.05            # how soon a batch held for confirmation (or for our own BUYs) goes once free
NEAR_EDGE = 0.05            # within this of 0 or 1 the venue switches ticks: the tick is re-read before pricing
REMAINDER_AFTER = frozenset({OrderStatus.MATCHED, OrderStatus.KILLED, OrderStatus.PAPER_FILLED,
                             OrderStatus.PAPER_KILLED})     # a FAK's final answers that may leave a remainder
MIN_REMAINDER_SHARES = 0.01  # the venue's size precision
BOOK_WAIT_S = 0.3           # how long a remainder waits for the book to show our order's effect
BOOK_POLL_S = 0.02
Dispatch = Callable[[OrderIntent, Batch, MarketMeta], object]      # what it returns is not used


class Pipeline:
    def __init__(self, cfg: Config, *, exposure: ExposureBook, markets: Markets, books: Books, store: Store,
                 metrics: Metrics, clock: Clock, dispatch: Dispatch, detection: Detection | None = None,
                 halted: Callable[[], bool] = lambda: False, time_resolution_s: float = 0.0,
                 clock_block: Callable[[], str | None] = lambda: None, source: SourceHoldings | None = None):
        """books: the order books orders are priced on. dispatch: takes each order decided (its exposure already
        reserved). detection: the confirmation gate's view of which fills are confirmed (None: every fill counts as
        confirmed). halted: whether trading is halted (decisions refuse; the executor's gate reads the halt itself).
        time_resolution_s: see Coalescer. clock_block: why the clock cannot be trusted for new orders now, or None
        (timesync.ClockWatch). source: the source's shares per token, for the exit rule (seeded by the caller; every
        batch decided moves it)."""
        self.cfg = cfg
        self.exposure = exposure
        self.markets = markets
        self.books = books
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.dispatch = dispatch
        self.coalescer = Coalescer(cfg.copy, time_resolution_s)
        self.gate = ConfirmationGate(detection, cfg.feeds.mempool_may_trigger, self.coalescer) \
            if detection is not None else None
        self.halted = halted
        self.clock_block = clock_block
        self.source = source or SourceHoldings()
        self._held: list[Batch] = []

    # ---- the two ways in ---------------------------------------------------------------------------------
    def add(self, fill: SourceFill, now: float) -> None:
        """One admitted source fill, taken now."""
        log.info("fill received", extra={"cid": fill_cid(fill.dedupe_key), "key": fill.dedupe_key, "feed": fill.feed,
                                          "side": fill.side.value, "size": fill.size, "price": fill.price,
                                          "asset": fill.asset})
        for batch in self.coalescer.add(fill, now):
            self._admit(batch)

    def tick(self, now: float) -> None:
        """Release what is due: trailing batches, batches the confirmation gate held, SELLs our BUYs held."""
        for batch in self.coalescer.due(now) + (self.gate.due(now) if self.gate is not None else []):
            self._admit(batch)
        if self._held:
            held, self._held = self._held, []
            for batch in held:
                self._act(replace(batch, released_at=now))

    def next_wakeup(self, now: float) -> float | None:
        """When `tick` next has something to do (None: only a new fill can)."""
        deadline = self.coalescer.next_deadline()
        if self._held or (self.gate is not None and self.gate.parked()):
            deadline = min(deadline, now + RECHECK_S) if deadline is not None else now + RECHECK_S
        return deadline

    def flush(self, now: float) -> int:
        """Shutdown: batches still being coalesced or held are recorded as refused (`stopping`), so every fill seen
        is in the store and none is decided again after a restart. Returns how many fills that was."""
        batches = self.coalescer.flush(now) + (self.gate.flush() if self.gate is not None else []) + self._held
        self._held = []
        for batch in batches:
            self._refuse(replace(batch, released_at=now), "stopping", "the copier stopped first")
        return sum(len(b.fills) for b in batches)

    # ---- the step ----------------------------------------------------------------------------------------
    def _admit(self, batch: Batch) -> None:
        if self.gate is not None:
            admitted = self.gate.pass_or_park(batch)
            if admitted is None:
                self.metrics.incr("gate.parked")
                return
            batch = admitted
        self._act(batch)

    def _market(self, batch: Batch) -> MarketMeta | None:
        market = self.markets.by_asset(batch.asset)
        only_listed = self.cfg.markets.only_listed
        if market is None and not only_listed:
            market = self.markets.lookup(batch.condition_id, batch.asset)
        if market is not None and only_listed and not self.markets.listed(market.slug):
            return None
        return market

    def _act(self, batch: Batch) -> None:
        t0 = self.clock.monotonic()
        clock_block = self.clock_block()
        if clock_block is not None and not self.halted():      # a halt, the operator's, is the reason it keeps
            self._refuse(batch, "clock_untrusted", clock_block)
            return
        market = self._market(batch)
        if market is not None and any(not NEAR_EDGE < f.price < 1 - NEAR_EDGE for f in batch.fills):
            tick = self.markets.fresh_tick(batch.asset)
            if tick is None:
                self._refuse(batch, "tick_unconfirmed", "the venue did not confirm the tick size near 0 or 1")
                return
            market = replace(market, tick_size=tick)
        # Decided at the coalescer's release instant: the same arrivals give the same decisions, live or replayed.
        decision = decide(self.exposure, batch, market, batch.released_at, self.cfg, halted=self.halted(),
                          book=self.books.top(batch.asset), source_held=self.source.held(batch.asset))
        self.metrics.timing("stage.decide_ms", (self.clock.monotonic() - t0) * 1000)
        if isinstance(decision, Hold):
            self.metrics.incr("decisions.hold")
            self._held.append(batch)
            return
        self.source.apply(batch.fills)
        fields = {**batch_fields(decision.intent_id, decision.fill_keys), "kind": batch.kind}
        if isinstance(decision, OrderIntent):
            assert market is not None               # decide orders only on a known market
            self.metrics.incr("decisions.order")
            log.info("decision order %s %.2f @ cap %.4f", decision.side.value, decision.size, decision.price_cap,
                     extra=fields)
            self.exposure.reserve(decision)
            self.dispatch(decision, batch, market)
        else:
            self._record_skip(batch, decision)

    def _refuse(self, batch: Batch, reason: str, detail: str) -> None:
        self.source.apply(batch.fills)
        self._record_skip(batch, refuse(batch, (reason, detail), batch.released_at))

    def _record_skip(self, batch: Batch, skip: Skip) -> None:
        self.metrics.incr("decisions.skip")
        self.metrics.incr(f"skips.{skip.reason}")
        log.info("decision skip %s: %s", skip.reason, skip.detail,
                 extra={**batch_fields(skip.intent_id, skip.fill_keys), "kind": batch.kind})
        self.store.record_decision(list(batch.fills), skip, self.clock.now_ns())


class OrderStep:
    """One decided order, from its record to its settlement, and the remainder orders for what a killed or partly
    filled FAK left: run by the executor greenlets live, at once in replay."""

    def __init__(self, cfg: Config, *, executor: Executor, store: Store, exposure: ExposureBook, markets: Markets,
                 books: Books, metrics: Metrics, alerts: Alerts, clock: Clock,
                 on_report: Callable[[Batch, ExecutionReport], object] | None = None):
        """on_report: told of each order that went on the wire (the runtime's circuit breaker)."""
        self.cfg = cfg
        self.executor = executor
        self.store = store
        self.exposure = exposure
        self.markets = markets
        self.books = books
        self.metrics = metrics
        self.alerts = alerts
        self.clock = clock
        self.on_report = on_report

    def __call__(self, intent: OrderIntent, batch: Batch, market: MarketMeta,
                 queued_at: float | None = None) -> ExecutionReport | None:
        """None when these fills were decided before (a restart raced the dedupe seed): never a second order.
        Raises OperationalError when trading cannot go on safely (the caller halts)."""
        t0 = self.clock.monotonic()
        if not self.store.record_decision(list(batch.fills), intent, self.clock.now_ns()):
            self.exposure.release(intent.intent_id)
            self.metrics.incr("decisions.replayed")
            return None
        if queued_at is not None:
            self.metrics.timing("stage.handoff_ms", (t0 - queued_at) * 1000)
        self.metrics.timing("stage.persist_decision_ms", (self.clock.monotonic() - t0) * 1000)
        report = self._send(intent, batch, market)
        self._complete(intent, batch, report)
        return report

    def _send(self, intent: OrderIntent, batch: Batch, market: MarketMeta) -> ExecutionReport:
        try:
            report = self.executor.submit(intent, market)
        except OperationalError:
            self.exposure.release(intent.intent_id)          # nothing was taken: an auth failure precedes matching
            raise
        first_recv = min(f.recv_ns for f in batch.fills)
        delay_ms = (report.submit_ns - first_recv) / 1e6 if report.submit_ns else 0.0
        if report.submit_ns and not intent.parent_id:
            self.metrics.timing(f"copy_delay_ms.{batch.kind}", delay_ms)
        log.info("order %s filled %.2f @ %.4f attempts %d %s", report.status, report.filled_size, report.avg_price,
                 report.attempts, report.error, extra={**batch_fields(intent.intent_id, intent.fill_keys),
                                                       "order_hash": report.order_hash, "delay_ms": delay_ms})
        self.settle(report)
        if report.status is OrderStatus.REJECTED:
            self.alerts.alert("order_rejected", f"order rejected: {report.error}", intent=intent.intent_id)
        if self.on_report is not None and report.submit_ns:
            self.on_report(batch, report)
        return report

    def _complete(self, intent: OrderIntent, batch: Batch, report: ExecutionReport) -> None:
        """After a FAK the venue killed or filled in part: up to `execution.max_remainder_orders` more orders for
        what is left, each priced on the book as it is after ours, inside the same budget, while the signal is
        fresh and the caps allow. Each is recorded before it is signed (an intent's n-th remainder exists once),
        so a restart at any step never makes the total exceed the intent's size."""
        filled = report.filled_size
        for n in range(1, self.cfg.execution.max_remainder_orders + 1):
            if report.status not in REMAINDER_AFTER or intent.size - filled < MIN_REMAINDER_SHARES:
                return
            market = self.markets.by_asset(intent.asset)
            if market is None:
                return
            book = self._book_after(intent.asset, report.ack_ns / 1e9)
            child = remainder(intent, filled, n, market, book, self.exposure, self.clock.now(), self.cfg)
            if isinstance(child, tuple):
                self.metrics.incr(f"remainders.refused.{child[0]}")
                log.info("no remainder order: %s: %s", *child, extra=batch_fields(intent.intent_id, intent.fill_keys))
                return
            if not self.store.record_remainder(child, min(f.recv_ns for f in batch.fills), self.clock.now_ns()):
                return
            self.metrics.incr("remainders.sent")
            self.exposure.reserve(child)
            report = self._send(child, batch, market)
            filled += report.filled_size

    def _book_after(self, asset: str, answered_at: float) -> BookTop | None:
        """The book once it shows our order's effect (updated after the venue answered), waited for briefly;
        else what there is (too old, the decision falls back to the budget's edge)."""
        deadline = self.clock.monotonic() + BOOK_WAIT_S
        while True:
            book = self.books.top(asset)
            if book is None or book.received_at >= answered_at or self.clock.monotonic() >= deadline:
                return book
            self.clock.sleep(BOOK_POLL_S)

    def settle(self, report: ExecutionReport) -> None:
        """A final answer replaces the order's reservation by what it filled; an unresolved one keeps it."""
        if not report.status.unresolved:
            self.exposure.settle(report.intent_id, report.filled_size, report.avg_price)


def our_delay_ms(batch: Batch, submit_ns: int) -> float:
    """What the circuit breaker judges: the delay that is ours, ingest -> submit without the coalescer's designed
    wait. The longest ingest-queue wait among the batch's fills (a backlog) plus release -> submit."""
    queued_ns = max((f.picked_ns - f.recv_ns for f in batch.fills if f.picked_ns), default=0)
    return queued_ns / 1e6 + (submit_ns / 1e9 - batch.released_at) * 1000
