"""Nothing leaves after a halt: `copier halt`, a circuit-breaker trip or SIGTERM, observed while the venue is slow and
orders are queued. Measured on the venue's own log: the instant each POST arrived at the simulator's edge."""
import json
import signal
import sqlite3
import time

import pytest

from polylab.harness import (
    SIM_PRIVATE_KEY,
    copier_config,
    eventually,
    run_copier,
    start_copier,
    write_config,
    write_env_file,
)

SLOW_MS = 600                 # every CLOB answer 0.6 s late: 4 executors drain a queue of 24 orders in ~3.6 s
TRANSIT_S = 0.3               # loopback and the simulator's event loop, between our write and its arrival stamp


def _arrivals(sim) -> list[dict]:
    return [e for e in sim.ground_truth_events() if e["kind"] == "order"]


def _started(config) -> bool:
    out = run_copier("status", "--config", str(config), "--json")
    return out.returncode == 0 and json.loads(out.stdout).get("heartbeat") is not None


def _burst(sim, n=24):
    sim.fresh_window(40)
    for k in range(n):
        sim.source_fill(asset=("btc", "eth")[k % 2], outcome=("Up", "Down")[k // 2 % 2], side="BUY", size=6)


def _not_sent(db_path, reason) -> int:
    rows = sqlite3.connect(db_path).execute("select error from orders where status = 'ABANDONED'").fetchall()
    return sum(1 for (error,) in rows if f"not sent: {reason}" in error)


def _halt_instant(db_path) -> float:
    (value,) = sqlite3.connect(db_path).execute("select value from kv where key = 'halt'").fetchone()
    return json.loads(value)["since"]


def _sigterm_instant(log_path) -> float:
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    return next(x["ts"] for x in lines if x["msg"] == "SIGTERM: draining")


@pytest.mark.parametrize("trigger", ["halt", "breaker", "sigterm"])
def test_no_post_reaches_the_venue_after_the_halt_is_observed(sim, tmp_path, trigger):
    overrides = {"copy": {"copy_mode": "fill_by_fill", "burst_window_ms": 0},
                 "execution": {"executor_concurrency": 4, "post_timeout_s": 3.0}}
    if trigger == "breaker":
        # Any measurable delay trips it once three orders are in: the trip lands mid-queue.
        overrides["risk"] = {"breaker_min_orders": 3, "breaker_max_p95_ms": 0.0}
    db = tmp_path / "copier.sqlite"
    config = write_config(tmp_path / "copier.yaml", copier_config(sim.urls, db, dry_run=False,
                                                                   speed=900 / sim.window_s, overrides=overrides))
    env = write_env_file(tmp_path / "copier.env", {"POLY_PRIVATE_KEY": SIM_PRIVATE_KEY})
    log = tmp_path / "copier.log"
    proc = start_copier(config, log, env)
    try:
        eventually(lambda: _started(config), 30, 0.3, "copier heartbeat")
        sim.faults(clob_latency={"ms": SLOW_MS, "seconds": 120})
        _burst(sim)
        eventually(lambda: len(_arrivals(sim)) >= 3, 30, 0.05, "the first orders at the venue")
        if trigger == "halt":
            assert run_copier("halt", "--config", str(config), "--reason", "test").returncode == 0
            observed = time.time()                       # the flag was committed before the command returned
        elif trigger == "breaker":
            observed = eventually(lambda: _halt_instant(db) if _halted(db) else None, 30, 0.05, "the breaker trip")
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
            observed = _sigterm_instant(log)
        time.sleep(SLOW_MS / 1000 * 3 + 1)              # anything still queued would have left by now
        after = [e for e in _arrivals(sim) if e["received_at"] > observed + TRANSIT_S]
        assert after == [], f"{len(after)} POSTs arrived after the {trigger} was observed"
        reason = {"halt": "halted", "breaker": "halted", "sigterm": "stopping"}[trigger]
        assert _not_sent(db, reason) >= 1, "the queue was empty at the halt: the test proved nothing"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    ours = {h for (h,) in sqlite3.connect(db).execute("select order_hash from orders")}
    assert {e["order_hash"] for e in _arrivals(sim) if e["order_hash"]} <= ours


def _halted(db) -> bool:
    return sqlite3.connect(db).execute("select 1 from kv where key = 'halt'").fetchone() is not None
