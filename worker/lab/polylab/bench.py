"""`make bench`: ingest -> submit latency of the real copier process, stage by stage, against polysim on loopback.

What runs: `polysim serve` and `copier run` as real processes; live signing (real EIP-712 signatures, real HTTP
POSTs that the simulator verifies); the deployed feed set (two RTDS sockets and the Data API gap-fill; --chain-feeds
adds the Polygon logs and mempool race); logs at the production level (INFO) into a file. Source fills are fired
through the simulator's control API and reach the copier only through its feeds, as on the real venue. No warm-up
order: the first scenario meets the copier as it starts, so anything not warmed before the first trade shows.

Where every number comes from:
- delays: the copier's own store. Ingest = the first sighting of the fill on any feed (`sightings`, first = 1: the
  instant its frame was read; with --chain-feeds the copier itself counts a mempool fill in a trailing batch from
  its confirming sighting, the bench does not); submit = `orders.submit_ns`, stamped just before the POST is
  written. Cross-check: the simulator's ground truth records when its HTTP handler received each order ("venue rx").
- all-fills delay = coalescing wait + processing. The coalescer's release instant is `intents.decided_at`: the
  wait of a trailing fill (release - ingest) is the product's design (leading edge at once, trailing batch after
  `coalesce_ms` quiet or `max_hold_ms`, <= 2 orders per 2 s per market/outcome); processing (submit - release) is
  ours. A leading order waits for nothing: all of its delay is processing.
- stage timings: the real StatsD packets the copier sends (stage.* names in the copier's code), stamped on arrival.
- queue growth (ramp steps, see sustained_ok): the ingest -> pipeline wait by thirds of a step, the exec queue's
  high-water gauge (every 0.5 s), and the copier's CPU share (a saturated hub leaves frames in socket buffers).
- CPU per source fill and peak RSS: /proc of the copier; the simulator's CPU is shown too (same 2 cores).

Phases: "quiet" runs against the simulator's default background (20 takers/s) the steady trickle, the PRD's bursts
(8 BUYs within 1 s on one outcome) and mixed bursts (four market/outcome keys at once); "firehose" runs with
--bg-rate 130 (>= 200 fills/s on RTDS, measured and printed) the source's trickle and bursts mixed into it,
then a ramp of source-fill rates for the highest rate sustained without queue growth or missed fills. Each
scenario runs --repeats times in the same processes; the verdict takes the median of the repeats.
Results: var/bench/results.json (this run) and var/bench/history.jsonl (one line per run, for comparing commits).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from copier.config import Config
from copier.report import build_report, percentile
from copier.store import Store
from polylab.harness import (
    SIM_PRIVATE_KEY,
    SimProcess,
    copier_config,
    eventually,
    start_copier,
    write_config,
    write_env_file,
)
from polylab.soak import derive_creds

WORKDIR = Path("var/bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEYS = (("btc", "Up"), ("btc", "Down"), ("eth", "Up"), ("eth", "Down"))
COALESCE_MS, MAX_HOLD_MS = 300, 2000
FIREHOSE_BG_RATE = 130           # background takers/s: >= 200 RTDS trade rows/s (taker + makers), measured per run
EXECUTOR_CONCURRENCY = 8         # the config default
QUIET_BG_RATE = 20               # the simulator's default
COOLDOWN_S = 2.2                 # > the order budget's 2 s window: scenarios do not share a budget
SETTLE_TIMEOUT_S = 15.0
STAGES = ("parse", "dedupe", "queue", "decide", "handoff", "persist_decision", "sign", "serialize", "persist",
          "persist_posting", "request", "send")
GC_ROWS = ("gc.gen1", "gc.gen2")     # collections stop every greenlet
TARGETS = {"leading_p50_ms": 2.0, "leading_p99_ms": 10.0, "all_p50_ms": 150.0, "all_p95_ms": 400.0,
           "orders_per_burst": 2, "sustained_fills_per_s": 200}


# ---- measurement plumbing -------------------------------------------------------------------------------------
def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, peak RSS bytes) of a process; (0, 0) once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return cpu, hwm


def dist(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values)}


class StatsdRecorder:
    """The copier's real StatsD packets, stamped on arrival (wall clock)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            t = time.time()
            for line in data.decode("utf-8", "replace").split("\n"):
                if line:
                    self.lines.append((t, line))

    def window(self, t0: float, t1: float, prefix: str = "copier.") -> tuple[dict, dict, dict]:
        """(timings name -> [(t, ms)], gauges name -> [(t, value)], counters name -> total) arrived in [t0, t1]."""
        timings: dict[str, list[tuple[float, float]]] = {}
        gauges: dict[str, list[tuple[float, float]]] = {}
        counters: dict[str, float] = {}
        for t, line in list(self.lines):
            if not t0 <= t <= t1 or not line.startswith(prefix):
                continue
            name, _, rest = line[len(prefix):].partition(":")
            value, _, kind = rest.partition("|")
            try:
                v = float(value)
            except ValueError:
                continue
            if kind.startswith("ms"):
                timings.setdefault(name, []).append((t, v))
            elif kind.startswith("g"):
                gauges.setdefault(name, []).append((t, v))
            elif kind.startswith("c"):
                counters[name] = counters.get(name, 0) + v
        return timings, gauges, counters

    def close(self) -> None:
        self.sock.close()


@dataclass
class Shot:
    at: float                    # wall clock when the control request was sent
    key: tuple[str, str]
    burst: int | None
    resp: dict


