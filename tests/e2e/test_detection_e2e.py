"""Racing feeds against the simulator through real websockets: RTDS, Polygon logs and the mempool at their default
delays (reference §7e), a dead mempool, and reorgs of copied fills."""
import json
import signal
import sqlite3

from polylab.harness import (
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


def _start(sim, tmp_path, overrides=None, env=None):
    cfg = copier_config(sim.urls, tmp_path / "copier.sqlite", speed=900 / sim.window_s, overrides=overrides)
    assert cfg["feeds"]["use_mempool"] and cfg["feeds"]["use_chain_logs"]
    config = write_config(tmp_path / "copier.yaml", cfg)
    env_file = write_env_file(tmp_path / "copier.env", env) if env else None
    proc = start_copier(config, tmp_path / "copier.log", env_file)
    eventually(lambda: sim.chain("state")["subscriptions"] >= 2, 30, 0.2, "the copier's chain subscriptions")
    eventually(lambda: sim.state()["rtds_clients"] >= 1, 30, 0.2, "the copier's RTDS subscription")
    return config, proc


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def _feed(rep, name) -> dict:
    return rep["detection"]["feeds"].get(name, {"first": 0, "seen": 0, "confirmed_only": 0})


def test_mempool_leads_rtds_and_logs_confirm_and_a_dead_mempool_loses_nothing(sim, tmp_path):
    config, proc = _start(sim, tmp_path)
    try:
        sim.fresh_window(30)
        sent = [sim.source_fill(asset=("btc", "eth")[n % 2], outcome=("Up", "Down")[n // 2 % 2], side="BUY",
                                size=6 + n) for n in range(6)]

        def raced(r):
            return (r["detection"]["fills"] >= 6 and _feed(r, "chain.logs")["seen"] >= 6
                    and _feed(r, "rtds.trades")["seen"] >= 6 and r["eligible_fills"] >= 6 and r)
        rep = eventually(lambda: raced(_report(config)), 30, 0.5, "six fills seen on every feed and copied")
        mempool = _feed(rep, "chain.mempool")
        assert mempool["first"] >= 4 and mempool["first_share"] > 0.5            # most fills: the mempool first
        assert _feed(rep, "rtds.trades")["confirmed_only"] >= 4 and _feed(rep, "chain.logs")["confirmed_only"] >= 4
        assert 300 <= rep["detection_lag_ms"]["p50"] <= 1200                    # near the 0.65 s mempool delay
        assert mempool["lag_ms"]["p50"] < _feed(rep, "rtds.trades")["lag_ms"]["p50"]

        sim.chain("faults", mempool_silent=True)                                 # connected, but nothing comes
        sent += [sim.source_fill(asset=("btc", "eth")[n % 2], outcome="Up", side="BUY", size=7) for n in range(4)]
        rep = eventually(lambda: (r := _report(config))["eligible_fills"] >= 10 and r, 30, 0.5, "the later decisions")
    finally:
        _stop(proc)
    # Every fill decided into an order (or refused only for want of liquidity: a question of the book, not of
    # detection); whether each one filled is the book's business (make soak judges that).
    assert rep["source_fills"] == rep["eligible_fills"] == 10
    others = sum(_feed(rep, f)["first"] for f in ("rtds.trades", "rtds.orders_matched", "chain.logs"))
    assert others >= 4 and rep["orders_per_intent_max"] == 1                  # the silenced fills came anyway
    stored = {tx for (tx,) in sqlite3.connect(tmp_path / "copier.sqlite").execute("select tx_hash from fills")}
    truth = {e["tx_hash"] for e in sim.ground_truth_events() if e["kind"] == "source_fill"}
    assert {s["tx_hash"] for s in sent} == truth == stored                      # no fill missed, none invented


def test_reorged_copied_fills_reincluded_once_or_retracted_and_alerted(sim, tmp_path):
    sentry = SentrySink(tmp_path / "sentry.envelopes")
    config, proc = _start(sim, tmp_path, overrides={"feeds": {"reinclude_timeout_s": 3.0}},
                          env={"SENTRY_DSN": sentry.dsn})
    db = sqlite3.connect(tmp_path / "copier.sqlite")

    def copied_and_mined(tx):
        def check():
            r = _report(config)
            rows = db.execute("select count(*) from fills f join orders o on o.intent_id = f.intent_id "
                              "where f.tx_hash = ?", (tx,)).fetchone()[0]
            return rows == 1 and r["detection"]["feeds"].get("chain.logs", {}).get("seen", 0) >= seen_logs[0] + 1
        return check

    try:
        sim.fresh_window(40)
        seen_logs = [0]
        back = sim.source_fill(asset="btc", outcome="Up", side="BUY", size=9)
        eventually(copied_and_mined(back["tx_hash"]), 30, 0.3, "the first fill copied and mined")
        sim.chain("reorg", tx_hash=back["tx_hash"])
        eventually(lambda: _report(config)["detection"]["reincluded"] >= 1, 20, 0.3, "the log back in a block")

        seen_logs = [1]
        gone = sim.source_fill(asset="eth", outcome="Down", side="BUY", size=11)
        eventually(copied_and_mined(gone["tx_hash"]), 30, 0.3, "the second fill copied and mined")
        sim.chain("reorg", tx_hash=gone["tx_hash"], drop=True)
        rep = eventually(lambda: (r := _report(config))["detection"]["retracted"] and r, 20, 0.3, "the retraction")
        eventually(lambda: b"source_fill_retracted" in (tmp_path / "sentry.envelopes").read_bytes(), 15, 0.3,
                   "the Sentry alert")
        text = run_copier("report", "--config", str(config)).stdout
    finally:
        _stop(proc)
    det = rep["detection"]
    assert det["removed"] == 2 and det["reincluded"] == 1 and det["retracted"] == {"reorged_out": 1}
    [retracted] = det["retracted_copied"]
    assert retracted["dedupe_key"].startswith(gone["tx_hash"]) and "RETRACTED COPIED" in text
    for tx in (back["tx_hash"], gone["tx_hash"]):                               # one fill, one order, each
        assert db.execute("select count(*) from fills where tx_hash = ?", (tx,)).fetchone()[0] == 1
    assert rep["orders"] - rep["remainder_orders"] == 2 and rep["orders_per_intent_max"] == 1


def test_random_reorgs_never_copy_a_fill_twice(tmp_path):
    sim = SimProcess(tmp_path / "sim", speed=6.0, seed=4, extra_args=("--reorg-rate", "0.5"))
    try:
        config, proc = _start(sim, tmp_path)
        try:
            sim.fresh_window(30)
            reorgs = sim.chain("state")["counters"]["reorgs"]
            sent = [sim.source_fill(asset=("btc", "eth")[n % 2], outcome=("Up", "Down")[n // 3 % 2], side="BUY",
                                    size=5 + n % 4) for n in range(16)]
            # Whether the block holding them is among the reorged ones is chance (the reorg test above forces it).
            rep = eventually(lambda: (r := _report(config))["eligible_fills"] >= 16
                             and _feed(r, "chain.logs")["seen"] >= 16
                             and r["detection"]["removed"] == r["detection"]["reincluded"]
                             and sim.chain("state")["counters"]["reorgs"] >= reorgs + 2
                             and r, 40, 0.5, "every fill decided and mined while blocks reorg")
        finally:
            _stop(proc)
        assert rep["source_fills"] == rep["eligible_fills"] == 16 and rep["orders_per_intent_max"] == 1
        assert not rep["detection"]["retracted"] and not rep["acceptance"]["failures"].get("duplicate_executions")
        db = sqlite3.connect(tmp_path / "copier.sqlite")
        # Never two orders for one decision; every first order decided was sent (a decision refused for want of
        # liquidity sends none, and a remainder decided as the copier stopped may not have been).
        orders, distinct = db.execute("select count(*), count(distinct intent_id) from orders").fetchone()
        unsent = db.execute("select count(*) from intents i left join orders o on o.intent_id = i.intent_id"
                            " where i.decision = 'order' and i.parent_id = '' and o.id is null").fetchone()[0]
        firsts = db.execute("select count(*) from intents where parent_id = ''").fetchone()[0]
        assert orders == distinct and not unsent and firsts <= 16 and {f["tx_hash"] for f in sent} == {
            e["tx_hash"] for e in sim.ground_truth_events() if e["kind"] == "source_fill"}
    finally:
        sim.stop()
