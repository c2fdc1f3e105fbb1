"""`make bench-week`: a week of the copier's store, written through its own Store API, and the cost of reading it.

What it writes, at simulated time (the week ending now, so `copier report --since 7d` covers it): the PRD's source
pattern as polysim's `prd` preset plays it (bursts per 15-minute window over the four assets, 3-12 fills 40-400 ms
apart, 5-30 shares, a quarter of the bursts on both outcomes, one fill in ten a SELL, some bursts in the last tenth
of the window); every fill sighted on the deployed feeds (both RTDS sockets, `trades` and `orders_matched`, then the
Data API gap-fill); the copier's own coalescer, decision (sizing, pricing on a book, every cap, the near-expiry
cutoff) and exposure book deciding them; signed orders with bodies of the real size, their submit instants and the
venue's answer (matched, partly filled, killed), drawn. Tx aliases and reorg events come at a low rate. The store's
upkeep runs every `store.maintenance_interval_s` of simulated time, as it does under the runtime (unless
--no-retention). Not modelled: remainder orders, chaos, restarts.

Then it times `copier report --since 7d` as an operator runs it (a fresh process, the median of --runs) and prints
the growth per simulated day: rows, file and WAL size. It exits 1 if the report took longer than --max-report-s.
`--reuse` times the store an earlier run wrote instead of writing one (to compare installs or code on one store).
"""
from __future__ import annotations

import copier  # noqa: F401  isort: skip  (patches the standard library with gevent before anything else runs)

import argparse
import hashlib
import heapq
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from copier.clock import FakeClock
from copier.coalescer import Coalescer
from copier.config import Config, parse_config
from copier.decision import decide
from copier.exposure import DAY_S, ExposureBook
from copier.store import Store
from copier.types import Batch, BookTop, Hold, MarketMeta, Side, Skip, SourceFill
from copier.upkeep import StoreUpkeep

WINDOW_S = 900
ASSETS = ("btc", "eth", "sol", "xrp")
SIGHTING_FEEDS = (("rtds.trades", "rtds-a:trades"), ("rtds.trades", "rtds-b:trades"),
                  ("rtds.orders_matched", "rtds-a:orders_matched"), ("rtds.orders_matched", "rtds-b:orders_matched"))
ORDER_OUTCOMES = (("MATCHED", 0.96), ("PARTIAL", 0.025), ("KILLED", 0.015))
ALIAS_P = 0.003                 # a source transaction replaced by a gas bump (seen when the mempool feed is on)
REORG_P = 0.001                 # a fill whose log a reorg removed and re-included
THIN_BOOK_P = 0.015             # the levels the source took are gone: nothing inside the slippage budget
# The week's copier: the defaults, with the caps scaled to the source's volume (it buys ~$37k a day at the PRD's
# rate) so that they shape the copy as they would in production instead of refusing most of the day.
WEEK_CONFIG = {"sizing": {"max_notional_per_market_usd": 300.0, "max_total_notional_per_15m_window_usd": 1000.0},
               "risk": {"max_daily_notional_usd": 50_000.0}}


@dataclass(frozen=True)
class Pattern:
    bursts_per_window: float = 6.0      # polysim's prd preset: over all four assets
    burst_fills: tuple[int, int] = (3, 12)
    burst_gap_ms: tuple[float, float] = (40.0, 400.0)
    size: tuple[float, float] = (5.0, 30.0)
    both_outcomes_p: float = 0.25
    sell_p: float = 0.1
    near_expiry_p: float = 0.15


