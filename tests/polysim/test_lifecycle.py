"""A position's life at the venue: the market resolves from the oracle (market channel, Gamma, ground truth agree),
the positions endpoints show it a minute of market time later, the winner is redeemed (by the wallet or the venue's
auto-redeem operator), and the ground truth alone accounts for every pUSD and POL of the wallet."""
import json
import time

import httpx
import pytest
import websocket
from conftest import (
    ADAPTER,
    AUTO_REDEEM_OPERATOR,
    CTF,
    approve_data,
    buy,
    eventually,
    ground_truth,
    merge_data,
    receipt,
    redeem_data,
    resolve,
    send_tx,
    subscribed,
    wallet,
)
from eth_account import Account

KEY_POSITIONS = "0x" + "f1" * 32
KEY_AUTO = "0x" + "f2" * 32
KEY_BOOKS = "0x" + "f3" * 32


def _positions(urls, user: str, **params) -> list[dict]:
    return httpx.get(f"{urls['data_api']}/positions", params={"user": user, "sizeThreshold": 0, **params},
                     timeout=5).json()


def _positions_v2(urls, user: str, **params) -> list[dict]:
    return httpx.get(f"{urls['data_api']}/v2/positions", params={"user": user, **params}, timeout=5).json()["data"]


def test_lifecycle_resolution_agrees_on_the_market_channel_gamma_and_the_ground_truth(fast_sim):
    s = fast_sim
    ws = websocket.create_connection(s["market_ws"], timeout=5)
    try:
        ws.send(json.dumps({"assets_ids": [], "type": "market", "custom_feature_enabled": True}))
        subscribed(ws)
        deadline = time.monotonic() + 30
        event = None
        while event is None and time.monotonic() < deadline:
            text = ws.recv()
            doc = json.loads(text) if text.startswith("{") else None
            event = doc if doc and doc.get("event_type") == "market_resolved" else None
        assert event is not None, "no market_resolved within 30 s"
    finally:
        ws.close()
    (rec,) = [t for t in ground_truth(s) if t["kind"] == "market" and t["state"] == "resolved"
              and t["condition_id"] == event["market"]]
    assert event["winning_outcome"] == rec["winner"] and rec["forced"] is False
    assert rec["winner"] == ("Up" if rec["end_price"] >= rec["start_price"] else "Down")
    m = httpx.get(f"{s['gamma']}/markets", params={"condition_ids": event["market"], "closed": "true"}).json()[0]
    assert m["closed"] is True and m["umaResolutionStatus"] == "resolved"
    assert json.loads(m["outcomePrices"]) == (["1", "0"] if rec["winner"] == "Up" else ["0", "1"])
    assert event["winning_asset_id"] == json.loads(m["clobTokenIds"])[json.loads(m["outcomes"]).index(rec["winner"])]


