"""`make soak-week`: a week of market time in under an hour, and how the copier's cost grows with it.

The simulator runs at accelerated market time (default 225x: a 15-minute window lasts 4 s, a week 45 minutes) on
all four assets, each market's fair price fixed as in the compressed soak (a random walk 225 times faster than the
copier's wall-clock reaction would move the book under every order). The source wallet trades in the PRD's pattern
from the simulator's own random source: bursts of 3-12 small BUYs 40-400 ms apart, a quarter of them on both
outcomes, one fill in ten a SELL, some bursts in the last tenth of a window; `--bursts-per-window` (6 by default)
and `--ten-x` set the rate. Every window resolves and the copier redeems its winners. The copier runs LIVE under a
real supervisord, with the compressed soak's chaos spread over the week (kill -9, stop/start, RTDS drops and stalls,
5xx/429, lost answers, malformed input, a halt).

Every simulated hour the run samples the copier: resident memory, open fds, live greenlets (its own gauge), store
and WAL size, log size, StatsD packets/s and CPU per recorded fill; after the run, copy delay (leading orders and
every copied fill) and copy rate per simulated hour come from the store. It ends with the compressed soak's two
verdicts (the store's and the venue's ground truth, money and redemptions), >= 98% copied, and the growth verdicts:
resident memory of the last simulated day within 10% of the first, leading-delay p99 of the last day no more than
20% above the first, and past the retention horizon the store linear in the fills recorded and the sightings flat;
then times `copier report --since 7d` and writes the HTML report with the growth curves (`week.html`) and the
samples (`samples.jsonl`, `hourly.json`) to the work directory.

The copier's day of markets follows its window (markets.window_seconds = 900 / speed): the dedupe seed a restart
loads, the source holdings' look-back and the catalog's memory span a simulated day, and the store keeps what only
the dedupe needs two simulated days, as live. The daily notional cap counts UTC days on the wall clock; the run sets
it out of the way.
"""
from __future__ import annotations

import copier  # noqa: F401  isort: skip  (patches the standard library with gevent before any thread starts)

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from eth_account import Account

from copier.config import parse_config
from copier.report import NO_LIQUIDITY, percentile
from copier.store import Store
from polylab import procguard
from polylab.harness import (
    SIM_PRIVATE_KEY,
    SimProcess,
    copier_config,
    eventually,
    run_copier,
    write_config,
    write_env_file,
)
from polylab.soak import (
    Chaos,
    SentrySink,
    StatsdSink,
    Supervisor,
    counter_total,
    derive_creds,
    end_state,
    grep_secrets,
    ground_truth_verdict,
    money_verdict,
    settle,
    verdict,
)

WORKDIR = Path("var/soak-week")
DAY_S = 86_400.0
HOUR_S = 3_600.0
ASSETS = ["btc", "eth", "sol", "xrp"]
DEFAULT_SPEED = 225.0
PRD_BURSTS_PER_WINDOW = 6.0
WALLET_PUSD = 50_000.0          # the copier's starting pUSD: a week of fees and losses at these caps stays covered
WALLET_POL = 100.0              # gas: a week's ~900 redemptions took 9.9 POL, the simulator's default 10 ran dry
COPIED_TARGET_PCT = 98.0        # filled / intended notional, by the venue's ground truth
RSS_TOLERANCE = 0.10             # last simulated day against the first
LEADING_P99_TOLERANCE = 0.20
MIN_LINEAR_R2 = 0.98             # store bytes against fills recorded, hourly, past the retention horizon
RETENTION_DAYS = 2               # store.dedupe_retention_s, in simulated days
SIGHTINGS_FLAT = 1.15            # the sightings kept past the horizon stay within this of their count at it
# The venue's own times (the simulator's defaults, in seconds: feed and indexing delays, blocks, the taker delay, the
# makers' re-quotes) are scaled by COMPRESSED_SPEED / speed, so that the copier acts at the same instant in market
# time, and in the makers' re-quote cycle, as in the compressed soak, whose copy rate is the reference. The copier's
# own timings (coalescing, holds, timeouts) and the source's bursts stay wall-clock: they are what the run measures.
COMPRESSED_SPEED = 30.0
TAKER_DELAY_MS = 50.0
RELAYER_DELAY_S = 1.0
MAKER_DELAYS_S = {"requote_min_s": 0.3, "requote_mean_s": 2.2}
VENUE_DELAYS_S = {"rtds_delay_s": 2.1, "rtds_orders_matched_lead_s": 0.2, "market_ws_delay_s": 0.09,
                  "user_ws_delay_s": 0.05, "data_api_user_delay_s": 5.4, "data_api_market_delay_s": 9.0,
                  "data_api_refresh_s": 4.0, "mined_after_s": 2.2, "confirmed_after_s": 8.0}
