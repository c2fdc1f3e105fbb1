"""Automatic redemption by the live copier against the simulator's Polygon node: the copier holds winning tokens, the
market resolves, the copier approves the adapter and redeems exactly once (the simulator's ground truth), also when
its answer from the node is lost and it is killed -9 in the middle of the redemption."""
import json
import signal
import sqlite3
import time

import httpx
from eth_account import Account

from polylab.harness import (
    SIM_PRIVATE_KEY,
    SimProcess,
    copier_config,
    eventually,
    start_copier,
    write_config,
    write_env_file,
)

ME = Account.from_key(SIM_PRIVATE_KEY).address.lower()
ADAPTER = "0xada100db00ca00073811820692005400218fce1f"


def _actions(db) -> list[dict]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("select * from chain_actions order by id")]
        con.close()
        return rows
    except sqlite3.OperationalError:          # not created yet
        return []


def _our_fills(sim) -> dict[str, tuple[str, str]]:
    """condition -> (slug, outcome) of every market our wallet bought in."""
    return {e["condition_id"]: (e["slug"], e["outcome"]) for e in sim.ground_truth_events()
            if e["kind"] == "fill" and e["wallet"] == ME and e["side"] == "BUY"}


def _winning_left(sim) -> list[dict]:
    doc = httpx.get(f"{sim.urls['control']}/wallets/{ME}", timeout=5).json()
    return [p for p in doc.get("positions", []) if p.get("redeemable")]


def _run(tmp_path, kill_during_redemption: bool, restart_in_a_later_window: bool = False) -> None:
    sim = SimProcess(tmp_path / "sim", speed=30.0, seed=23)
    db = tmp_path / "copier.sqlite"
    config = write_config(tmp_path / "copier.yaml", copier_config(
        sim.urls, db, dry_run=False, speed=30.0,
        overrides={"execution": {"dry_run": False, "max_slippage_bps": 500, "near_expiry_cutoff_seconds": 1.0}}))
    env = write_env_file(tmp_path / "copier.env", {"POLY_PRIVATE_KEY": SIM_PRIVATE_KEY})
    proc = start_copier(config, tmp_path / "copier.log", env)
    try:
        sim.fresh_window(18)
        for _ in range(4):
            sim.source_fill(asset="btc", outcome="Up", side="BUY", size=10)
            time.sleep(0.3)
        bought = eventually(lambda: _our_fills(sim), 30, 0.3, "a filled copy")
        (cid, (slug, outcome)), = bought.items()
        if kill_during_redemption:
            sim.faults(rpc_lost_answer={"count": 2})     # the node applies the next two sends, the answers are lost
        if restart_in_a_later_window:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        r = httpx.post(f"{sim.urls['control']}/resolve", json={"condition_id": cid, "winner": outcome}, timeout=5)
        assert r.status_code == 200, r.text
        if restart_in_a_later_window:
            # Started after its window: the catalog never warms this market, Gamma hides it unless asked for
            # closed markets.
            time.sleep(sim.window_s - time.time() % sim.window_s + 1)
            proc = start_copier(config, tmp_path / "copier.log", env)
        if kill_during_redemption:
            eventually(lambda: any('"redeem"' in a["calls"] and a["status"] in ("SIGNED", "SENT")
                                   for a in _actions(db)), 60, 0.02, "a redemption in flight")
            proc.kill()                                  # kill -9 between signing and the receipt
            proc.wait(5)
            proc = start_copier(config, tmp_path / "copier.log", env)
        eventually(lambda: _redemptions(sim.ground_truth_events()).get(cid), 60, 0.3, "the redemption on chain")
        eventually(lambda: any('"redeem"' in a["calls"] and a["status"] == "CONFIRMED" for a in _actions(db)), 30,
                   0.3, "the store's confirmed redemption")
        time.sleep(4)                                    # several more passes: nothing more may be sent
        assert _winning_left(sim) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        events = sim.ground_truth_events()
        sim.stop()
    (red,) = _redemptions(events)[cid]                # exactly one redemption of the market
    assert red["via"] == "eoa" and red["payout_units"] > 0 and int(red["gas_paid_wei"]) > 0
    # No second transaction to the adapter from our wallet, whatever it would have done.
    ours = [e for e in events if e["kind"] == "chain_tx" and e["sender"] == ME]
    assert [e["to"] for e in ours].count(ADAPTER) == 1 and len(ours) == 2          # the approval and the redemption
    assert all(e["status"] == 1 for e in ours)
    rows = _actions(db)
    assert [(json.loads(a["calls"])[0]["kind"], a["status"]) for a in rows] == [("approve", "CONFIRMED"),
                                                                                ("redeem", "CONFIRMED")]
    assert rows[1]["tx_hash"] == red["tx_hash"]


def _redemptions(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        if e["kind"] == "redemption" and e["wallet"] == ME:
            out.setdefault(e["condition_id"], []).append(e)
    return out


def test_live_copier_restarted_after_the_window_redeems_a_resolved_winner_exactly_once(tmp_path):
    _run(tmp_path, kill_during_redemption=False, restart_in_a_later_window=True)


def test_live_copier_killed_during_redemption_still_redeems_exactly_once(tmp_path):
    _run(tmp_path, kill_during_redemption=True)