def test_lifecycle_positions_show_the_resolution_after_the_index_lag_then_the_redemption(life_sim):
    s = life_sim
    me = Account.from_key(KEY_POSITIONS).address
    m = buy(s, KEY_POSITIONS, "Up", 8)
    buy(s, KEY_POSITIONS, "Down", 5, market=m)
    up, down = json.loads(m["clobTokenIds"])
    rows = {p["asset"]: p for p in _positions(s, me)}
    assert rows[up]["mergeable"] is True and rows[up]["redeemable"] is False and 0 < rows[up]["curPrice"] < 1
    assert rows[up]["grossInitialValue"] > rows[up]["initialValue"] > 0                   # taker fees on top
    assert {p["asset"] for p in _positions(s, me, mergeable="true")} >= {up, down}
    resolve(s, m, "Up")
    gamma = httpx.get(f"{s['gamma']}/markets", params={"condition_ids": m["conditionId"], "closed": "true"}).json()
    assert gamma[0]["umaResolutionStatus"] == "resolved" and json.loads(gamma[0]["outcomePrices"]) == ["1", "0"]
    # The index has not seen it yet: no redeemable, the price is the last trade's.
    early = {p["asset"]: p for p in _positions(s, me)}
    assert early[up]["redeemable"] is False and early[up]["curPrice"] not in (0, 1)
    assert _positions_v2(s, me, status="REDEEMABLE") == []
    seen = eventually(lambda: {p["asset"]: p for p in _positions(s, me, redeemable="true")} or None, 10, 0.2,
                      "the index to see the resolution")
    assert set(seen) == {up}                                         # the losing side pays nothing: not redeemable
    win = seen[up]
    assert win["curPrice"] == 1 and win["currentValue"] == pytest.approx(win["size"]) and \
        win["cashPnl"] == pytest.approx(win["size"] - win["initialValue"], abs=1e-6)
    lose = {p["asset"]: p for p in _positions(s, me)}[down]
    assert lose["curPrice"] == 0 and lose["redeemable"] is False and lose["currentValue"] == 0 and \
        lose["mergeable"] is False
    v2 = {p["token_id"]: p for p in _positions_v2(s, me)}
    assert v2[up]["status"] == "REDEEMABLE" and v2[up]["redeemable"] is True and v2[down]["status"] == "OPEN"
    receipt(s, send_tx(KEY_POSITIONS, s, CTF, approve_data(ADAPTER)))
    receipt(s, send_tx(KEY_POSITIONS, s, ADAPTER, redeem_data(m["conditionId"])))
    assert [p for p in _positions(s, me) if p["conditionId"] == m["conditionId"]] == []
    closed = {p["token_id"]: p for p in _positions_v2(s, me, status="CLOSED")}
    assert closed[up]["realized_pnl"] == pytest.approx(win["size"] - win["initialValue"], abs=1e-6)
    assert closed[down]["realized_pnl"] == pytest.approx(-lose["initialValue"], abs=1e-6)


def test_lifecycle_the_auto_redeem_operator_redeems_for_wallets_that_approved_it(life_sim):
    s = life_sim
    me = Account.from_key(KEY_AUTO).address
    httpx.post(f"{s['control']}/wallets/fund", json={"address": me, "approve": [AUTO_REDEEM_OPERATOR]}, timeout=5)
    assert wallet(s, me)["approved_operators"] == [AUTO_REDEEM_OPERATOR]
    m = buy(s, KEY_AUTO, "Down", 6)
    down = json.loads(m["clobTokenIds"])[1]
    held = next(p for p in wallet(s, me)["positions"] if p["token_id"] == down)["units"]
    before = wallet(s, me)
    resolve(s, m, "Down")
    def redeemed() -> dict | None:
        doc = wallet(s, me)
        return doc if all(p["units"] == 0 for p in doc["positions"]) else None
    after = eventually(redeemed, 15, 0.2, "the operator's redemption")
    assert round(after["pusd"] * 1e6) == round(before["pusd"] * 1e6) + held and after["pol_wei"] == before["pol_wei"]
    (red,) = [t for t in ground_truth(s) if t["kind"] == "redemption" and t["wallet"] == me.lower()]
    assert (red["via"], red["operator"], red["payout_units"], red["gas_paid_wei"]) == \
        ("auto", AUTO_REDEEM_OPERATOR, held, "0")


