"""Composition root: the only module that wires stages, greenlets, queues and signals.

    feeds (RTDS x2, gap-fill, chain logs, mempool, the market channel) -> detection (one dedupe, sightings,
        confirm/retract) -> Intake (the ingest queue) -> the pipeline greenlet (pipeline.py: coalesce, confirmation
        gate, decide, reserve) -> the orders queue -> executor greenlets (OrderStep: record, the last gate, sign,
        persist, post, settle)

One pipeline greenlet owns the coalescer and the exposure book, so every risk decision sees every in-flight order.
Everything else that runs on a clock (the market catalog, reconciliation, keep-warm, funds, the WAL checkpoint, the
halt flag and heartbeat, detection timers, the clock check, the store's upkeep) is a Periodic task under one driver
with one error policy: an exception in one pass is logged, counted and alerted, and the next pass runs.
"""
from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.pool import Group
from gevent.queue import Empty, Full, Queue

from copier.breaker import CircuitBreaker
from copier.clock import Clock, LiveClock
from copier.config import Config, Secrets, market_day_s, polygon_ws, replay_horizon_s, stream_horizon_s
from copier.config import warnings as config_warnings
from copier.detection import Detection
from copier.errors import OperationalError
from copier.pipeline import OrderStep, Pipeline, our_delay_ms
from copier.ports import Alerts, Executor, Feed, Metrics
from copier.process import Census
from copier.risk import funding_refusals
from copier.store import Store
from copier.types import Batch, ExecutionReport, MarketMeta, MarketResolved, OrderIntent, SourceFill

log = logging.getLogger("copier.runtime")

INGEST_QUEUE = 10_000
ORDERS_QUEUE = 1_000
DRAIN_S = 6.0
HEARTBEAT_S = 5.0
CONTROL_S = 0.5             # halt flag poll (for decisions; the gate before every POST reads it itself) and gauges
RECONCILE_S = 1.0           # the executor keeps each unresolved order's own backoff (1 s doubling to 30 s)
KEEP_WARM_S = 15.0          # under the idle timeouts of common HTTP front ends (30-120 s)
FUNDS_S = 60.0              # balance-allowance is rate limited at 200 / 10 s; a minute is plenty to notice
CHECKPOINT_S = 30.0         # the first write after a checkpoint pays ~0.5-1 ms re-reading pages: keep them rare
DETECTION_S = 0.25          # confirm / retract timers and the sightings' writes
REDEEM_TICK_S = 1.0         # the redeemer's own clock decides when a pass is due (see redeem.py)


@dataclass(frozen=True)
class Periodic:
    """A task that runs every `interval_s` (first at start when `at_start`), under the runtime's error policy."""
    name: str
    interval_s: float
    run: Callable[[], object]       # what it returns is not used
    at_start: bool = False


class Orders:
    """The queue from the pipeline to the executor greenlets, and how many orders are between the two ends."""

    def __init__(self, clock: Clock, maxsize: int = ORDERS_QUEUE):
        self.queue: Queue = Queue(maxsize=maxsize)
        self.clock = clock
        self.in_flight = 0      # put, and not yet through the order step
        self.peak = 0           # high-water mark since the last gauge

    def put(self, intent: OrderIntent, batch: Batch, market: MarketMeta) -> None:
        """The pipeline's dispatch: an order decided (its exposure already reserved)."""
        self.in_flight += 1
        self.queue.put((intent, batch, market, self.clock.monotonic()))
        self.peak = max(self.peak, self.queue.qsize())
        gevent.sleep(0)         # an executor takes the order before the pipeline decides the next batch

    def empty(self) -> bool:
        return self.queue.empty()


class HaltSwitch:
    """Halted or not, as decisions see it. A halt is stored first: the gate before every POST reads the store, so
    nothing leaves after `halt` returns; `copier halt` from another process is read back by the control task."""

    def __init__(self, store: Store, clock: Clock, metrics: Metrics, alerts: Alerts):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.alerts = alerts
        self.on = store.halted()[0]

    def is_on(self) -> bool:
        return self.on

    def halt(self, reason: str) -> None:
        self.store.halt(reason, self.clock.now())
        self.on = True
        log.error("halted: %s", reason)
        self.alerts.alert("halt", reason)
        self.metrics.gauge("halted", 1)

    def follow_store(self) -> None:
        halted, reason = self.store.halted()
        if halted != self.on:
            log.warning("halt state changed: halted=%s reason=%s", halted, reason)
            self.on = halted
            self.metrics.gauge("halted", int(halted))


