"""The copier as a real process against the simulator: real websockets, real HTTP, real signatures, real sqlite."""
import json
import signal
import sqlite3

from polylab.harness import (
    SIM_PRIVATE_KEY,
    SimProcess,
    copier_config,
    eventually,
    run_copier,
    start_copier,
    write_config,
    write_env_file,
)
from polylab.soak import SentrySink


def _report(config) -> dict:
    out = run_copier("report", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _started(config) -> bool:
    out = run_copier("status", "--config", str(config), "--json")
    return out.returncode == 0 and json.loads(out.stdout).get("heartbeat") is not None


def _burst(sim, n=6, outcome="Up"):
    return [sim.source_fill(asset="btc", outcome=outcome, side="BUY", size=8) for _ in range(n)]


def test_dry_run_copies_a_burst_with_at_most_two_orders(sim, tmp_path):
    config = write_config(tmp_path / "copier.yaml",
                          copier_config(sim.urls, tmp_path / "copier.sqlite", speed=900 / sim.window_s))
    proc = start_copier(config, tmp_path / "copier.log")
    try:
        eventually(lambda: _started(config), 30, 0.3, "copier heartbeat")
        sim.fresh_window(20)
        sim.source_fill(asset="eth", outcome="Down", side="BUY", size=12)
        _burst(sim)
        rep = eventually(lambda: (r := _report(config))["eligible_fills"] >= 7 and r["orders"] >= 2 and r, 30, 0.5,
                         "the copies")
        assert rep["source_fills"] == 7
        assert rep["orders_per_intent_max"] == 1
        assert rep["acceptance"]["failures"].get("bursts") is None
        assert rep["eligible_fills"] == 7                  # every fill decided (filled or not is the book's business)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    # Every fill can be followed through its stages by its correlation id.
    lines = [json.loads(x) for x in (tmp_path / "copier.log").read_text().splitlines() if x.startswith("{")]
    received = [x["cid"] for x in lines if x["msg"] == "fill received"]
    assert len(received) == 7
    for cid in received:
        stages = [x["msg"].split(" ")[:2] for x in lines if isinstance(x.get("cid"), list) and cid in x["cid"]]
        assert [s[0] for s in stages] == ["decision", "paper", "order"], (cid, stages)


def test_live_orders_survive_kill_9_without_a_duplicate(sim, tmp_path):
    config = write_config(tmp_path / "copier.yaml",
                          copier_config(sim.urls, tmp_path / "copier.sqlite", dry_run=False, speed=900 / sim.window_s))
    env = write_env_file(tmp_path / "copier.env", {"POLY_PRIVATE_KEY": SIM_PRIVATE_KEY})
    proc = start_copier(config, tmp_path / "copier.log", env)
    try:
        eventually(lambda: _started(config), 30, 0.3, "copier heartbeat")
        sim.fresh_window(35)
        for _ in range(3):
            _burst(sim, 3, "Up")
        eventually(lambda: _report(config)["orders"] >= 1, 30, 0.3, "the first live order")
        proc.kill()                                   # kill -9 mid-stream
        proc.wait(5)
        _burst(sim, 2, "Down")
        proc = start_copier(config, tmp_path / "copier.log", env)
        eventually(lambda: _report(config)["source_fills"] >= 11, 40, 0.5, "the gap-filled fills after restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    rep = _report(config)
    assert rep["orders_per_intent_max"] == 1
    ours = {h for (h,) in sqlite3.connect(tmp_path / "copier.sqlite").execute("select order_hash from orders")}
    executed = [e["order_hash"] for e in sim.ground_truth_events()
                if e["kind"] == "order" and float(e.get("filled_size") or 0) > 0]
    assert executed, "no live order executed at the venue"
    assert len(executed) == len(set(executed)), "an order hash executed twice"
    assert set(executed) <= ours, "the venue executed an order the copier's store does not know"


def test_an_account_that_cannot_pay_a_full_order_is_alerted_at_start(tmp_path):
    """The simulator funds new API wallets with 3 pUSD: less than one 25-dollar order. It answers the signed
    GET /balance-allowance only if the L2 signature (over the path without its query) verifies."""
    sim = SimProcess(tmp_path / "sim", speed=6.0, seed=12, extra_args=("--balance", "3"))
    envelopes = tmp_path / "sentry.envelopes"
    sentry = SentrySink(envelopes)
    config = write_config(tmp_path / "copier.yaml",
                          copier_config(sim.urls, tmp_path / "copier.sqlite", dry_run=False, speed=900 / sim.window_s))
    env = write_env_file(tmp_path / "copier.env", {"POLY_PRIVATE_KEY": SIM_PRIVATE_KEY, "SENTRY_DSN": sentry.dsn})
    proc = start_copier(config, tmp_path / "copier.log", env)
    try:
        eventually(lambda: b"low_balance" in envelopes.read_bytes(), 30, 0.3, "the low-balance alert")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        sim.stop()
    sent = envelopes.read_bytes()
    alerts = [e for e in sent.split(b"\n") if b"low_balance" in e]
    assert len(alerts) == 1 and b"pUSD balance 3.00 < sizing.max_notional_per_order_usd 25" in alerts[0]
    assert b"low_allowance" not in sent                                             # the simulator approves all
    log = (tmp_path / "copier.log").read_text()
    assert "balance-allowance check failed" not in log and "funding: pUSD balance 3.00" in log