def test_lifecycle_ground_truth_accounts_for_every_pusd_and_pol_of_a_wallet(life_sim):
    """initial + fills (trades that did not fail) + redemptions + merges = the final pUSD, to the micro-dollar;
    initial POL - gas of every mined transaction = the final POL, to the wei."""
    s = life_sim
    me = Account.from_key(KEY_BOOKS).address.lower()
    m = buy(s, KEY_BOOKS, "Up", 9)
    buy(s, KEY_BOOKS, "Down", 4, market=m)
    httpx.post(f"{s['control']}/faults", json={"trade_fail": {"count": 1}}, timeout=5)
    buy(s, KEY_BOOKS, "Up", 3, market=m)                             # settles FAILED and is reverted
    eventually(lambda: any(t["kind"] == "trade" and t["status"] == "FAILED" for t in ground_truth(s)), 10, 0.1,
               "the failed trade")
    receipt(s, send_tx(KEY_BOOKS, s, CTF, approve_data(ADAPTER)))
    sets = min(p["units"] for p in wallet(s, me)["positions"] if p["condition_id"] == m["conditionId"])
    receipt(s, send_tx(KEY_BOOKS, s, ADAPTER, merge_data(m["conditionId"], sets // 2)))
    resolve(s, m, "Up")
    receipt(s, send_tx(KEY_BOOKS, s, ADAPTER, redeem_data(m["conditionId"])))
    time.sleep(0.2)
    truth = ground_truth(s)
    failed = {t["trade_id"] for t in truth if t["kind"] == "trade" and t["status"] == "FAILED"}
    funds = [t for t in truth if t["kind"] == "fund" and t["wallet"] == me]
    fills = [t for t in truth if t["kind"] == "fill" and t["wallet"] == me]
    assert any(f["trade_id"] in failed for f in fills) and len(fills) == 3
    micro = sum(round(f["pusd"] * 1e6) for f in funds)
    micro += sum(round(f["cash"] * 1e6) for f in fills if f["trade_id"] not in failed)
    micro += sum(t["payout_units"] for t in truth if t["kind"] == "redemption" and t["wallet"] == me)
    micro += sum(t["amount_units"] for t in truth if t["kind"] == "merge" and t["wallet"] == me)
    w = wallet(s, me)
    assert micro == w["pusd_units"]
    gas = sum(int(t["gas_paid_wei"]) for t in truth if t["kind"] == "chain_tx" and t["sender"] == me)
    assert sum(int(f["pol_wei"]) for f in funds) - gas == int(w["pol_wei"])
    assert len([t for t in truth if t["kind"] == "chain_tx" and t["sender"] == me]) == 3


def test_lifecycle_control_refuses_bad_requests(life_sim):
    s = life_sim
    for body in ({}, {"address": "0x12"}, {"address": "0x" + "11" * 20, "pusd": -1},
                 {"address": "0x" + "11" * 20, "pol": "NaN"}, {"address": "0x" + "11" * 20, "pusd": "lots"},
                 {"address": "0x" + "11" * 20, "pusd": True}, {"address": "0x" + "11" * 20, "owner": "nobody"},
                 {"address": "0x" + "11" * 20, "approve": "everyone"}, [1, 2]):
        out = httpx.post(f"{s['control']}/wallets/fund", json=body, timeout=5)
        assert out.status_code == 400 and out.json()["error"].startswith("bad fund request"), body
    assert httpx.post(f"{s['control']}/wallets/fund", content=b"<html>", timeout=5).status_code == 400
    assert httpx.get(f"{s['control']}/wallets/0x12", timeout=5).status_code == 400
    assert httpx.post(f"{s['control']}/resolve", json={"slug": "nope"}, timeout=5).status_code == 404
    m = httpx.get(f"{s['gamma']}/markets", params={"closed": "false"}, timeout=5).json()[-1]
    bad = httpx.post(f"{s['control']}/resolve", json={"slug": m["slug"], "winner": "Sideways"}, timeout=5)
    assert bad.status_code == 400
    first = httpx.post(f"{s['control']}/resolve", json={"slug": m["slug"]}, timeout=5)
    assert first.status_code == 200 and first.json()["winner"] in ("Up", "Down")
    assert httpx.post(f"{s['control']}/resolve", json={"slug": m["slug"]}, timeout=5).status_code == 400
    funded = httpx.post(f"{s['control']}/wallets/fund", json={"address": "0x" + "12" * 20, "pusd": "2.5",
                                                             "pol": 0.25}, timeout=5).json()
    assert funded["pusd"] == 2.5 and funded["pol_wei"] == str(25 * 10**16) and funded["positions"] == []