class Intake:
    """The ingest queue: every feed hands its admitted fills here, the pipeline greenlet takes them."""

    def __init__(self, metrics: Metrics, stopping: Event, orders: Orders, maxsize: int = INGEST_QUEUE):
        self.queue: Queue = Queue(maxsize=maxsize)
        self.metrics = metrics
        self.stopping = stopping
        self.orders = orders
        self.peak = 0           # high-water mark since the last gauge

    def put(self, fill: SourceFill) -> None:
        if self.stopping.is_set():
            return
        try:
            self.queue.put_nowait(fill)
        except Full:
            # Never silently: the gap-filler re-reads it after the queue drains.
            self.metrics.incr("ingest_dropped")
            log.error("ingest queue full; dropped fill %s", fill.dedupe_key)
            return
        self.peak = max(self.peak, self.queue.qsize())
        # Hand-off: a feed greenlet with frames buffered would parse all of them before yielding, and the pipeline
        # and executors run only after it. Callbacks run in FIFO order, so yielding here runs the pipeline on this
        # fill first; if it made an order, yielding again lets an executor sign and post it before more frames.
        gevent.sleep(0)
        if not self.orders.empty():
            gevent.sleep(0)


class Runtime:
    def __init__(self, cfg: Config, *, clock: Clock, store: Store, metrics: Metrics, alerts: Alerts,
                 executor: Executor, pipeline: Pipeline, order_step: OrderStep, detection: Detection, intake: Intake,
                 orders: Orders, switch: HaltSwitch, feeds: list[Feed], periodic: list[Periodic],
                 warm: Callable[[], None], stopping: Event, redeemable_usd: Callable[[], float] = lambda: 0.0,
                 prepare: Callable[[], None] | None = None, census: Census | None = None):
        """warm: fetch the markets of the next windows and watch their books (also a Periodic task);
        redeemable_usd: resolved winnings not yet redeemed (the funds check counts them). prepare: what must be known
        before the first decision (the source's holdings, for the exit rule)."""
        self.cfg = cfg
        self.clock = clock
        self.store = store
        self.metrics = metrics
        self.alerts = alerts
        self.executor = executor
        self.pipeline = pipeline
        self.order_step = order_step
        self.detection = detection
        self.intake = intake
        self.orders = orders
        self.switch = switch
        self.feeds = feeds
        self.periodic = [*periodic, Periodic("reconcile", RECONCILE_S, self.reconcile),
                         Periodic("funds", FUNDS_S, self.check_funds, at_start=True),
                         Periodic("control", CONTROL_S, self.control, at_start=True)]
        self.warm = warm
        self.redeemable_usd = redeemable_usd
        self.prepare = prepare
        self.census = census or Census()
        self.stopping = stopping
        self.group = Group()
        self.exit_code = 0
        self._funding_short: set[str] = set()
        self._last_beat = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        now = self.clock.now()
        day = market_day_s(self.cfg)
        # A day of orders covers the daily cap's day (a UTC day live); read from the store's whole history, an
        # accelerated week's orders swelled every restart's heap.
        self.pipeline.exposure.restore(self.store.exposure_rows(now - day))
        self.warm()                     # the gate before a repost needs each market's state
        if self.prepare is not None:
            self.prepare()
        try:
            for report in self.executor.recover():
                self.order_step.settle(report)
        except OperationalError as exc:
            self.switch.halt(f"operational: {exc}")
        self.detection.seed(self.store.seen_keys(now - day), self.store.aliases_since(now - day))
        self._spawn(self._pipeline_loop)
        for _ in range(self.cfg.execution.executor_concurrency):
            self._spawn(self._executor_loop)
        for feed in self.feeds:
            self._spawn(feed.run, self.stopping)
        for task in self.periodic:
            self._spawn(self._every, task)
        log.info("copier started: dry_run=%s halted=%s", self.cfg.execution.dry_run, self.switch.on)
        for line in config_warnings(self.cfg):
            log.warning("config: %s", line)

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        g = self.group.spawn(fn, *args)
        g.link_exception(self._on_stage_death)

    def _on_stage_death(self, greenlet: gevent.Greenlet) -> None:
        log.critical("stage %s died: %r", getattr(greenlet, "_run", greenlet), greenlet.exception)
        self.alerts.alert("stage_death", f"stage died: {greenlet.exception!r}")
        self.exit_code = 1
        self.stop()

    def stop(self) -> None:
        self.stopping.set()

    def wait(self) -> int:
        self.stopping.wait()
        self._drain()
        return self.exit_code

    def _drain(self) -> None:
        """Stop intake; the gate sends nothing more, so queued orders are recorded as not sent and in-flight
        requests finish (bounded); fills not yet decided are recorded as refused for stopping; flush the store."""
        for feed in self.feeds:
            feed.close()
        deadline = self.clock.monotonic() + DRAIN_S
        while (self.orders.in_flight or not self.orders.empty()) and self.clock.monotonic() < deadline:
            self.clock.sleep(0.05)
        self.group.kill(block=True, timeout=2.0)
        try:
            undecided = self.pipeline.flush(self.clock.now())
            self.detection.step()           # the last sightings and fill events
        except Exception as exc:
            self._failed("shutdown", exc)
            undecided = -1
        self.executor.close()
        log.info("copier stopped: %d undecided fills recorded as not copied, %d orders still in flight", undecided,
                 self.orders.in_flight)
        self.metrics.flush()
        self.store.close()

    # ---- the error policy --------------------------------------------------------------------------------
    def _failed(self, where: str, exc: BaseException) -> None:
        """An unexpected exception in one message or one pass: logged, counted, alerted; the stage goes on."""
        log.error("%s failed: %s: %s", where, type(exc).__name__, exc, exc_info=(type(exc), exc, exc.__traceback__))
        self.metrics.incr(f"errors.{where}")
        self.alerts.alert("task_error", f"{where} failed: {type(exc).__name__}", where=where)

    def _every(self, task: Periodic) -> None:
        if task.at_start:
            self._pass(task)
        while not self.stopping.wait(task.interval_s):
            self._pass(task)

    def _pass(self, task: Periodic) -> None:
        t0 = self.clock.monotonic()
        try:
            task.run()
        except OperationalError as exc:
            self.switch.halt(f"operational: {exc}")
        except Exception as exc:
            self._failed(task.name, exc)
        self.metrics.timing(f"task.{task.name}_ms", (self.clock.monotonic() - t0) * 1000)

    # ---- pipeline ----------------------------------------------------------------------------------------
    def _pipeline_loop(self) -> None:
        while not self.stopping.is_set():
            now = self.clock.now()
            wake = self.pipeline.next_wakeup(now)
            timeout = 0.5 if wake is None else max(0.0, min(0.5, wake - now))
            try:
                fill = self.intake.queue.get(timeout=timeout)
            except Empty:
                fill = None
            try:
                if fill is not None:
                    self._take(fill)
                self.pipeline.tick(self.clock.now())
            except Exception as exc:
                self._failed("pipeline", exc)

    def _take(self, fill: SourceFill) -> None:
        picked_ns = self.clock.now_ns()
        self.metrics.timing("detection_lag_ms", fill.recv_ns / 1e6 - fill.match_ts * 1e3)
        self.metrics.timing("stage.queue_ms", (picked_ns - fill.recv_ns) / 1e6)
        self.pipeline.add(replace(fill, picked_ns=picked_ns), self.clock.now())

    # ---- execution ---------------------------------------------------------------------------------------
    def _executor_loop(self) -> None:
        while not self.stopping.is_set() or not self.orders.empty():
            try:
                intent, batch, market, queued_at = self.orders.queue.get(timeout=0.5)
            except Empty:
                continue
            try:
                self.order_step(intent, batch, market, queued_at)
            except OperationalError as exc:
                self.switch.halt(f"operational: {exc}")
            except Exception as exc:
                self._failed("executor", exc)
            finally:
                self.orders.in_flight -= 1

    # ---- periodic tasks ----------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Orders whose outcome is unresolved keep their exposure reserved until the venue answers a lookup."""
        for report in self.executor.reconcile():
            log.info("reconciled order %s: %s", report.order_hash, report.status, extra={"intent": report.intent_id})
            self.order_step.settle(report)

    def check_funds(self) -> None:
        """An account that cannot pay for a full-size order is alerted once when it becomes short, not per reject."""
        funds = self.executor.funds()
        if funds is None:
            return
        self.metrics.gauge("funds.balance_usd", funds.balance_usd)
        refusals = dict(funding_refusals(funds, self.cfg, redeemable_usd=self.redeemable_usd()))
        for reason, detail in refusals.items():
            log.warning("funding: %s", detail)
            if reason not in self._funding_short:
                self.alerts.alert(reason, detail)
        self._funding_short = set(refusals)

    def control(self) -> None:
        """Pick up `copier halt/resume` from the store for decisions, gauge the queues, write the heartbeat."""
        self.switch.follow_store()
        self.metrics.gauge("queue_depth.ingest", self.intake.queue.qsize())
        self.metrics.gauge("queue_depth.exec", self.orders.queue.qsize())
        self.metrics.gauge("queue_peak.ingest", self.intake.peak)
        self.metrics.gauge("queue_peak.exec", self.orders.peak)
        self.intake.peak = self.orders.peak = 0
        now = self.clock.now()
        if now - self._last_beat >= HEARTBEAT_S:
            self._last_beat = now
            self.store.set_heartbeat({"ts": now, "halted": self.switch.on, "inflight": self.orders.in_flight,
                                      "feeds": [f.state() for f in self.feeds]})