class Driver:
    """Fires source fills through the simulator's control API from worker threads, one keep-alive connection each."""

    def __init__(self, control_url: str, threads: int = 16):
        u = urlsplit(control_url)
        self.host, self.port, self.path = u.hostname, u.port, u.path.rstrip("/") + "/source-fill"
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(threads)

    def _post(self, key: tuple[str, str]) -> tuple[float, dict]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)  # type: ignore[arg-type]  # the simulator's URL names its host
        body = json.dumps({"asset": key[0], "outcome": key[1], "side": "BUY", "size": 5.0, "role": "taker"})
        at = time.time()
        try:
            conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return at, json.loads(resp.read())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            conn.close()
            self.local.conn = None
            return at, {"error": f"{type(exc).__name__}: {exc}"}

    def fire(self, plan: list[tuple[float, tuple[str, str], int | None]]) -> list[Shot]:
        """Send each (offset s, key, burst id) at its offset from now; returns when every answer is in."""
        t0 = time.time() + 0.02
        futures = []
        for offset, key, burst in plan:
            delay = t0 + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            futures.append((key, burst, self.pool.submit(self._post, key)))
        return [Shot(f.result()[0], key, burst, f.result()[1]) for key, burst, f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Phase:
    """One simulator + one copier process (live signing) + the StatsD recorder, for one background load."""

    def __init__(self, name: str, root: Path, bg_rate: float, profile: bool = False, chain_feeds: bool = False,
                 slippage_bps: int = 120):
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sim = SimProcess(self.dir, speed=1.0, seed=3,
                              extra_args=("--balance", "100000000", "--bg-rate", str(bg_rate)))
        creds = derive_creds(self.sim.urls["clob"])
        self.statsd = StatsdRecorder()
        env = write_env_file(self.dir / "copier.env", {
            "POLY_PRIVATE_KEY": SIM_PRIVATE_KEY, "POLY_API_KEY": creds[0], "POLY_API_SECRET": creds[1],
            "POLY_API_PASSPHRASE": creds[2]})
        big = 1e9
        self.db_path = self.dir / "copier.sqlite"
        self.config = write_config(self.dir / "copier.yaml", copier_config(
            self.sim.urls, self.db_path, dry_run=False, statsd_port=self.statsd.port, overrides={
                "copy": {"coalesce_ms": COALESCE_MS, "max_hold_ms": MAX_HOLD_MS},
                "sizing": {"max_notional_per_order_usd": 50.0, "max_notional_per_market_usd": big,
                           "max_total_notional_per_15m_window_usd": big, "min_order_notional_usd": 0.5},
                "risk": {"max_daily_notional_usd": big, "breaker_max_error_rate": 1.0, "breaker_max_p95_ms": 1e9},
                "execution": {"max_slippage_bps": slippage_bps, "near_expiry_cutoff_seconds": 2.0},
                "feeds": {"use_chain_logs": chain_feeds, "use_mempool": chain_feeds},
                "telemetry": {"log_level": "INFO"}}))
        self.proc = start_copier(self.config, self.dir / "copier.log", env)
        self.driver = Driver(self.sim.urls["control"])
        self.chain_feeds = chain_feeds
        self.spy = None
        try:
            eventually(self._ready, 60, 0.2, f"{name}: copier feeds connected")
        except BaseException:
            self.close()
            raise
        if profile:
            # py-spy samples from outside without pausing the process (pyinstrument's in-process hooks and gevent's
            # patched threading do not mix); collapsed stacks until the copier exits.
            self.spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                         str(self.proc.pid), "--rate", "1000", "--nonblocking", "--format", "raw",
                                         "-o", str(self.dir / "profile.folded")],
                                        stdout=subprocess.DEVNULL, stderr=open(self.dir / "py-spy.log", "ab"))

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"copier exited with {self.proc.returncode}; see {self.dir / 'copier.log'}")
        if self.sim.state()["rtds_clients"] < 2:
            return False
        return not self.chain_feeds or self.sim.chain("state")["subscriptions"] >= 2

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)

    def sim_counts(self) -> tuple[float, int, int]:
        s = self.sim.state()
        return time.time(), s["matches"], s["counters"]["rtds_frames"]

    def close(self) -> None:
        self.driver.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.spy is not None:
            self.spy.wait(30)
        self.sim.stop()
        self.statsd.close()


# ---- scenarios: (offset s, key, burst id) plans ----------------------------------------------------------------
def plan_trickle(n: int = 16, gap: float = 0.35):
    """Isolated fills rotating over four keys: each key every 1.4 s, so every fill is a leading order."""
    return [(i * gap, KEYS[i % 4], None) for i in range(n)]


def plan_bursts(n: int = 3, fills: int = 8, length: float = 1.0, spacing: float = 2.5):
    """The PRD's bursts: `fills` small BUYs within `length` s on one outcome, each burst on the next key."""
    return [(b * spacing + k * length / fills, KEYS[b % 4], b) for b in range(n) for k in range(fills)]


def plan_mixed(rounds: int = 2, fills: int = 6, length: float = 1.0, spacing: float = 3.0):
    """Bursts on four market/outcome keys at once, interleaved."""
    return [(r * spacing + (k * 4 + j) * length / (fills * 4), KEYS[j], r * 4 + j)
            for r in range(rounds) for k in range(fills) for j in range(4)]


def plan_mixed_in(seconds: float = 8.0):
    """Into the firehose: a trickle on the eth keys (2/s) and two PRD bursts on the btc keys."""
    trickle = [(i * 0.5, KEYS[2 + i % 2], None) for i in range(int(seconds / 0.5))]
    bursts = [(1.0 + b * 3.5 + k / 8, KEYS[b % 2], b) for b in range(2) for k in range(8)]
    return sorted(trickle + bursts, key=lambda p: p[0])


