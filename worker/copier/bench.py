"""`make bench`: latency of the real copier process, stage by stage, against the simulator on loopback.

Live-signing mode: real EIP-712 signatures and real HTTP POSTs. Delays come from the copier's own store (exact
persisted timestamps); per-stage timings from the StatsD packets it sends; CPU and peak RSS from /proc.
Results go to var/bench/results.json for comparison across commits.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from copier.harness import (SIM_PRIVATE_KEY, SimProcess, copier_config, eventually, run_copier, start_copier,
                            write_config, write_env_file)
from copier.report import percentile
from copier.soak import StatsdSink, derive_creds

WORKDIR = Path("var/bench")
CLK_TCK = 100


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, peak RSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def parse_statsd(path: Path, prefix: str = "copier.") -> dict[str, list[float]]:
    timings: dict[str, list[float]] = defaultdict(list)
    if not path.exists():
        return timings
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        for metric in line.split("\n"):
            name, _, rest = metric.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("ms") and name.startswith(prefix):
                try:
                    timings[name[len(prefix):]].append(float(value))
                except ValueError:
                    pass
    return timings


def dist(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values)}


class Bench:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.sim = SimProcess(workdir, speed=1.0, seed=3, extra_args=("--balance", "100000000"))
        creds = derive_creds(self.sim.urls["clob"])
        self.statsd = StatsdSink(workdir / "statsd.packets")
        env = write_env_file(workdir / "copier.env", {
            "POLY_PRIVATE_KEY": SIM_PRIVATE_KEY, "POLY_API_KEY": creds[0], "POLY_API_SECRET": creds[1],
            "POLY_API_PASSPHRASE": creds[2]})
        big = 1e9
        self.config = write_config(workdir / "copier.yaml", copier_config(
            self.sim.urls, workdir / "copier.sqlite", dry_run=False, statsd_port=self.statsd.port, overrides={
                "sizing": {"max_notional_per_order_usd": 50.0, "max_notional_per_market_usd": big,
                           "max_total_notional_per_15m_window_usd": big, "min_order_notional_usd": 0.5},
                "risk": {"max_daily_notional_usd": big, "breaker_max_error_rate": 1.0, "breaker_max_p95_ms": 1e9},
                "execution": {"max_slippage_bps": 500, "near_expiry_cutoff_seconds": 5.0},
                "telemetry": {"log_level": "WARNING"}}))
        self.proc = start_copier(self.config, workdir / "copier.log", env)
        eventually(self._started, 60, 0.3, "copier heartbeat")
        self.pool = ThreadPoolExecutor(16)

    def _started(self) -> bool:
        out = run_copier("status", "--config", str(self.config), "--json")
        return out.returncode == 0 and json.loads(out.stdout).get("heartbeat") is not None

    def fire(self, asset: str, outcome: str, side: str = "BUY", size: float = 5.0):
        return self.pool.submit(self.sim.source_fill, asset=asset, outcome=outcome, side=side, size=size)

    def store_delays(self, since_ns: int) -> dict:
        import sqlite3
        db = sqlite3.connect(self.workdir / "copier.sqlite")
        rows = db.execute("""select f.recv_ns, i.kind, o.submit_ns, i.intent_id from fills f
                             join intents i on i.intent_id = f.intent_id
                             join orders o on o.intent_id = i.intent_id
                             where f.recv_ns >= ? and o.submit_ns > 0""", (since_ns,)).fetchall()
        n_fills = db.execute("select count(*) from fills where recv_ns >= ?", (since_ns,)).fetchone()[0]
        db.close()
        all_ms = [(s - r) / 1e6 for r, _, s, _ in rows]
        first: dict[str, tuple[int, int, str]] = {}
        for r, kind, s, iid in rows:
            if kind in ("leading", "single") and (iid not in first or r < first[iid][0]):
                first[iid] = (r, s, kind)
        leading_ms = [(s - r) / 1e6 for r, s, _ in first.values()]
        intents = {iid for *_, iid in rows}
        return {"fills": n_fills, "copied_fills": len(rows), "orders": len(intents),
                "leading_ms": dist(leading_ms), "all_fills_ms": dist(all_ms)}

    def scenario(self, name: str, body, settle_s: float = 6.0) -> dict:
        since = time.time_ns()
        cpu0, _ = proc_stats(self.proc.pid)
        t0 = time.monotonic()
        sent = body()
        time.sleep(settle_s)        # RTDS delivery delay plus the coalescer's trailing window
        cpu1, rss = proc_stats(self.proc.pid)
        res = self.store_delays(since)
        res.update(name=name, source_fills_sent=sent, wall_s=round(time.monotonic() - t0, 2),
                   cpu_ms_per_fill=round((cpu1 - cpu0) * 1000 / max(1, res["fills"]), 3), peak_rss_mb=rss >> 20)
        return res

    def trickle(self, n=30, gap=0.3):
        def body():
            for i in range(n):
                self.fire("btc" if i % 2 else "eth", "Up" if i % 3 else "Down").result()
                time.sleep(gap)
            return n
        return self.scenario("steady_trickle", body)

    def bursts(self, n_bursts=6, per_burst=8):
        counts = []

        def body():
            for b in range(n_bursts):
                for _ in range(per_burst):
                    self.fire("btc", "Up" if b % 2 else "Down").result()
                    time.sleep(1.0 / per_burst)
                time.sleep(3.0)
            return n_bursts * per_burst
        res = self.scenario("prd_bursts", body)
        res["orders_per_burst"] = round(res["orders"] / n_bursts, 2)
        return res

    def mixed(self, rounds=4):
        def body():
            for _ in range(rounds):
                futures = [self.fire(a, o) for _ in range(6) for a in ("btc", "eth") for o in ("Up", "Down")]
                for f in futures:
                    f.result()
                time.sleep(3.0)
            return rounds * 24
        return self.scenario("mixed_bursts", body)

    def rate(self, per_s: int, seconds: float = 8.0):
        def body():
            n, t0 = 0, time.monotonic()
            futures = []
            while time.monotonic() - t0 < seconds:
                futures.append(self.fire(("btc", "eth")[n % 2], ("Up", "Down")[(n // 2) % 2], size=5))
                n += 1
                time.sleep(max(0.0, t0 + n / per_s - time.monotonic()))
            for f in futures:
                f.result()
            return n
        return self.scenario(f"firehose_{per_s}_per_s", body, settle_s=8.0)

    def close(self):
        self.proc.terminate()
        self.proc.wait(20)
        self.sim.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench")
    p.add_argument("--rates", default="50,100,200")
    args = p.parse_args(argv)
    WORKDIR.mkdir(parents=True, exist_ok=True)
    for f in WORKDIR.iterdir():
        if f.is_file():
            f.unlink()
    b = Bench(WORKDIR)
    results = []
    try:
        results.append(b.trickle())
        results.append(b.bursts())
        results.append(b.mixed())
        for r in [int(x) for x in args.rates.split(",")]:
            results.append(b.rate(r))
    finally:
        b.close()
    stages = {k: dist(v) for k, v in sorted(parse_statsd(WORKDIR / "statsd.packets").items())
              if k.startswith("stage.")}
    sustained = max((int(r["name"].split("_")[1]) for r in results if r["name"].startswith("firehose")
                     and r["fills"] >= 0.99 * r["source_fills_sent"] and r["all_fills_ms"].get("p95", 1e9) < 1000),
                    default=0)
    out = {"ts": time.time(), "commit": _commit(), "scenarios": results, "stages_ms": stages,
           "sustained_fills_per_s": sustained}
    (WORKDIR / "results.json").write_text(json.dumps(out, indent=2))
    print(render(out))
    return 0


def render(out: dict) -> str:
    def d(x):
        return "n=0" if not x.get("n") else f"{x['p50']:.2f}/{x['p95']:.2f}/{x['p99']:.2f}/{x['max']:.2f}"
    lines = [f"{'scenario':24} {'fills':>6} {'orders':>6} {'leading p50/p95/p99/max ms':>30} "
             f"{'all fills p50/p95/p99/max ms':>32} {'cpu ms/fill':>11} {'rss MB':>7}"]
    for r in out["scenarios"]:
        lines.append(f"{r['name']:24} {r['fills']:>6} {r['orders']:>6} {d(r['leading_ms']):>30} "
                     f"{d(r['all_fills_ms']):>32} {r['cpu_ms_per_fill']:>11} {r['peak_rss_mb']:>7}")
        if "orders_per_burst" in r:
            lines.append(f"{'':24} orders per burst: {r['orders_per_burst']}")
    lines.append("stage timings ms (p50/p95/p99/max):")
    for k, v in out["stages_ms"].items():
        lines.append(f"  {k:28} {d(v)}  (n={v['n']})")
    lines.append(f"highest sustained source-fill rate tested without loss: {out['sustained_fills_per_s']}/s")
    return "\n".join(lines)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