CHAIN_DELAYS_S = {"--mempool-delay": 0.65, "--logs-delay": 2.2, "--block-time": 2.0}
# Chaos per simulated day (the compressed soak's kinds), and the faults done once a week.
CHAOS_PER_DAY = {"kill9": 3, "kill9_redeem": 1, "rtds_drop": 4, "rtds_stall": 3, "clob_5xx": 2, "clob_429": 2,
                 "post_timeout_after_accept": 1, "malformed": 2, "clob_garbage": 1}
CHAOS_ONCE = {"engine_restart": 1, "halt_resume": 1, "stop_start": 1}


@dataclass(frozen=True)
class Sample:
    sim_hour: float
    wall_s: float
    pid: int
    rss_bytes: int
    fds: int
    greenlets: float | None       # the copier's own process.greenlets gauge, the last one received
    store_bytes: int              # the database's logical size (page count x page size)
    sightings: int                # rows only the dedupe and the detection report need (pruned past retention)
    db_bytes: int                 # the files: the database and its WAL
    wal_bytes: int
    log_bytes: int
    statsd_pps: float
    fills: int                    # source fills recorded in the store so far
    cpu_ms_per_fill: float | None


class GaugeSink(StatsdSink):
    """The soak's StatsD sink, also keeping the last value of every gauge it received."""

    def __init__(self, path: Path):
        self.gauges: dict[str, float] = {}
        super().__init__(path)

    def _loop(self):
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except OSError:
                return
            self.packets += 1
            self.out.write(data + b"\n")
            for line in data.split(b"\n"):
                name, _, rest = line.partition(b":")
                value, _, kind = rest.partition(b"|")
                if kind == b"g":
                    try:
                        self.gauges[name.decode()] = float(value)
                    except ValueError:
                        pass


def week_plan(days: float) -> dict[str, int]:
    plan = {kind: max(1, round(n * days)) for kind, n in CHAOS_PER_DAY.items()}
    return {**plan, **CHAOS_ONCE}