def _hex(rng: random.Random, n: int) -> str:
    return "0x" + rng.getrandbits(n * 4).to_bytes(n // 2, "big").hex()


def _order_body(rng: random.Random, token: str, side: Side, size: float, cap: float) -> str:
    """As large as the signed order the copier persists before its POST."""
    return json.dumps({"order": {"salt": rng.getrandbits(53), "maker": _hex(rng, 40), "signer": _hex(rng, 40),
                                 "taker": "0x" + "0" * 40, "tokenId": token, "makerAmount": str(int(size * cap * 1e6)),
                                 "takerAmount": str(int(size * 1e6)), "expiration": "0", "nonce": "0",
                                 "feeRateBps": "0", "side": side.value, "signatureType": 0,
                                 "signature": _hex(rng, 130)},
                       "owner": "00000000-0000-0000-0000-000000000000", "orderType": "FAK"}, separators=(",", ":"))


class WeekWriter:
    """The copier's own pure stages (the coalescer, the decision with its caps, the exposure book) on the generated
    fills; only the venue's answer (matched, partly filled, killed) and the instants around it are drawn."""

    def __init__(self, store: Store, cfg: Config, pattern: Pattern, rng: random.Random) -> None:
        self.store = store
        self.cfg = cfg
        self.p = pattern
        self.rng = rng
        self.coalescer = Coalescer(cfg.copy)
        self.exposure = ExposureBook(cfg.markets.window_seconds)
        self.markets: dict[str, MarketMeta] = {}
        self.held: defaultdict[str, float] = defaultdict(float)     # the source's shares per token
        self.holds = 0

    def market(self, asset: str, at: float) -> MarketMeta:
        start = math.floor(at / WINDOW_S) * WINDOW_S
        seed = hashlib.sha256(f"{asset}:{start}".encode()).hexdigest()
        return MarketMeta(condition_id="0x" + seed, token_ids=(str(int(seed[:30], 16)), str(int(seed[30:60], 16))),
                          outcomes=("Up", "Down"), tick_size=0.01, min_size=5.0, neg_risk=False,
                          end_ts=start + WINDOW_S, start_ts=start, slug=f"{asset}-updown-15m-{int(start)}")

    def burst(self, at: float) -> list[SourceFill]:
        """One burst of the source starting at `at`: its fills (in arrival order), sighted on every feed."""
        p, rng = self.p, self.rng
        m = self.market(rng.choice(ASSETS), at)
        self.markets[m.condition_id] = m
        both = rng.random() < p.both_outcomes_p
        first = rng.randrange(2)
        price_up = round(rng.uniform(0.08, 0.92), 2)
        lag = rng.lognormvariate(math.log(0.6), 0.4)        # source match -> RTDS arrival, shared by the burst
        fills = []
        t = at
        for k in range(rng.randint(*p.burst_fills)):
            idx = (first + k) % 2 if both else first
            size = round(rng.uniform(*p.size), 2)
            token = m.token_ids[idx]
            # as polysim's source: a SELL only of shares it holds
            side = Side.SELL if rng.random() < p.sell_p and self.held[token] >= size else Side.BUY
            self.held[token] += size if side is Side.BUY else -size
            fill = SourceFill(tx_hash=_hex(rng, 64), asset=m.token_ids[idx], condition_id=m.condition_id,
                              outcome=m.outcomes[idx], outcome_index=idx, side=side,
                              price=price_up if idx == 0 else round(1 - price_up, 2),
                              size=size, match_ts=float(int(t)),
                              recv_ns=int((t + lag + rng.uniform(0, 0.03)) * 1e9), feed="rtds.trades",
                              wallet=self.cfg.copy.source_wallet, slug=m.slug)
            fills.append(fill)
            self.sightings(fill)
            t += rng.uniform(*p.burst_gap_ms) / 1000
        return sorted(fills, key=lambda f: f.recv_ns)

    def arrive(self, fill: SourceFill) -> None:
        """The pipeline's step: the coalescer on this fill at its arrival, then each batch it released."""
        for batch in self.coalescer.add(fill, fill.recv_ns / 1e9):
            self.decide(batch, batch.released_at + self.rng.uniform(0.0002, 0.001))

    def flush_due(self, now: float) -> None:
        for batch in self.coalescer.due(now):
            self.decide(batch, batch.released_at + self.rng.uniform(0.0002, 0.001))

    def sightings(self, fill: SourceFill) -> None:
        rng = self.rng
        rows = [{"dedupe_key": fill.dedupe_key, "feed": feed, "stream": stream,
                 "recv_ns": fill.recv_ns + (0 if n == 0 else int(rng.uniform(0.2, 40) * 1e6)),
                 "match_ts": fill.match_ts, "first": n == 0} for n, (feed, stream) in enumerate(SIGHTING_FEEDS)]
        rows.append({"dedupe_key": fill.dedupe_key, "feed": "data_api", "stream": "gap-fill",
                     "recv_ns": fill.recv_ns + int(rng.uniform(2, 15) * 1e9), "match_ts": fill.match_ts,
                     "first": False})
        self.store.record_sightings(rows)
        if rng.random() < ALIAS_P:
            self.store.record_aliases([{"tx_hash": _hex(rng, 64), "original": fill.tx_hash, "at_ns": fill.recv_ns}])
        if rng.random() < REORG_P:
            at = fill.recv_ns + int(3e9)
            self.store.record_fill_events([
                {"dedupe_key": fill.dedupe_key, "kind": kind, "reason": "", "tx_hash": fill.tx_hash,
                 "at_ns": at + n * int(2e9), "copied": False, "intent_id": ""}
                for n, kind in enumerate(("removed", "reincluded"))])

    def book(self, asset: str, price: float, at: float) -> BookTop:
        """Levels a tick apart from the source's price; now and then the side it takes is gone past the budget."""
        rng = self.rng
        gap = 0.05 if rng.random() < THIN_BOOK_P else 0.0
        bids = tuple((round(price - gap - 0.01 * k, 2), round(rng.uniform(50, 800), 2)) for k in range(10))
        asks = tuple((round(price + gap + 0.01 * k, 2), round(rng.uniform(50, 800), 2)) for k in range(10))
        return BookTop(asset, tuple(b for b in bids if b[0] > 0), tuple(a for a in asks if a[0] < 1), ts=at,
                       received_at=at)

    def decide(self, batch: Batch, at: float) -> None:
        rng, f0 = self.rng, batch.fills[0]
        m = self.markets[batch.condition_id]
        decision = decide(self.exposure, batch, m, at, self.cfg, book=self.book(f0.asset, f0.price, at))
        now_ns = int(at * 1e9)
        if isinstance(decision, Hold):
            self.holds += 1         # orders settle at once here: a reducing batch has nothing to wait for
            return
        self.store.record_decision(list(batch.fills), decision, now_ns)
        if isinstance(decision, Skip):
            return
        self.exposure.reserve(decision)
        signed_ns = now_ns + int(rng.uniform(0.4, 1.5) * 1e6)
        self.store.record_signed(decision.intent_id, "0x" + hashlib.sha256(decision.intent_id.encode()).hexdigest(),
                                 _order_body(rng, f0.asset, decision.side, decision.size, decision.price_cap),
                                 signed_ns)
        submit_ns = signed_ns + int(rng.uniform(0.3, 2.0) * 1e6)
        outcome = rng.choices([o for o, _ in ORDER_OUTCOMES], [w for _, w in ORDER_OUTCOMES])[0]
        size = decision.size
        filled = {"MATCHED": size, "PARTIAL": round(size * rng.uniform(0.3, 0.9), 2), "KILLED": 0.0}[outcome]
        src, cap = decision.source_price, decision.price_cap
        drift = rng.uniform(0.0, abs(cap - src))               # a taker pays between the source's price and its cap
        avg = round(src + drift if decision.side is Side.BUY else src - drift, 4)
        ack_ns = submit_ns + int(rng.uniform(20, 60) * 1e6)
        self.store.update_order(decision.intent_id, ack_ns, attempts=1,
                                status="KILLED" if outcome == "KILLED" else "MATCHED", submit_ns=submit_ns,
                                ack_ns=ack_ns, filled_size=filled, avg_price=avg if filled else 0.0)
        self.exposure.settle(decision.intent_id, filled, avg if filled else 0.0)


@dataclass(frozen=True)
class DayRow:
    day: int
    fills: int
    intents: int
    orders: int
    sightings: int
    aliases: int
    db_bytes: int


def _count(store: Store, table: str) -> int:
    return int(store.db.execute_sql(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def write_week(path: Path, *, days: float, pattern: Pattern, scale: float, seed: int, end: float,
               retention: bool, cfg: Config) -> list[DayRow]:
    """The store at `path` (replaced), and its size at the end of each simulated day."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store.open(str(path))
    rng = random.Random(seed)
    writer = WeekWriter(store, cfg, pattern, rng)
    clock = FakeClock(end - days * DAY_S)
    upkeep = StoreUpkeep(store, cfg.store, clock=clock, metrics=_NoMetrics(), pause=lambda: None)
    starts = burst_starts(rng, pattern, scale * pattern.bursts_per_window / WINDOW_S, clock.now(), end)
    start = clock.now()
    next_upkeep, next_checkpoint, day, rows = start, start, 1, []
    arrivals: list[tuple[int, int, SourceFill]] = []     # (arrival ns, sequence, fill): the feeds' order
    for t in [*starts, end]:
        while arrivals and arrivals[0][0] < t * 1e9:          # a later burst's fills arrive after it starts
            writer.arrive(heapq.heappop(arrivals)[2])
        writer.flush_due(t)
        while t >= start + day * DAY_S or (t >= end and day <= math.ceil(days)):
            clock.advance(min(end, start + day * DAY_S) - clock.now())
            store.truncate_wal()
            rows.append(DayRow(day, _count(store, "fills"), _count(store, "intents"), _count(store, "orders"),
                               _count(store, "sightings"), _count(store, "tx_aliases"), store.size_bytes()))
            day += 1
        if t >= end:
            break
        clock.advance(t - clock.now())
        if t >= next_checkpoint:
            store.checkpoint()
            next_checkpoint = t + 30.0
        if retention and t >= next_upkeep:
            upkeep.run()
            next_upkeep = t + cfg.store.maintenance_interval_s
        for fill in writer.burst(t):
            heapq.heappush(arrivals, (fill.recv_ns, len(arrivals) + int(t * 1e3), fill))
    for _, _, fill in sorted(arrivals):
        writer.arrive(fill)
    writer.flush_due(end + 60)
    store.close()
    return rows


def burst_starts(rng: random.Random, pattern: Pattern, rate: float, start: float, end: float) -> list[float]:
    """Poisson bursts at `rate` per second, a share of them moved into the last tenth of their window (as polysim's
    source does), in time order."""
    out, t = [], start
    while (t := t + rng.expovariate(rate)) < end:
        left = WINDOW_S - t % WINDOW_S
        if rng.random() < pattern.near_expiry_p and left > 0.1 * WINDOW_S:
            t_burst = t + left - rng.uniform(0.02, 0.1) * WINDOW_S
        else:
            t_burst = t
        if t_burst < end - 10:
            out.append(t_burst)
    return sorted(out)


class _NoMetrics:
    def incr(self, name: str, n: int = 1) -> None:
        pass

    def timing(self, name: str, ms: float) -> None:
        pass

    def gauge(self, name: str, value: float) -> None:
        pass

    def flush(self) -> None:
        pass


def time_report(exe: Path, config: Path, runs: int, since: str = "7d") -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each `copier report --since 7d` in a fresh process: the machine is
    shared, so the CPU time says what the wall time would be on a quiet one."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run([str(exe), "report", "--config", str(config), "--since", since], capture_output=True,
                             text=True, timeout=600, check=False)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if out.returncode not in (0, 1):
            raise SystemExit(f"copier report failed ({out.returncode}): {out.stderr.strip()[-400:]}")
    return walls, cpus


def write_html(path: Path, store_path: Path, cfg: Config, rows: list[DayRow], *, end: float, days: float) -> None:
    """The report's page of the week, with its growth per simulated day beside the figures."""
    from copier.pnl_report import StorePnl
    from copier.report import build_report
    from copier.report_html import Growth, html_data, render_html

    store = Store.open(str(store_path))
    try:
        since = end - days * DAY_S
        start = since
        growth = Growth(at=[min(end, start + r.day * DAY_S) for r in rows],
                        curves={"store file": [r.db_bytes / 2 ** 20 for r in rows],
                                "fills (kept: the record)": [float(r.fills) for r in rows],
                                "sightings (pruned past the retention)": [float(r.sightings) for r in rows]},
                        unit={"store file": "MiB"})
        record = store.record_since(since)
        page = render_html(build_report(store, cfg, record=record),
                           html_data(store, since, pnl=StorePnl(store, record), record=record), growth=growth,
                           title=f"copier report: a generated week ({store_path.name})")
    finally:
        store.close()
    path.write_text(page)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polylab.weekstore", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="var/weekstore/copier.sqlite", help="the store to write (default %(default)s)")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--rate", type=float, default=Pattern.bursts_per_window,
                    help="source bursts per 15-minute window over the four assets (default %(default)s, the PRD's)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the rate (10 for the 10x store)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-retention", action="store_true", help="never run the store's upkeep (to compare sizes)")
    ap.add_argument("--runs", type=int, default=5, help="timed `copier report` runs (0: none)")
    ap.add_argument("--copier", default=str(Path(sys.executable).with_name("copier")),
                    help="the copier executable to time (e.g. of a clean `pip install ./worker`, as on the VPS)")
    ap.add_argument("--max-report-s", type=float, default=2.0)
    ap.add_argument("--html", default=None, help="also write `copier report --html` of the week, with its growth")
    ap.add_argument("--reuse", action="store_true",
                    help="time the report on the store an earlier run wrote at --out instead of writing one (its "
                         "week ends when it was written: --since 7d covers a little less of it as time passes)")
    args = ap.parse_args(argv)
    if not (0 < args.days <= 60 and args.rate > 0 and 0 < args.scale <= 100 and args.runs >= 0):
        print("weekstore: --days in (0, 60], --rate > 0, --scale in (0, 100], --runs >= 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.reuse and (args.html or not out.is_file()):
        print(f"weekstore: --reuse times the store an earlier run wrote ({out}: "
              f"{'exists' if out.is_file() else 'missing'}) and writes no page (its growth is the run's)",
              file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.with_suffix(".yaml")
    config.write_text(yaml.safe_dump({**WEEK_CONFIG, "store": {"path": str(out.resolve())}}))
    cfg = parse_config(yaml.safe_load(config.read_text()))
    if args.reuse:
        return _timed(args, config)
    t0 = time.perf_counter()
    rows = write_week(out, days=args.days, pattern=Pattern(bursts_per_window=args.rate), scale=args.scale,
                      seed=args.seed, end=time.time(), retention=not args.no_retention, cfg=cfg)
    written = time.perf_counter() - t0
    print(f"store {out}: {args.days:g} days at {args.rate * args.scale:g} bursts per window "
          f"(x{args.scale:g}), retention {'off' if args.no_retention else 'on'}, written in {written:.1f} s")
    print(f"{'day':>3} {'fills':>8} {'intents':>8} {'orders':>8} {'sightings':>10} {'aliases':>8} {'MiB':>8}")
    for r in rows:
        print(f"{r.day:>3} {r.fills:>8} {r.intents:>8} {r.orders:>8} {r.sightings:>10} {r.aliases:>8} "
              f"{r.db_bytes / 2 ** 20:>8.1f}")
    if args.html:
        write_html(Path(args.html), out, cfg, rows, end=time.time(), days=args.days)
        print(f"html report: {args.html}")
    return _timed(args, config)


def _timed(args: argparse.Namespace, config: Path) -> int:
    if not args.runs:
        return 0
    walls, cpus = time_report(Path(args.copier), config, args.runs)
    median = statistics.median(walls)
    verdict = "PASS" if median < args.max_report_s else "FAIL"
    print(f"copier report --since 7d ({args.copier}): median {median:.2f} s wall over {args.runs} runs "
          f"({', '.join(f'{t:.2f}' for t in walls)}), CPU median {statistics.median(cpus):.2f} s; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; limit {args.max_report_s:g} s: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