def plan_rate(per_s: float, seconds: float):
    n = int(per_s * seconds)
    return [(i / per_s, KEYS[i % 4], None) for i in range(n)]


# ---- one scenario run --------------------------------------------------------------------------------------------
def run_scenario(phase: Phase, name: str, plan, *, rate: float | None = None, cooldown_s: float = COOLDOWN_S) -> dict:
    cpu0, _ = proc_stats(phase.proc.pid)
    sim_cpu0, _ = proc_stats(phase.sim.proc.pid)
    c0 = phase.sim_counts()
    t_start = time.time()
    shots = phase.driver.fire(plan)
    t_fired = time.time()
    c1 = phase.sim_counts()
    expected = {s.resp["tx_hash"]: len(s.resp.get("fills") or ()) for s in shots if s.resp.get("tx_hash")}
    settled = _settle(phase, expected)
    t_end = time.time()
    cpu1, rss = proc_stats(phase.proc.pid)
    sim_cpu1, _ = proc_stats(phase.sim.proc.pid)
    res = analyse(phase, shots, expected, t_start, t_end)
    n = max(1, sum(expected.values()))
    res.update(name=name, phase=phase.name, settled=settled, fired=len(shots),
               fire_rate=round(len(shots) / max(1e-9, t_fired - t_start), 1), target_rate=rate,
               no_liquidity=sum(1 for s in shots if not s.resp.get("tx_hash")),
               control_errors=sum(1 for s in shots if "error" in s.resp),
               wall_s=round(t_end - t_start, 2),
               cpu_ms_per_fill=round((cpu1 - cpu0) * 1000 / n, 3),
               copier_core_share=round((cpu1 - cpu0) / max(1e-9, t_end - t_start), 3),
               sim_core_share=round((sim_cpu1 - sim_cpu0) / max(1e-9, t_end - t_start), 3),
               peak_rss_mb=rss >> 20,
               firehose_fills_per_s=round(((c1[2] - c0[2]) - (c1[1] - c0[1])) / max(1e-9, c1[0] - c0[0]), 1),
               rtds_frames_per_s=round((c1[2] - c0[2]) / max(1e-9, c1[0] - c0[0]), 1))
    time.sleep(cooldown_s)
    return res


def _settle(phase: Phase, expected: dict[str, int]) -> bool:
    """Wait until every matched source fill is decided and every order for them has an answer."""
    txs = list(expected)

    def done() -> bool:
        db = phase.db()
        try:
            found, open_orders = 0, 0
            for chunk in _chunks(txs):
                marks = ",".join("?" * len(chunk))
                found += db.execute(f"select count(*) from fills where tx_hash in ({marks})", chunk).fetchone()[0]
                open_orders += db.execute(
                    f"""select count(*) from orders o join fills f on f.intent_id = o.intent_id
                        where f.tx_hash in ({marks}) and o.status in ('SIGNED', 'POSTING')""", chunk).fetchone()[0]
        finally:
            db.close()
        return found >= sum(expected.values()) and open_orders == 0

    try:
        eventually(done, SETTLE_TIMEOUT_S, 0.2, "settle")
        return True
    except TimeoutError:
        return False


def _chunks(items: list, n: int = 500):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _ground_truth_rx(phase: Phase) -> dict[str, float]:
    """order hash -> when the simulator's handler received the POST (epoch s)."""
    out: dict[str, float] = {}
    path = phase.sim.ground_truth
    if path.exists():
        for line in path.read_text().splitlines():
            if '"kind": "order"' in line:
                ev = json.loads(line)
                out.setdefault(ev.get("order_hash", ""), ev["received_at"])
    return out


