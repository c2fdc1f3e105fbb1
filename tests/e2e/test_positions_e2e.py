"""Positions and PnL end to end: the copier live against the simulator copies buys, exits half when the source sells
half, the markets resolve, and `copier report`'s realised PnL equals the PnL computed independently from the
simulator's ground truth for our wallet (same run)."""
import json
import signal
import sqlite3
import time

from eth_account import Account

from copier.store import Store
from copier.types import OrderIntent, OrderStatus, Side, SourceFill
from polylab.harness import (
    SIM_PRIVATE_KEY,
    copier_config,
    eventually,
    run_copier,
    start_copier,
    write_config,
    write_env_file,
)
from polylab.soak import SentrySink

OUR_WALLET = Account.from_key(SIM_PRIVATE_KEY).address.lower()
CENT = 0.01


def _report(config) -> dict:
    out = run_copier("report", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _started(config) -> bool:
    out = run_copier("status", "--config", str(config), "--json")
    return out.returncode == 0 and json.loads(out.stdout).get("heartbeat") is not None


def _settled(db, side) -> list[tuple[str, float]]:
    """(asset, filled shares) of our final orders on one side."""
    with sqlite3.connect(db) as con:
        return con.execute(
            "select i.asset, o.filled_size from orders o join intents i using (intent_id) where i.side = ? and "
            "o.status not in ('SIGNED', 'POSTING', 'UNKNOWN', 'LIVE', 'DELAYED')", (side,)).fetchall()


def truth_pnl(events, wallet) -> tuple[float, dict[str, float]]:
    """Realised PnL of `wallet` once every market it traded resolved, from the ground truth alone: the pUSD its
    fills moved (trades that failed count for nothing) plus 1 per winning token it still holds."""
    failed = {e["trade_id"] for e in events if e["kind"] == "trade" and e["status"] == "FAILED"}
    fills = [e for e in events if e["kind"] == "fill" and e["wallet"].lower() == wallet and e["trade_id"] not in failed]
    winners = {e["condition_id"]: e["winner"] for e in events if e["kind"] == "market" and e["state"] == "resolved"}
    held: dict[tuple[str, str, str], float] = {}
    per_market: dict[str, float] = {}
    for f in fills:
        key = (f["condition_id"], f["token_id"], f["outcome"])
        held[key] = held.get(key, 0.0) + (f["size"] if f["side"] == "BUY" else -f["size"])
        per_market[f["condition_id"]] = per_market.get(f["condition_id"], 0.0) + f["cash"]
    for (cid, _, outcome), size in held.items():
        assert cid in winners, f"market {cid} not resolved in the ground truth"
        if winners[cid] == outcome:
            per_market[cid] += size
    return sum(per_market.values()), per_market


def test_live_copies_exit_by_fraction_and_report_pnl_equals_the_ground_truth(sim, tmp_path):
    db = tmp_path / "copier.sqlite"
    config = write_config(tmp_path / "copier.yaml", copier_config(
        sim.urls, db, dry_run=False, speed=900 / sim.window_s,
        overrides={"positions": {"reconcile_interval_s": 2.0, "snapshot_interval_s": 1.0, "resolution_check_s": 2.0,
                                 "reconcile_grace_s": 5.0}}))
    env = write_env_file(tmp_path / "copier.env", {"POLY_PRIVATE_KEY": SIM_PRIVATE_KEY})
    proc = start_copier(config, tmp_path / "copier.log", env)
    try:
        eventually(lambda: _started(config), 30, 0.3, "copier heartbeat")
        sim.fresh_window(90)
        btc = sim.source_fill(asset="btc", outcome="Up", side="BUY", size=20)
        eth = sim.source_fill(asset="eth", outcome="Down", side="BUY", size=16)
        sim.source_fill(asset="btc", outcome="Up", side="BUY", size=20, window=btc["slug"])
        bought = eventually(lambda: (b := _settled(db, "BUY")) and len(b) >= 3 and b, 40, 0.5, "our three buys")
        ours_btc = sum(size for asset, size in bought if asset == btc["token_id"])
        assert ours_btc > 0, "no BUY of the btc market filled"
        # The source sells half of the 40 shares it holds: we sell half of ours.
        sim.source_fill(asset="btc", outcome="Up", side="SELL", size=20, window=btc["slug"])
        sold = eventually(lambda: _settled(db, "SELL"), 40, 0.5, "our exit")
        with sqlite3.connect(db) as con:
            (intended,) = con.execute("select size from intents where side = 'SELL' and decision = 'order'").fetchone()
        assert abs(intended - ours_btc / 2) <= 0.01 + 1e-9, (intended, ours_btc)
        assert sum(size for _, size in sold) <= ours_btc / 2 + 1e-9
        for market, winner in ((btc, "Up"), (eth, "Up")):
            r = sim.http.post(f"{sim.urls['control']}/resolve", json={"condition_id": market["condition_id"],
                                                                      "winner": winner})
            r.raise_for_status()
        rep = eventually(lambda: (r := _report(config)) and all(m["resolved"] for m in r["pnl"]["markets"])
                         and len(r["pnl"]["markets"]) == 2 and r, 40, 0.5, "both resolutions in the store")
        positions = run_copier("positions", "--config", str(config))
        assert positions.returncode == 0, positions.stderr
        print(positions.stdout)
        assert "redeemable" in positions.stdout            # the btc Up tokens we kept won
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    total, per_market = truth_pnl(sim.ground_truth_events(), OUR_WALLET)
    pnl = rep["pnl"]
    print(json.dumps({"report": pnl["realized_usd"], "truth": round(total, 6), "markets": per_market}))
    assert abs(pnl["realized_usd"] - total) < CENT, (pnl["realized_usd"], total)
    for m in pnl["markets"]:
        assert abs(m["realized_usd"] - per_market[m["condition_id"]]) < CENT, (m, per_market)
    assert pnl["tracked_markets"] == 2 and pnl["tracking_error_pct"] is not None
    text = run_copier("report", "--config", str(config))
    assert "pnl realised" in text.stdout and "tracking error" in text.stdout
    # The reconciliation ran against the venue's index for our address all along and found it agreeing.
    log = (tmp_path / "copier.log").read_text()
    assert "position drift" not in log and "market " + btc["condition_id"] + " resolved" in log


def test_live_drift_from_the_venue_index_is_alerted_to_sentry_and_the_store_kept(sim, tmp_path):
    """The store says we hold 10 shares the venue's index does not list (a store restored from another wallet's
    backup, say): the reconciliation at start alerts it through Sentry, and the store's account is not touched."""
    db = tmp_path / "copier.sqlite"
    cid, token, at = "0x" + "cd" * 32, "987654321", time.time() - 2000
    store = Store.open(str(db))
    fill = SourceFill(tx_hash="0x" + "ee" * 32, asset=token, condition_id=cid, outcome="Up", outcome_index=0,
                      side=Side.BUY, price=0.5, size=10.0, match_ts=at, recv_ns=int(at * 1e9), feed="rtds.trades")
    intent = OrderIntent(intent_id="restored", condition_id=cid, asset=token, outcome="Up", side=Side.BUY, size=10.0,
                         price_cap=0.5, notional=5.0, source_price=0.5, fill_keys=(fill.dedupe_key,), kind="single",
                         decided_at=at, opening=True, market_end_ts=at + 900)
    store.record_decision([fill], intent, int(at * 1e9))
    store.record_signed("restored", "0x" + "ab" * 32, "{}", int(at * 1e9))
    store.update_order("restored", int(at * 1e9), status=OrderStatus.MATCHED, filled_size=10.0, avg_price=0.5,
                       submit_ns=int(at * 1e9), ack_ns=int(at * 1e9))
    store.close()
    envelopes = tmp_path / "sentry.envelopes"
    envelopes.touch()
    sentry = SentrySink(envelopes)
    config = write_config(tmp_path / "copier.yaml", copier_config(sim.urls, db, dry_run=False,
                                                                  speed=900 / sim.window_s))
    env = write_env_file(tmp_path / "copier.env", {"POLY_PRIVATE_KEY": SIM_PRIVATE_KEY, "SENTRY_DSN": sentry.dsn})
    proc = start_copier(config, tmp_path / "copier.log", env)
    try:
        eventually(lambda: b"position_drift" in envelopes.read_bytes(), 30, 0.3, "the drift alert")
        positions = run_copier("positions", "--config", str(config), "--json")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    (alert,) = [e for e in envelopes.read_bytes().split(b"\n") if b"position_drift" in e]
    assert b"store 10.000000 / venue 0.000000" in alert
    assert [(p["asset"], p["size"]) for p in json.loads(positions.stdout)] == [(token, 10.0)]