def build(cfg: Config, secrets: Secrets, clock: Clock | None = None) -> Runtime:
    """Pick the real adapters for this config and wire them. Dry run swaps the executor, nothing else."""
    from copier.alerts import init_alerts
    from copier.books import BookCache
    from copier.chain import ChainLogFeed, MempoolFeed
    from copier.dedupe import Deduper
    from copier.executor import ClobExecutor, PaperExecutor
    from copier.exposure import ExposureBook
    from copier.gate import TradingGate
    from copier.logs import setup_logging
    from copier.markets import MarketCatalog
    from copier.metrics import DEFER_S
    from copier.metrics import Metrics as StatsdMetrics
    from copier.position_watch import PositionsClient, PositionWatch
    from copier.positions import SourceHoldings
    from copier.redeem import build_redeemer
    from copier.timesync import ClockWatch
    from copier.upkeep import StoreUpkeep
    from copier.watcher import GapFiller, RtdsFeed

    clock = clock or LiveClock()
    setup_logging(cfg.telemetry.log_level, secrets, defer_s=DEFER_S)
    if not monkey.is_module_patched("socket"):
        log.warning("socket is not gevent-patched: network I/O will block the hub")
    metrics = StatsdMetrics.from_config(cfg.telemetry, secrets.values(), defer_s=DEFER_S)
    alerts = init_alerts(secrets.sentry_dsn, secrets=secrets)
    store = Store.open(cfg.store.path)
    stopping = Event()
    switch = HaltSwitch(store, clock, metrics, alerts)
    catalog = MarketCatalog(cfg, clock=clock, metrics=metrics, alerts=alerts)
    redeemer = build_redeemer(cfg, secrets, store=store, markets=catalog, clock=clock, metrics=metrics,
                              alerts=alerts)
    watch: PositionWatch | None = None

    def on_resolved(event: MarketResolved) -> None:
        catalog.on_resolved(event)
        if watch is not None:
            watch.on_resolved(event)
        if redeemer is not None:
            redeemer.on_resolved(event)

    books = BookCache(cfg, clock=clock, metrics=metrics, alerts=alerts, on_tick_size=catalog.on_tick_size_change,
                      on_resolved=on_resolved)
    logs_feed: ChainLogFeed | None = None
    detection = Detection(Deduper(clock=clock), cfg.feeds, clock=clock, metrics=metrics, alerts=alerts, store=store,
                          logs_live_since=lambda: logs_feed.live_since if logs_feed is not None else None,
                          horizon_s=replay_horizon_s(cfg), stream_horizon_s=stream_horizon_s(cfg))
    gate = TradingGate(cfg, store=store, catalog=catalog, clock=clock, stopping=stopping)
    executor_cls = PaperExecutor if cfg.execution.dry_run else ClobExecutor
    executor = executor_cls.from_config(cfg, secrets, store=store, clock=clock, metrics=metrics, books=books,
                                        gate=gate)
    exposure = ExposureBook(cfg.markets.window_seconds)
    # Our own wallet on the venue: the funder, or the signer for an EOA; on paper the venue holds nothing of ours.
    our_address = "" if not isinstance(executor, ClobExecutor) else (cfg.account.funder or executor.signer.address)
    watch = PositionWatch(cfg, store=store, books=books, clock=clock, metrics=metrics, alerts=alerts,
                          client=PositionsClient(cfg.endpoints.data_api, metrics=metrics, alerts=alerts, clock=clock),
                          our_address=our_address)
    source = SourceHoldings()
    orders = Orders(clock)
    intake = Intake(metrics, stopping, orders)
    breaker = CircuitBreaker(cfg.risk)

    def judge(batch: Batch, report: ExecutionReport) -> None:
        """The circuit breaker's verdict on each order that went on the wire."""
        reason = breaker.record_order(not report.status.failed, our_delay_ms(batch, report.submit_ns), clock.now())
        if reason and not switch.on:
            switch.halt(f"circuit breaker: {reason}")

    order_step = OrderStep(cfg, executor=executor, store=store, exposure=exposure, markets=catalog, books=books,
                           metrics=metrics, alerts=alerts, clock=clock, on_report=judge)
    clock_watch = ClockWatch(cfg.telemetry, clock=clock, metrics=metrics, alerts=alerts)
    pipeline = Pipeline(cfg, exposure=exposure, markets=catalog, books=books, store=store, metrics=metrics,
                        clock=clock, dispatch=orders.put, detection=detection, halted=switch.is_on,
                        clock_block=lambda: clock_watch.block_reason(clock.monotonic()), source=source)

    fill_feeds: list[Feed] = list(RtdsFeed.for_config(cfg, detection=detection, on_fill=intake.put, clock=clock,
                                                      metrics=metrics, alerts=alerts))
    chain_args: dict[str, Any] = dict(url=polygon_ws(cfg, secrets), detection=detection, on_fill=intake.put,
                                      catalog=catalog, clock=clock, metrics=metrics, alerts=alerts)
    if cfg.feeds.use_chain_logs:
        logs_feed = ChainLogFeed(cfg, **chain_args)
        fill_feeds.append(logs_feed)
    if cfg.feeds.use_mempool:
        fill_feeds.append(MempoolFeed(cfg, **chain_args))
    feeds: list[Feed] = [*fill_feeds, books]
    if cfg.feeds.gap_fill:
        feeds.append(GapFiller(cfg, detection=detection, on_fill=intake.put, clock=clock, metrics=metrics,
                               cursor_getter=lambda: store.cursor("data_api"),
                               cursor_setter=lambda v: store.set_cursor("data_api", v),
                               reconnects=lambda: sum(f.reconnects for f in fill_feeds), alerts=alerts))

    def warm() -> None:
        catalog.refresh()
        books.watch([*catalog.assets(), *watch.held_assets()])

    upkeep = StoreUpkeep(store, cfg.store, clock=clock, metrics=metrics, pause=lambda: gevent.sleep(0))
    census = Census()
    periodic = [Periodic("markets", cfg.markets.refresh_s, warm),
                Periodic("detection", DETECTION_S, detection.step),
                Periodic("keep_warm", KEEP_WARM_S, executor.keep_warm),
                Periodic("checkpoint", CHECKPOINT_S, store.checkpoint),
                # At start too: a copier restarted more often than the interval would otherwise never prune,
                # vacuum or truncate its WAL.
                Periodic("store_upkeep", cfg.store.maintenance_interval_s, upkeep.run, at_start=True),
                Periodic("clock", cfg.telemetry.ntp_check_interval_s, clock_watch.check, at_start=True),
                Periodic("pnl_snapshot", cfg.positions.snapshot_interval_s, watch.snapshot, at_start=True),
                Periodic("positions_reconcile", cfg.positions.reconcile_interval_s, watch.reconcile, at_start=True),
                Periodic("resolutions", cfg.positions.resolution_check_s, watch.check_resolutions, at_start=True),
                Periodic("process", cfg.telemetry.process_interval_s, lambda: census.gauge(metrics))]
    if redeemer is not None:
        periodic.append(Periodic("redeem", REDEEM_TICK_S, redeemer.tick))
    return Runtime(cfg, clock=clock, store=store, metrics=metrics, alerts=alerts, executor=executor,
                   pipeline=pipeline, order_step=order_step, detection=detection, intake=intake, orders=orders,
                   switch=switch, feeds=feeds, periodic=periodic, warm=warm, stopping=stopping,
                   redeemable_usd=redeemer.redeemable_usd if redeemer is not None else lambda: 0.0,
                   prepare=lambda: watch.seed_source(source, cfg.copy.source_wallet), census=census)


def run(cfg: Config, secrets: Secrets) -> int:
    rt = build(cfg, secrets)
    signals = {"count": 0}

    def on_term(*_: object) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            log.warning("second signal: exiting now")
            sys.exit(1)
        log.info("SIGTERM: draining")
        rt.stop()

    gevent.signal_handler(signal.SIGTERM, on_term)
    gevent.signal_handler(signal.SIGINT, on_term)
    gc.callbacks.append(_GcTimer(rt.metrics, rt.clock))
    rt.start()
    # Everything loaded and warmed so far lives as long as the process: keep it out of every later full collection
    # (one scanned ~80k objects in ~20 ms and stalled the hub 25-37 ms under load; now only what came after).
    gc.collect()
    rt.census.before_freeze()
    gc.freeze()
    return rt.wait()


class _GcTimer:
    """A collection stops every greenlet: its duration per generation goes to StatsD (gc.gen<N>_ms)."""

    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self.metrics = metrics
        self.clock = clock
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = self.clock.monotonic()
        else:
            self.metrics.timing(f"gc.gen{info['generation']}_ms", (self.clock.monotonic() - self.started) * 1000)