def analyse(phase: Phase, shots: list[Shot], expected: dict[str, int], t0: float, t1: float) -> dict:
    db = phase.db()
    try:
        rows = []
        for chunk in _chunks(list(expected)):
            marks = ",".join("?" * len(chunk))
            rows += db.execute(f"""
                select f.tx_hash, f.recv_ns, f.intent_id, i.kind, i.decision, i.reason, i.decided_at,
                       i.condition_id, i.outcome, coalesce(o.submit_ns, 0), coalesce(o.order_hash, ''),
                       coalesce(o.status, '')
                from fills f join intents i on i.intent_id = f.intent_id
                left join orders o on o.intent_id = f.intent_id
                where f.tx_hash in ({marks})""", chunk).fetchall()
        first_seen: dict[str, tuple[int, str]] = {}
        for key, recv_ns, feed in db.execute(
                "select dedupe_key, recv_ns, feed from sightings where first = 1 and recv_ns >= ?",
                (int(t0 * 1e9),)):
            tx = key.split(":", 1)[0]
            if tx not in first_seen or recv_ns < first_seen[tx][0]:
                first_seen[tx] = (recv_ns, feed)
    finally:
        db.close()
    rx = _ground_truth_rx(phase)
    by_tx: dict[str, int] = {}
    intents: dict[str, dict] = {}
    all_ms: list[float] = []
    wait_ms: list[float] = []
    proc_ms: list[float] = []
    skips: dict[str, int] = {}
    for tx, recv_ns, iid, kind, decision, reason, decided_at, cid, outcome, submit_ns, order_hash, status in rows:
        by_tx[tx] = by_tx.get(tx, 0) + 1
        recv_ns = min(recv_ns, first_seen.get(tx, (recv_ns,))[0])
        it = intents.setdefault(iid, {"kind": kind, "decision": decision, "submit_ns": submit_ns, "hash": order_hash,
                                      "status": status, "first_recv": recv_ns, "key": (cid, outcome), "txs": set(),
                                      "released": decided_at})
        it["first_recv"] = min(it["first_recv"], recv_ns)
        it["txs"].add(tx)
        if decision != "order":
            skips[reason] = skips.get(reason, 0) + 1
            continue
        if not submit_ns:
            continue
        total = (submit_ns - recv_ns) / 1e6
        wait = 0.0 if kind in ("leading", "single") else max(0.0, (decided_at * 1e9 - recv_ns) / 1e6)
        all_ms.append(total)
        wait_ms.append(wait)
        proc_ms.append(total - wait)
    orders = {iid: it for iid, it in intents.items() if it["decision"] == "order"}
    leading = [it for it in orders.values() if it["kind"] in ("leading", "single") and it["submit_ns"]]
    leading_ms = [(it["submit_ns"] - it["first_recv"]) / 1e6 for it in leading]
    venue_ms = [rx[it["hash"]] * 1e3 - it["first_recv"] / 1e6 for it in leading if it["hash"] in rx]

    # Orders per fired burst, and the most orders on one market/outcome within any 2 s: counted at their release
    # instants, as the coalescer budgets them and `copier report --acceptance` judges them, and on the wire.
    burst_of = {s.resp["tx_hash"]: s.burst for s in shots if s.resp.get("tx_hash") and s.burst is not None}
    per_burst: dict[int, set] = {}
    for iid, it in orders.items():
        for tx in it["txs"]:
            if tx in burst_of:
                per_burst.setdefault(burst_of[tx], set()).add(iid)
    burst_sizes = {b: sum(1 for s in shots if s.burst == b and s.resp.get("tx_hash")) for b in per_burst}
    released: dict[tuple, list[float]] = {}
    wire: dict[tuple, list[float]] = {}
    for it in orders.values():
        if it["submit_ns"]:
            released.setdefault(it["key"], []).append(it["released"])
            wire.setdefault(it["key"], []).append(it["submit_ns"] / 1e9)

    # Detection lag (match -> first sighting on any feed), by thirds of the run: a growing backlog drifts it up.
    match_at = {s.resp["tx_hash"]: (s.at, s.resp.get("match_time") or s.at) for s in shots if s.resp.get("tx_hash")}
    lags = sorted((at, first_seen[tx][0] / 1e9 - m) for tx, (at, m) in match_at.items() if tx in first_seen)
    third = max(1, len(lags) // 3)
    drift = (statistics.median(v for _, v in lags[-third:]) - statistics.median(v for _, v in lags[:third])) * 1e3 \
        if len(lags) >= 6 else 0.0
    first_feeds: dict[str, int] = {}
    for tx in match_at:
        if tx in first_seen:
            first_feeds[first_seen[tx][1]] = first_feeds.get(first_seen[tx][1], 0) + 1

    timed, gauges, counters = phase.statsd.window(t0, t1)
    timings = {k: [v for _, v in tv] for k, tv in timed.items()}
    stages = {s: dist(timings.get(f"stage.{s}_ms", [])) for s in STAGES} | \
        {g: dist(timings.get(f"{g}_ms", [])) for g in GC_ROWS}
    # sqlite before the POST: the decision and the signed order (the POSTING mark is written once the request is out)
    pre_post = [a + b for a, b in zip(timings.get("stage.persist_decision_ms", []),
                                      timings.get("stage.persist_ms", []), strict=False)]
    # The ingest -> pipeline wait by thirds of the run: a queue that grows makes the later thirds wait longer.
    waits = sorted(timed.get("stage.queue_ms", []))
    k = max(1, len(waits) // 3)
    wait_thirds = [percentile([v for _, v in waits[i * k:(i + 1) * k if i < 2 else None]], 99) for i in range(3)] \
        if len(waits) >= 3 else []
    statuses: dict[str, int] = {}
    for it in orders.values():
        statuses[it["status"] or "none"] = statuses.get(it["status"] or "none", 0) + 1
    return {
        "source_fills": sum(expected.values()), "decided": sum(by_tx.values()),
        "missed": sum(max(0, n - by_tx.get(tx, 0)) for tx, n in expected.items()),
        "skipped": skips, "orders": len(orders), "order_status": statuses,
        "leading_ms": dist(leading_ms), "leading_venue_rx_ms": dist(venue_ms),
        "all_fills_ms": dist(all_ms), "coalesce_wait_ms": dist(wait_ms), "processing_ms": dist(proc_ms),
        "orders_per_burst": [len(v) for _, v in sorted(per_burst.items())], "burst_fills": list(burst_sizes.values()),
        "max_orders_per_key_2s": _most_in_2s(released), "max_orders_per_key_2s_wire": _most_in_2s(wire),
        "detection_lag_ms": dist([v * 1e3 for _, v in lags]), "detection_lag_drift_ms": round(drift, 1),
        "first_feed": first_feeds, "stages_ms": stages, "pre_post_sqlite_ms": dist(pre_post),
        "queue_peak_ingest": max((v for _, v in gauges.get("queue_peak.ingest", [])), default=None),
        "queue_peak_exec": max((v for _, v in gauges.get("queue_peak.exec", [])), default=None),
        "queue_peak_series": [v for _, v in gauges.get("queue_peak.ingest", [])],
        "ingest_wait_p99_ms": stages["queue"].get("p99"), "ingest_wait_p99_by_third_ms": wait_thirds,
        "new_clob_connections": counters.get("clob.connects", 0),
        "cold_market_lookups": counters.get("markets.cold_lookups", 0),
        "ingest_dropped": counters.get("ingest_dropped", 0),
        "_leading_samples": leading_ms, "_all_samples": all_ms,
    }


def _most_in_2s(times_by_key: dict[tuple, list[float]]) -> int:
    return max((sum(1 for u in ts if t <= u < t + 2.0 - 1e-6) for ts in times_by_key.values() for t in ts), default=0)


def sustained_ok(r: dict) -> tuple[bool, str]:
    """A ramp step holds when the rate was really offered, every fill was decided, and nothing queued up: in every
    third of the step the pipeline picked fills up within 50 ms (p99 of ingest -> pipeline; a growing queue makes
    the later thirds wait longer), the exec queue stayed within the executor concurrency, and the copier was not
    CPU-bound (a saturated hub leaves frames in the socket buffers, where no queue gauge sees them). Not judged: the
    ingest queue's high-water (the simulator's RTDS lag random-walks per match, so frames arrive in lumps that the
    pipeline drains in milliseconds) and the detection lag (the same random walk moves it hundreds of ms)."""
    if r["fire_rate"] < 0.95 * r["target_rate"]:
        return False, f"driver/simulator offered only {r['fire_rate']}/s"
    if r["missed"] or r["ingest_dropped"] or not r["settled"]:
        return False, f"missed {r['missed']} fills (dropped {r['ingest_dropped']})"
    worst = max(r["ingest_wait_p99_by_third_ms"] or [r["ingest_wait_p99_ms"] or 0.0])
    if worst > 50:
        return False, f"ingest -> pipeline p99 {worst:.0f} ms > 50 in a third of the step"
    if (r["queue_peak_exec"] or 0) > EXECUTOR_CONCURRENCY:
        return False, f"exec queue high-water {r['queue_peak_exec']:.0f} > {EXECUTOR_CONCURRENCY}"
    if r["copier_core_share"] > 0.9:
        return False, f"copier CPU-bound ({r['copier_core_share']:.2f} core)"
    return True, "held"


# ---- the whole bench ---------------------------------------------------------------------------------------------
def run(repeats: int, rates: list[int], step_s: float, profile: bool, chain_feeds: bool, budget_s: float,
        slippage_bps: int = 120) -> dict:
    """budget_s: no ramp step starts after this many seconds (make bench must finish unattended within 5 min)."""
    t0 = time.monotonic()
    runs: dict[str, list[dict]] = {}
    ramps: list[list[dict]] = []
    phases = {}
    cut = 0
    quiet = Phase("quiet", WORKDIR, QUIET_BG_RATE, profile, chain_feeds, slippage_bps)
    try:
        for _ in range(repeats):
            for name, plan in (("steady_trickle", plan_trickle()), ("prd_bursts", plan_bursts()),
                               ("mixed_bursts", plan_mixed())):
                runs.setdefault(name, []).append(run_scenario(quiet, name, plan))
    finally:
        quiet.close()
        phases["quiet"] = {"bg_rate": QUIET_BG_RATE, "fills": fill_quality(quiet.db_path)}
    fire = Phase("firehose", WORKDIR, FIREHOSE_BG_RATE, profile, chain_feeds, slippage_bps)
    try:
        for _ in range(repeats):
            runs.setdefault("firehose_mixed_in", []).append(run_scenario(fire, "firehose_mixed_in", plan_mixed_in()))
            steps = []
            for rate in rates:
                if time.monotonic() - t0 > budget_s:
                    cut += 1
                    break
                # No cool-down needed between steps: they judge queues, not the order budget.
                r = run_scenario(fire, f"rate_{rate}", plan_rate(rate, step_s), rate=rate, cooldown_s=0.3)
                r["held"], r["why"] = sustained_ok(r)
                steps.append(r)
                if not r["held"]:
                    break
            ramps.append(steps)
    finally:
        fire.close()
        phases["firehose"] = {"bg_rate": FIREHOSE_BG_RATE, "fills": fill_quality(fire.db_path)}
    return {"runs": runs, "ramps": ramps, "phases": phases, "ramp_steps_cut": cut, "rates": rates,
            "slippage_bps": slippage_bps}


def fill_quality(db_path: Path) -> dict:
    """What the copier's own report says a phase's orders got: copied means filled."""
    store = Store.open(str(db_path))
    try:
        rep = build_report(store, Config())
    finally:
        store.close()
    keys = ("filled_pct", "intended_usd", "filled_usd", "orders_sent", "orders_killed", "orders_partial",
            "remainder_orders", "no_liquidity_intents")
    return {**{k: rep[k] for k in keys}, "slippage_bps": {side: {q: rep["slippage_bps"][side][q] for q in ("n", "p50",
                                                                                                         "p95")}
                                                         for side in ("BUY", "SELL")}}


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(raw: dict, repeats: int) -> dict:
    runs, ramps = raw["runs"], raw["ramps"]
    latency = ("steady_trickle", "prd_bursts", "mixed_bursts", "firehose_mixed_in")
    scen = {}
    for name, rs in runs.items():
        scen[name] = {"runs": rs, "median": {
            "source_fills": _med([r["source_fills"] for r in rs]), "missed": max(r["missed"] for r in rs),
            "orders": _med([r["orders"] for r in rs]),
            **{f"{m}_{q}": _med([r[m].get(q) for r in rs]) for m in ("leading_ms", "all_fills_ms",
                                                                      "coalesce_wait_ms", "processing_ms",
                                                                      "leading_venue_rx_ms")
               for q in ("p50", "p95", "p99", "max")},
            "max_orders_per_burst": max((max(r["orders_per_burst"], default=0) for r in rs), default=0),
            "max_orders_per_key_2s": max(r["max_orders_per_key_2s"] for r in rs),
            "max_orders_per_key_2s_wire": max(r["max_orders_per_key_2s_wire"] for r in rs),
            "cpu_ms_per_fill": _med([r["cpu_ms_per_fill"] for r in rs]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "copier_core_share": _med([r["copier_core_share"] for r in rs]),
            "sim_core_share": _med([r["sim_core_share"] for r in rs]),
            "firehose_fills_per_s": _med([r["firehose_fills_per_s"] for r in rs]),
            "rtds_frames_per_s": _med([r["rtds_frames_per_s"] for r in rs])}}
    # The leading-order target pools every latency scenario's leading orders per repeat, then takes the median.
    pooled = []
    for i in range(repeats):
        lead, allf = [], []
        for name in latency:
            if name in runs and i < len(runs[name]):
                lead += _samples(runs[name][i], "leading")
                allf += _samples(runs[name][i], "all")
        pooled.append({"leading": dist(lead), "all": dist(allf)})
    highest = [max((s["target_rate"] for s in steps if s["held"]), default=0) for steps in ramps]
    stages = _stage_pool(runs, ramps)
    verdict = _verdict(scen, pooled, highest, ramps)
    return {"scenarios": scen, "pooled": pooled, "ramps": ramps, "highest_sustained": highest,
            "all_steps_held": all(len(st) == len(raw["rates"]) and st[-1]["held"] for st in ramps),
            "ramp_steps_cut": raw["ramp_steps_cut"], "stages_ms": stages, "verdict": verdict, "phases": raw["phases"],
            "slippage_bps": raw["slippage_bps"]}


def _samples(r: dict, which: str) -> list[float]:
    return r["_leading_samples"] if which == "leading" else r["_all_samples"]


def _stage_pool(runs, ramps) -> dict:
    """Median over runs of each stage's p50/p99, per phase."""
    out = {}
    for phase in ("quiet", "firehose"):
        rs = [r for v in runs.values() for r in v if r["phase"] == phase] + \
             [s for steps in ramps for s in steps if phase == "firehose"]
        out[phase] = {st: {q: _med([r["stages_ms"][st].get(q) for r in rs]) for q in ("p50", "p99", "max")} |
                      {"n": sum(r["stages_ms"][st]["n"] for r in rs)} for st in (*STAGES, *GC_ROWS)}
        out[phase]["pre_post_sqlite"] = {q: _med([r["pre_post_sqlite_ms"].get(q) for r in rs])
                                         for q in ("p50", "p99", "max")}
    return out


def _verdict(scen, pooled, highest, ramps) -> list[dict]:
    lead50 = _med([p["leading"].get("p50") for p in pooled])
    lead99 = _med([p["leading"].get("p99") for p in pooled])
    prd = scen.get("prd_bursts", {}).get("median", {})
    per_2s = max((s["median"]["max_orders_per_key_2s"] for s in scen.values()), default=0)
    per_2s_wire = max((s["median"]["max_orders_per_key_2s_wire"] for s in scen.values()), default=0)
    per_burst = max((s["median"]["max_orders_per_burst"] for s in scen.values()), default=0)
    missed = sum(r["missed"] for s in scen.values() for r in s["runs"])
    sustained = _med(highest)
    t = TARGETS
    return [
        {"target": "leading ingest->submit p50 <= 2 ms", "value": lead50, "met": _le(lead50, t["leading_p50_ms"])},
        {"target": "leading ingest->submit p99 <= 10 ms", "value": lead99, "met": _le(lead99, t["leading_p99_ms"])},
        {"target": "all fills p50 <= 150 ms (PRD bursts)", "value": prd.get("all_fills_ms_p50"),
         "met": _le(prd.get("all_fills_ms_p50"), t["all_p50_ms"]),
         "note": f"of which coalescer wait p50 {_f(prd.get('coalesce_wait_ms_p50'), 0)}, "
                 f"processing p50 {_f(prd.get('processing_ms_p50'))}"},
        {"target": "all fills p95 <= 400 ms (PRD bursts)", "value": prd.get("all_fills_ms_p95"),
         "met": _le(prd.get("all_fills_ms_p95"), t["all_p95_ms"]),
         "note": f"of which coalescer wait p95 {_f(prd.get('coalesce_wait_ms_p95'), 0)}, "
                 f"processing p95 {_f(prd.get('processing_ms_p95'))}"},
        {"target": "<= 2 orders per 2 s per market/outcome", "value": per_2s, "met": per_2s <= t["orders_per_burst"],
         "note": f"by release instant; on the wire (submit instants) {per_2s_wire}; most orders carrying one "
                 f"fired burst {per_burst}"},
        {"target": "no missed fills (latency scenarios)", "value": missed, "met": missed == 0},
        {"target": "sustained 200 source fills/s + firehose", "value": sustained,
         "met": sustained is not None and sustained >= t["sustained_fills_per_s"]},
    ]


def _le(v, limit) -> bool:
    return v is not None and v <= limit


# ---- profile summary (py-spy collapsed stacks) -----------------------------------------------------------------
# A sample belongs to the first area that matches, scanning from the innermost frame outwards (gevent's own frames
# only when nothing else matches): a json.loads under schemas.py is parse, a keccak under signing.py is signing.
AREAS = (("logging", ("logging/", "copier/logs.py")), ("metrics", ("copier/metrics.py", "statsd/")),
         ("sqlite", ("sqlite3", "peewee", "copier/store.py")), ("signing", ("copier/signing.py",)),
         ("http (CLOB)", ("http/client", "copier/transport.py")), ("websocket frames", ("websocket/",)),
         ("parse", ("copier/schemas.py",)), ("chain feeds", ("copier/chain.py",)),
         ("dedupe/detection", ("copier/dedupe.py", "copier/detection.py")),
         ("decide", ("copier/coalescer.py", "copier/decision.py", "copier/risk.py", "copier/exposure.py")),
         ("feeds", ("copier/watcher.py", "copier/wsfeed.py")), ("markets/books", ("copier/markets.py",
                                                                                   "copier/books.py")),
         ("runtime", ("copier/runtime.py", "copier/executor.py")), ("httpx (Gamma/Data API)", ("httpx/", "httpcore/")))


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, patterns in AREAS:
            if any(p in frame for p in patterns):
                return area
    return "gevent hub" if any("gevent/" in f for f in frames) else "other"


def profile_summary(path: Path, top: int = 20) -> str:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total = sum(c for _, c in stacks) or 1
    areas: dict[str, int] = {}
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    submit: dict[str, int] = {}
    for frames, c in stacks:
        areas[_area(frames)] = areas.get(_area(frames), 0) + c
        self_t[frames[-1]] = self_t.get(frames[-1], 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
        if any(f.startswith("submit (copier/executor.py") for f in frames):
            # from the executor's submit down: the order's own work before and after the POST
            below = frames[next(i for i, f in enumerate(frames) if f.startswith("submit (copier/executor.py")):]
            submit[_area(below)] = submit.get(_area(below), 0) + c

    def table(d: dict, n: int) -> list[str]:
        return [f"  {100 * v / total:5.1f}%  {k}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]
    out = [f"{path}: {total} samples while on CPU (py-spy, 1000 Hz, idle excluded)", "by area:"]
    out += table(areas, len(areas))
    out += ["inside ClobExecutor.submit (share of all samples):"] + table(submit, len(submit))
    out += [f"top {top} functions by self time:"] + table(self_t, top)
    out += [f"top {top} functions by inclusive time:"] + table(incl, top)
    return "\n".join(out)


# ---- output ----------------------------------------------------------------------------------------------------
def _f(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render(out: dict) -> str:
    s = out["summary"]
    feeds = "RTDS x2 + gap-fill" + (" + chain logs + mempool" if out["chain_feeds"] else "")
    lines = [f"make bench  commit {out['commit']}  repeats {out['repeats']}  wall {out['wall_s']:.0f} s  "
             f"feeds: {feeds}  coalesce_ms {COALESCE_MS}", "(medians of the repeats; ms; ingest = first sighting on "
             "any feed; submit = just before the POST is written)", ""]
    lines.append(f"{'scenario':20} {'fills':>5} {'miss':>4} {'ord':>4}  {'leading p50/p95/p99/max':>26}  "
                 f"{'all fills p50/p95/p99/max':>29}  {'wait p50/p95':>15}  {'proc p50/p95':>13}  "
                 f"{'ord/burst':>9} {'/2s':>3} {'wire':>4} {'cpu/fill':>8} {'rss MB':>6}")
    for name, sc in s["scenarios"].items():
        m = sc["median"]
        lines.append(
            f"{name:20} {_f(m['source_fills'], 0):>5} {m['missed']:>4} {_f(m['orders'], 0):>4}  "
            f"{'/'.join(_f(m[f'leading_ms_{q}']) for q in ('p50', 'p95', 'p99', 'max')):>26}  "
            f"{'/'.join(_f(m[f'all_fills_ms_{q}'], 1) for q in ('p50', 'p95', 'p99', 'max')):>29}  "
            f"{_f(m['coalesce_wait_ms_p50'], 0) + '/' + _f(m['coalesce_wait_ms_p95'], 0):>15}  "
            f"{_f(m['processing_ms_p50']) + '/' + _f(m['processing_ms_p95']):>13}  "
            f"{m['max_orders_per_burst'] or '-':>9} {m['max_orders_per_key_2s']:>3} "
            f"{m['max_orders_per_key_2s_wire']:>4} {_f(m['cpu_ms_per_fill']):>8} "
            f"{m['peak_rss_mb']:>6}")
    lines.append("  leading: first fill's ingest -> submit; all fills: each fill's ingest -> its order's submit = wait "
                 "(coalescer release - ingest, the product's design) + proc (submit - release, ours)")
    lines.append("  ord/burst: most orders carrying one fired burst's fills; /2s: most orders on one market/outcome in "
                 "any 2 s by release instant (the coalescer's budget, as `copier report --acceptance` counts); "
                 "wire: the same by submit instant")
    fh = s["scenarios"].get("firehose_mixed_in", {}).get("median", {})
    lines.append(f"firehose: {_f(fh.get('firehose_fills_per_s'), 0)} RTDS fills/s ({_f(fh.get('rtds_frames_per_s'), 0)}"
                 f" frames/s per socket, 2 sockets); copier {_f(fh.get('copier_core_share'))} core, "
                 f"simulator {_f(fh.get('sim_core_share'))} core")
    lead_rx = [sc["median"]["leading_venue_rx_ms_p50"] for sc in s["scenarios"].values()]
    lines.append(f"leading ingest -> simulator handler rx p50 per scenario: {', '.join(_f(v) for v in lead_rx)}")
    lines.append("")
    lines.append(f"what the orders got (copied means filled; budget execution.max_slippage_bps "
                 f"{out['summary']['slippage_bps']}):")
    for phase, info in out["summary"]["phases"].items():
        fq = info["fills"]
        slip = fq["slippage_bps"]
        lines.append(f"  {phase:9} filled {_f(fq['filled_pct'], 1)}% of the intended notional ({_f(fq['filled_usd'])}"
                     f" of {_f(fq['intended_usd'])} USD); orders {fq['orders_sent']} sent, {fq['orders_killed']} "
                     f"killed with nothing, {fq['orders_partial']} partial, {fq['remainder_orders']} remainders; "
                     f"{fq['no_liquidity_intents']} refused for no liquidity; slippage bps BUY p50/p95 "
                     f"{_f(slip['BUY']['p50'], 0)}/{_f(slip['BUY']['p95'], 0)}, SELL p50/p95 "
                     f"{_f(slip['SELL']['p50'], 0)}/{_f(slip['SELL']['p95'], 0)} (+ is worse)")
    lines.append("")
    lines.append("sustained-rate ramp (source fills/s, with the firehose):")
    for i, steps in enumerate(s["ramps"]):
        parts = [f"{st['target_rate']}/s {st['why'] if st['held'] else 'FAILED: ' + st['why']} "
                 f"(offered {st['fire_rate']}/s, ingest wait p99 by third "
                 f"{'/'.join(_f(v, 1) for v in st['ingest_wait_p99_by_third_ms'])}, "
                 f"q.hw {_f(st['queue_peak_ingest'], 0)}, "
                 f"copier {st['copier_core_share']:.2f} / sim {st['sim_core_share']:.2f} core)" for st in steps]
        lines.append(f"  run {i + 1}: " + "; ".join(parts))
    top = "the highest step tested: the limit is higher" if s["all_steps_held"] else "the step above it failed"
    lines.append(f"  highest sustained per run: {s['highest_sustained']} -> median {_med(s['highest_sustained'])}/s "
                 f"({top})" + (f"; {s['ramp_steps_cut']} ramp(s) cut short by the time budget"
                               if s["ramp_steps_cut"] else ""))
    lines.append("")
    lines.append("stage timings, median over runs of p50 / p99 / max (ms):      quiet                       firehose")
    for st in (*STAGES, "pre_post_sqlite", *GC_ROWS):
        q, f = s["stages_ms"]["quiet"][st], s["stages_ms"]["firehose"][st]
        lines.append(f"  {st:18} {_f(q['p50'], 3):>8} {_f(q['p99'], 3):>8} {_f(q['max'], 3):>8} (n={q.get('n', '-')})"
                     f"   {_f(f['p50'], 3):>8} {_f(f['p99'], 3):>8} {_f(f['max'], 3):>8} (n={f.get('n', '-')})")
    lines.append("")
    lines.append("targets:")
    for v in s["verdict"]:
        value = _f(v["value"]) if isinstance(v["value"], float) else v["value"]
        lines.append(f"  {'MET    ' if v['met'] else 'NOT MET'} {v['target']:42} measured {value}"
                     + (f"  ({v['note']})" if v.get("note") else ""))
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "worker/copier"]).returncode != 0
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rates", default="200,400,600", help="ramp of source fills/s, stops at the first failure")
    p.add_argument("--step-s", type=float, default=4.0, help="seconds per ramp step")
    p.add_argument("--profile", action="store_true", help="run the copier under pyinstrument (profile.txt per phase)")
    p.add_argument("--chain-feeds", action="store_true", help="also race the Polygon logs and mempool feeds")
    p.add_argument("--budget-s", type=float, default=230.0, help="no ramp step starts later than this (s)")
    p.add_argument("--slippage-bps", type=int, default=120,
                   help="execution.max_slippage_bps of the copier under test (default: the PRD's 120)")
    args = p.parse_args(argv)
    WORKDIR.mkdir(parents=True, exist_ok=True)
    for d in ("quiet", "firehose"):
        for f in (WORKDIR / d).glob("*") if (WORKDIR / d).exists() else ():
            if f.is_file():
                f.unlink()
    t0 = time.monotonic()
    raw = run(args.repeats, [int(x) for x in args.rates.split(",")], args.step_s, args.profile, args.chain_feeds,
              args.budget_s, args.slippage_bps)
    summary = summarise(raw, args.repeats)
    out = {"ts": time.time(), "commit": _commit(), "repeats": args.repeats, "profile": args.profile,
           "chain_feeds": args.chain_feeds,
           "wall_s": time.monotonic() - t0, "summary": summary}
    text = json.dumps(out, indent=1, default=list)
    (WORKDIR / "results.json").write_text(text)
    with open(WORKDIR / "history.jsonl", "a") as h:
        h.write(json.dumps({"ts": out["ts"], "commit": out["commit"], "wall_s": out["wall_s"],
                            "verdict": summary["verdict"], "stages_ms": summary["stages_ms"],
                            "scenarios": {k: v["median"] for k, v in summary["scenarios"].items()},
                            "highest_sustained": summary["highest_sustained"]}) + "\n")
    print(render(out))
    if args.profile:
        for d in ("quiet", "firehose"):
            folded = WORKDIR / d / "profile.folded"
            if folded.exists():
                text = profile_summary(folded)
                (WORKDIR / d / "profile.txt").write_text(text + "\n")
                print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