def _proc(pid: int) -> tuple[int, int, int] | None:
    """(resident bytes, open fds, CPU ticks) of a running process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])            # utime + stime
        return rss, len(os.listdir(f"/proc/{pid}/fd")), ticks
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Sampler:
    """Every simulated hour, what the copier costs: a thread of the soak, reading /proc, the files and the sink."""

    def __init__(self, workdir: Path, sup: Supervisor, statsd: GaugeSink, speed: float, start: float):
        self.workdir, self.sup, self.statsd, self.speed, self.start = workdir, sup, statsd, speed, start
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self._pid = 0
        self._last = (start, 0, 0, 0)          # wall, packets, ticks, fills
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        self.out = open(workdir / "samples.jsonl", "a")

    def run(self) -> None:
        period = HOUR_S / self.speed
        n = 1
        while not self.stop.wait(max(0.0, self.start + n * period - time.time())):
            try:
                self.take(n)
            except Exception as exc:                # a sample lost is a gap in a curve, not the end of the run
                print(f"sampler: {exc!r}", file=sys.stderr)
            n += 1

    def _store(self) -> tuple[int, int, int]:
        """(source fills recorded, the database's logical size: its pages, wherever they are, file or WAL; the
        sightings kept, what only the dedupe needs)."""
        try:
            con = sqlite3.connect(f"file:{self.workdir / 'copier.sqlite'}?mode=ro", uri=True, timeout=5)
            try:
                fills = int(con.execute("select coalesce(max(id), 0) from fills").fetchone()[0])
                pages = int(con.execute("pragma page_count").fetchone()[0])
                sightings = int(con.execute("select count(*) from sightings").fetchone()[0])
                return fills, pages * int(con.execute("pragma page_size").fetchone()[0]), sightings
            finally:
                con.close()
        except sqlite3.OperationalError:
            last = self.samples[-1] if self.samples else None
            return self._last[3], last.store_bytes if last else 0, last.sightings if last else 0

    def take(self, n: int) -> None:
        proc = _proc(self._pid) if self._pid else None
        if proc is None:
            self._pid = self.sup.pid()
            proc = _proc(self._pid) if self._pid else None
            restarted = True
        else:
            restarted = False
        now, packets, (fills, store_bytes, sightings) = time.time(), self.statsd.packets, self._store()
        last_wall, last_packets, last_ticks, last_fills = self._last
        rss, fds, ticks = proc if proc is not None else (0, 0, 0)
        cpu = ticks if restarted else ticks - last_ticks
        new_fills = fills - last_fills
        self._last = (now, packets, ticks, fills)
        s = Sample(sim_hour=n, wall_s=round(now - self.start, 2), pid=self._pid, rss_bytes=rss, fds=fds,
                   greenlets=self.statsd.gauges.get("copier.process.greenlets"),
                   store_bytes=store_bytes, sightings=sightings, db_bytes=_size(self.workdir / "copier.sqlite"),
                   wal_bytes=_size(self.workdir / "copier.sqlite-wal"),
                   log_bytes=sum(_size(p) for p in self.workdir.glob("copier.log*")),
                   statsd_pps=round((packets - last_packets) / max(1e-3, now - last_wall), 1), fills=fills,
                   cpu_ms_per_fill=round(cpu * self._tick_s * 1000 / new_fills, 2) if new_fills > 0 and proc
                   else None)
        self.samples.append(s)
        self.out.write(json.dumps(asdict(s)) + "\n")
        self.out.flush()


# ---- after the run: per simulated hour from the store --------------------------------------------------------
def hourly(db_path: Path, start: float, speed: float) -> dict[int, dict]:
    """Copy delay (leading orders; every copied fill) and copy rate per simulated hour, from the store's record."""
    def hour(ts: float) -> int:
        return int((ts - start) * speed // HOUR_S) + 1

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    first_order: dict[str, int] = {}
    filled: dict[str, float] = defaultdict(float)
    for iid, submit_ns, size in db.execute("select intent_id, submit_ns, filled_size from orders order by id"):
        if submit_ns:
            first_order.setdefault(iid, submit_ns)
        filled[iid] += size
    out: dict[int, dict] = defaultdict(lambda: {"leading_ms": [], "fill_ms": [], "intended": 0.0, "filled": 0.0})
    children: dict[str, list[str]] = defaultdict(list)
    intents = db.execute("select intent_id, kind, decision, reason, size, source_price, first_recv_ns, decided_at, "
                         "parent_id from intents").fetchall()
    for iid, *_rest, parent in intents:
        if parent:
            children[parent].append(iid)
    for iid, kind, decision, reason, size, price, first_ns, decided_at, parent in intents:
        if parent:
            continue
        h = out[hour(decided_at)]
        if kind == "leading" and iid in first_order:
            h["leading_ms"].append((first_order[iid] - first_ns) / 1e6)
        if decision == "order" or reason == NO_LIQUIDITY:
            got = filled[iid] + sum(filled[c] for c in children[iid])
            h["intended"] += size * price
            h["filled"] += min(got, size) * price
    for recv_ns, iid in db.execute("select recv_ns, intent_id from fills"):
        if iid in first_order:
            out[hour(recv_ns / 1e9)]["fill_ms"].append((first_order[iid] - recv_ns) / 1e6)
    db.close()
    return out


def _day_of(sim_hour: float) -> int:
    return int((sim_hour - 1) // 24) + 1


def growth_verdict(samples: list[Sample], hours: dict[int, dict], days: int) -> tuple[dict, dict[str, list]]:
    """Per simulated day: median RSS, leading p50/p99, store size; and the acceptance lines on growth."""
    by_day: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.rss_bytes:
            by_day[_day_of(s.sim_hour)].append(s)
    leading: dict[int, list[float]] = defaultdict(list)
    for h, v in hours.items():
        leading[_day_of(h)].extend(v["leading_ms"])
    rss = {d: statistics.median(s.rss_bytes for s in ss) / 2**20 for d, ss in by_day.items()}
    p99 = {d: percentile(v, 99) for d, v in leading.items()}
    table = {d: {"rss_mib": round(rss[d], 1) if d in rss else None,
                 "fds_max": max((s.fds for s in by_day[d]), default=None),
                 "greenlets_max": max((s.greenlets or 0 for s in by_day[d]), default=None),
                 "store_mib": round(max((s.store_bytes for s in by_day[d]), default=0) / 2**20, 2),
                 "wal_mib_max": round(max((s.wal_bytes for s in by_day[d]), default=0) / 2**20, 2),
                 "fills": max((s.fills for s in by_day[d]), default=0),
                 "leading_n": len(leading[d]), "leading_p50_ms": percentile(leading[d], 50),
                 "leading_p99_ms": p99.get(d)}
             for d in range(1, days + 1)}
    problems: dict[str, list] = {}
    rss_first, rss_last = rss.get(1), rss.get(days)
    if rss_first is None or rss_last is None:
        problems["rss_unsampled"] = ["no resident-memory sample on the first or the last simulated day"]
    elif abs(rss_last - rss_first) > RSS_TOLERANCE * rss_first:
        problems["rss_growth"] = [f"day {days} {rss_last:.1f} MiB vs day 1 {rss_first:.1f} MiB"]
    p99_first, p99_last = p99.get(1), p99.get(days)
    if p99_first is None or p99_last is None:
        problems["leading_unmeasured"] = ["no leading order on the first or the last simulated day"]
    elif p99_last > (1 + LEADING_P99_TOLERANCE) * p99_first:          # slower by more than 20%; faster is fine
        problems["leading_p99_drift"] = [f"day {days} {p99_last:.2f} ms vs day 1 {p99_first:.2f} ms"]
    # Past the retention horizon (two simulated days and an upkeep pass), the dedupe-only rows stay flat and the
    # store grows with the record alone: linearly with the fills.
    settled = [s for s in samples if s.sim_hour > RETENTION_DAYS * 24 + 6 and s.fills]
    pts = [(float(s.fills), float(s.store_bytes)) for s in settled]
    r2 = _r2(pts)
    if settled and (r2 is None or r2 < MIN_LINEAR_R2):      # a run shorter than the horizon is not judged on it
        problems["store_not_linear"] = [f"R^2 of store bytes against fills past the retention horizon {r2}"]
    kept = [s.sightings for s in settled]
    if kept and max(kept) > SIGHTINGS_FLAT * kept[0]:
        problems["sightings_not_flat"] = [f"{kept[0]} sightings at the horizon, up to {max(kept)} after it"]
    return {"days": table, "store_r2": r2, "store_bytes_per_fill": _slope(pts),
            "sightings": (kept[0], max(kept)) if kept else None}, problems


def _slope(pts: list[tuple[float, float]]) -> float | None:
    if len(pts) < 3:
        return None
    try:
        return round(statistics.linear_regression([x for x, _ in pts], [y for _, y in pts]).slope, 1)
    except statistics.StatisticsError:
        return None


def _r2(pts: list[tuple[float, float]]) -> float | None:
    if len(pts) < 3:
        return None
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    try:
        return round(statistics.correlation(xs, ys) ** 2, 4)
    except statistics.StatisticsError:
        return None


def time_report(config: Path, runs: int = 3) -> float:
    """`copier report --since 7d` as an operator runs it: a fresh process, the median of `runs`."""
    took = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = run_copier("report", "--config", str(config), "--since", "7d", "--json", timeout=600)
        took.append(time.perf_counter() - t0)
        if out.returncode not in (0, 1):
            raise RuntimeError(f"copier report failed: {out.stderr.strip()[-300:]}")
    return statistics.median(took)


def write_html(path: Path, config: Path, samples: list[Sample], start: float, speed: float) -> None:
    from copier.pnl_report import StorePnl
    from copier.report import build_report
    from copier.report_html import Growth, html_data, plotting_available, render_html
    if not plotting_available():
        print("soak-week: no plotting extra in this environment, no HTML report", file=sys.stderr)
        return
    cfg = parse_config(yaml.safe_load(config.read_text()))
    store = Store.open(cfg.store.path)
    try:
        record = store.record_since(0.0)
        rep = build_report(store, cfg, record=record)
        data = html_data(store, 0.0, pnl=StorePnl(store, record), record=record,
                         period=("simulated day", lambda ts: f"day {int((ts - start) * speed // DAY_S) + 1}"))
    finally:
        store.close()
    curves: dict[str, Sequence[float]] = {
        "resident memory": [s.rss_bytes / 2**20 for s in samples], "open fds": [s.fds for s in samples],
        "greenlets": [s.greenlets or 0 for s in samples], "store": [s.store_bytes / 2**20 for s in samples],
        "database file": [s.db_bytes / 2**20 for s in samples], "sightings kept": [s.sightings for s in samples],
        "WAL": [s.wal_bytes / 2**20 for s in samples], "logs": [s.log_bytes / 2**20 for s in samples],
        "StatsD": [s.statsd_pps for s in samples], "CPU per fill": [s.cpu_ms_per_fill or 0 for s in samples],
        "source fills recorded": [s.fills for s in samples]}
    units = {"resident memory": "MiB", "store": "MiB", "database file": "MiB", "WAL": "MiB", "logs": "MiB",
             "StatsD": "packets/s", "CPU per fill": "ms"}
    growth = Growth(at=[s.sim_hour for s in samples], curves=curves, unit=units, axis="simulated hour")
    path.write_text(render_html(rep, data, growth, title="copier: a simulated week"))


def run_week(args: argparse.Namespace) -> int:
    speed, days = args.speed, args.days
    bursts = args.bursts_per_window * (10 if args.ten_x else 1)
    duration = days * DAY_S / speed
    rng = random.Random(args.seed)
    wallet = Account.from_key(SIM_PRIVATE_KEY).address.lower()
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    for p in workdir.iterdir():
        if p.is_file():
            p.unlink()
    scale = COMPRESSED_SPEED / speed
    scenario = write_config(workdir / "scenario.yaml", {
        "name": "soak-week",
        "markets": {"assets": ASSETS, "taker_delay_ms": round(TAKER_DELAY_MS * scale, 2)},
        "feeds": {k: round(v * scale, 4) for k, v in VENUE_DELAYS_S.items()},
        "clob": {"balance": WALLET_PUSD},
        "chain": {"relayer_delay_s": round(RELAYER_DELAY_S * scale, 4), "pol_balance": WALLET_POL},
        "background": {k: round(v * scale, 4) for k, v in MAKER_DELAYS_S.items()},
        "source": {"mode": "random", "bursts_per_window": bursts}})
    chain_args = [a for flag, v in CHAIN_DELAYS_S.items() for a in (flag, str(round(v * scale, 4)))]
    statsd, sentry = GaugeSink(workdir / "statsd.packets"), SentrySink(workdir / "sentry.envelopes")
    sim = SimProcess(workdir, speed=speed, seed=args.seed,
                     extra_args=("--scenario", str(scenario.resolve()), *chain_args))
    sim.http.post(f"{sim.urls['control']}/source", json={"paused": True}).raise_for_status()
    creds = derive_creds(sim.urls["clob"])
    env = write_env_file(workdir / "copier.env", {
        "POLY_PRIVATE_KEY": SIM_PRIVATE_KEY, "POLY_API_KEY": creds[0], "POLY_API_SECRET": creds[1],
        "POLY_API_PASSPHRASE": creds[2], "SENTRY_DSN": sentry.dsn})
    config = write_config(workdir / "copier.yaml", copier_config(
        sim.urls, workdir / "copier.sqlite", dry_run=False, statsd_port=statsd.port, speed=speed,
        overrides={"execution": {"dry_run": False, "max_slippage_bps": args.slippage_bps,
                                 "near_expiry_cutoff_seconds": round(30.0 / speed, 3)},
                   "markets": {"slug_prefixes": [f"{a}-updown-15m" for a in ASSETS], "refresh_s": 1.0,
                               "window_seconds": round(900 / speed)},
                   # The caps scaled to the source's volume (it buys ~$37k a market day at the PRD's rate), as the
                   # week store does; the daily cap counts days of markets, and the copier spends ~$11k in one.
                   "sizing": {"max_notional_per_market_usd": 300.0, "max_total_notional_per_15m_window_usd": 1000.0},
                   "risk": {"max_daily_notional_usd": 50_000.0, "breaker_max_error_rate": 1.0,
                            "breaker_max_p95_ms": 60000.0},
                   # The redeemer looks back 72 hours of market time, as live.
                   "redeem": {"lookback_hours": round(72.0 / speed, 4)},
                   "telemetry": {"process_interval_s": max(1.0, round(HOUR_S / speed / 2, 1))},
                   # What only the dedupe needs is kept two days of markets, as live, and pruned every simulated 6 h.
                   "store": {"dedupe_retention_s": RETENTION_DAYS * DAY_S / speed,
                             "maintenance_interval_s": max(10.0, round(6 * HOUR_S / speed, 1))}}))
    sup = Supervisor(workdir, config, env)
    chaos = Chaos(rng, duration, week_plan(days), span=(0.05, 0.9))
    eventually(sup.pid, 30, 0.2, "the copier running under supervisord")
    time.sleep(3)                                 # its feeds connected and its books warm
    start = time.time()
    sim.http.post(f"{sim.urls['control']}/source", json={"paused": False}).raise_for_status()
    sampler = Sampler(workdir, sup, statsd, speed, start)
    threading.Thread(target=sampler.run, daemon=True).start()
    print(f"soak-week: {days:g} simulated days at {speed:g}x ({duration / 60:.1f} min), {bursts:g} bursts per "
          f"window, {len(chaos.events)} chaos events, simulator {sim.urls['clob']}", flush=True)
    try:
        chaos.play(start, sim, sup, config, rng, workdir / "copier.sqlite")
        time.sleep(max(0.0, start + duration - time.time()))
        sim.http.post(f"{sim.urls['control']}/source", json={"paused": True}).raise_for_status()
        sampler.stop.set()
        time.sleep(15)                           # the last fills arrive, are gap-filled and settle
        settle(sim, wallet, 6 * sim.window_s)
        final = end_state(sim, wallet)
    finally:
        sampler.stop.set()
        sup.shutdown()
        sim.stop()
    db = workdir / "copier.sqlite"
    store_rep = json.loads(run_copier("report", "--config", str(config), "--json", timeout=600).stdout)
    events = sim.ground_truth_events()
    gt = ground_truth_verdict(events, db, chaos.downtime)
    leaks = grep_secrets([*workdir.glob("copier.log*"), workdir / "supervisord.log", workdir / "statsd.packets",
                          workdir / "sentry.envelopes"], [SIM_PRIVATE_KEY, SIM_PRIVATE_KEY[2:], creds[1], creds[2]])
    bad_input = counter_total(workdir / "statsd.packets", "copier.feed.malformed")
    money = money_verdict(events, db, wallet, final)
    sent = sum(1 for e in events if e["kind"] == "source_fill")
    rc = verdict(store_rep, gt, chaos, leaks, statsd.packets, sentry.envelopes, sent, bad_input, money)
    hours = hourly(db, start, speed)
    growth, problems = growth_verdict(sampler.samples, hours, max(1, round(days)))
    if gt["copied_pct"] is None or gt["copied_pct"] < COPIED_TARGET_PCT:
        problems["copied_below_target"] = [f"{gt['copied_pct']}% < {COPIED_TARGET_PCT:g}% (venue ground truth)"]
    report_s = time_report(config)
    if report_s >= args.max_report_s:
        problems["report_too_slow"] = [f"copier report --since 7d took {report_s:.2f} s (median of 3)"]
    write_html(workdir / "week.html", config, sampler.samples, start, speed)
    (workdir / "hourly.json").write_text(json.dumps(
        {h: {"leading_p50_ms": percentile(v["leading_ms"], 50), "leading_p99_ms": percentile(v["leading_ms"], 99),
             "fill_p50_ms": percentile(v["fill_ms"], 50), "fill_p99_ms": percentile(v["fill_ms"], 99),
             "copied_pct": round(100 * v["filled"] / v["intended"], 2) if v["intended"] else None}
         for h, v in sorted(hours.items())}, indent=1))
    print_growth(growth, report_s)
    print(f"GROWTH VERDICT      {'PASS' if not problems else 'FAIL'}")
    for name, items in problems.items():
        print(f"  FAIL {name}: {', '.join(map(str, items))}")
    print(f"files               {workdir / 'week.html'}, {workdir / 'samples.jsonl'}, {workdir / 'hourly.json'}")
    return rc or (1 if problems else 0)


def print_growth(growth: dict, report_s: float) -> None:
    print("day  rss MiB  fds max  greenlets max  store MiB  WAL max MiB  fills    leading n  p50 ms  p99 ms")
    for d, row in growth["days"].items():
        def f(v, spec=".2f"):
            return "-" if v is None else format(v, spec)
        print(f"{d:>3}  {f(row['rss_mib'], '.1f'):>7}  {f(row['fds_max'], 'd'):>7}  "
              f"{f(row['greenlets_max'], '.0f'):>13}  {row['store_mib']:>9.2f}  {row['wal_mib_max']:>11.2f}  "
              f"{row['fills']:>6}  "
              f"{row['leading_n']:>9}  {f(row['leading_p50_ms']):>6}  {f(row['leading_p99_ms']):>6}")
    print(f"store               {growth['store_bytes_per_fill']} bytes per source fill recorded past the retention "
          f"horizon, R^2 {growth['store_r2']} against fills; sightings kept (at the horizon, most after) "
          f"{growth['sightings']}")
    print(f"report              copier report --since 7d: {report_s:.2f} s (median of 3 fresh processes)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="soak-week", description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    p.add_argument("--speed", type=float, default=float(os.environ.get("SOAK_WEEK_SPEED", DEFAULT_SPEED)),
                   help=f"market-time acceleration (default {DEFAULT_SPEED:g}: a week in "
                        f"{7 * DAY_S / DEFAULT_SPEED / 60:.0f} min)")
    p.add_argument("--bursts-per-window", type=float, default=PRD_BURSTS_PER_WINDOW,
                   help="the source's mean bursts per 15-minute window over the four assets (PRD: 6)")
    p.add_argument("--ten-x", action="store_true", help="ten times the source's rate")
    p.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", 1)))
    p.add_argument("--slippage-bps", type=int, default=300)
    p.add_argument("--max-report-s", type=float, default=2.0)
    p.add_argument("--workdir", type=Path, default=WORKDIR)
    args = p.parse_args(argv)
    if args.speed <= 0 or (900 / args.speed) % 1:
        raise SystemExit(f"--speed {args.speed:g}: a 15-minute window must last whole seconds at this speed (the "
                         "copier's markets.window_seconds is an integer): e.g. 180, 225, 300")
    if args.workdir.is_dir() and any(args.workdir.iterdir()) and not (args.workdir / "statsd.packets").exists():
        raise SystemExit(f"--workdir {args.workdir}: not empty and not a soak's directory (the soak deletes the files "
                         "in it); name a new or an empty one")
    return procguard.run_guarded("soak-week", lambda: run_week(args))


if __name__ == "__main__":
    sys.exit(main())
