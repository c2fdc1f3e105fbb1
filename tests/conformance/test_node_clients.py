"""The official TypeScript clients (pinned in tests/conformance/node/package-lock.json) against polysim: each Node
script prints what the client returned, one JSON line per step, and these checks read those parsed results."""
import json
import queue
import subprocess
import threading
import time

import httpx
import pytest
from conftest import NODE_DIR, current_market, node, state, tokens


def _steps(lines: list[dict]) -> dict:
    return {d["step"]: d for d in lines}


def test_clob_client_v2_keys_orders_and_buy_capped_at_one_minus_tick(sim):
    up, _ = tokens(current_market(sim))
    out = _steps(node("clob_v2.mjs", {"clob": sim["clob"], "key": "0x" + "c7" * 32, "token": up}))
    assert out["creds"]["creds"]["key"] and out["version"]["version"] == 2
    assert out["book"]["book"]["asset_id"] == up and out["book"]["book"]["asks"]
    resting = out["resting"]["response"]
    assert resting["success"] and resting["status"] == "live"
    assert out["cancel"]["response"]["canceled"] == [resting["orderID"]]
    capped = out["capped"]["response"]
    assert capped["success"] and capped["status"] == "matched" and capped["tradeIDs"], capped
    trade = out["trades"]["trades"][0]
    assert trade["id"] == capped["tradeIDs"][0] and trade["side"] == "BUY" and trade["trader_side"] == "TAKER"
    assert all(mo["side"] in ("BUY", "SELL") and mo["maker_address"] for mo in trade["maker_orders"])


def test_clob_client_v1_gets_the_venues_v1_refusal(sim):
    up, _ = tokens(current_market(sim))
    out = _steps(node("clob_v1.mjs", {"clob": sim["clob"], "key": "0x" + "c8" * 32, "token": up}))
    assert out["creds"]["creds"]["key"] and out["book"]["book"]["asset_id"] == up
    signed = out["signed"]["order"]
    assert {"nonce", "feeRateBps", "taker"} <= set(signed), "the client signs the V1 order struct"
    assert out["posted"]["response"] == {"error": "order_version_mismatch", "status": 400}


def test_real_time_data_client_activity_and_chainlink_prices(sim):
    current_market(sim)
    before = state(sim)["rtds_price_subscribers"]
    proc = subprocess.Popen(["node", str(NODE_DIR / "rtds.mjs"), json.dumps({"rtds": sim["rtds"], "seconds": 40})],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=NODE_DIR)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in proc.stdout if x.startswith("{")],
                     daemon=True).start()
    got: list[dict] = []

    def until(cond, timeout: float, what: str):
        end = time.monotonic() + timeout
        while not cond():
            try:
                got.append(lines.get(timeout=max(0.01, end - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; got {len(got)} lines") from None

    try:
        until(lambda: any(d["step"] == "subscribed" for d in got), 20, "the client to subscribe")
        end = time.monotonic() + 10
        while state(sim)["rtds_price_subscribers"] <= before:
            assert time.monotonic() < end, "the server never registered the subscription"
            time.sleep(0.1)
        tx = httpx.post(f"{sim['control']}/source-fill", json={"asset": "btc", "size": 7}, timeout=5).json()["tx_hash"]
        messages = lambda: [d["message"] for d in got if d["step"] == "message"]  # noqa: E731
        until(lambda: any(m["topic"] == "activity" and m["payload"]["transactionHash"] == tx for m in messages())
              and any(m["topic"] == "crypto_prices_chainlink" and m["type"] == "update" for m in messages()),
              20, "our trade and a Chainlink update")
    finally:
        proc.terminate()
        proc.wait(10)
    msgs = [d["message"] for d in got if d["step"] == "message"]
    ids = {m["connection_id"] for m in msgs}
    assert len(ids) == 1 and next(iter(ids)), "every frame carries this connection's id"
    trade = next(m for m in msgs if m["topic"] == "activity" and m["payload"]["transactionHash"] == tx)
    assert trade["type"] == "trades" and trade["payload"]["proxyWallet"] == "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
    prices = [m for m in msgs if m["topic"] == "crypto_prices_chainlink"]
    snapshot = [m for m in prices if m["type"] == "subscribe"]
    assert snapshot and snapshot[0]["payload"]["symbol"] == "btc/usd" and snapshot[0]["payload"]["data"]
    for m in prices:
        for point in m["payload"].get("data", [m["payload"]]):
            assert int(point["full_accuracy_value"]) == pytest.approx(point["value"] * 10**18, rel=1e-6)
    assert all(m["payload"]["symbol"] == "btc/usd" for m in prices), "the symbol filter holds"
