"""RTDS frames and Data API rows for a source fill, in the real shapes."""
import json
import time
from pathlib import Path

import httpx
import websocket

from conftest import SOURCE

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"


def test_source_fill_reaches_rtds_in_the_real_envelope_and_the_data_api_after_indexing(sim):
    ws = websocket.create_connection(sim["rtds"], timeout=5)
    ws.send(json.dumps({"action": "subscribe", "subscriptions": [{"topic": "activity", "type": "trades"},
                                                                 {"topic": "activity", "type": "orders_matched"}]}))
    ws.send("PING")
    fill = httpx.post(f"{sim['control']}/source-fill", json={"asset": "eth", "outcome": "Down", "side": "BUY",
                                                             "size": 7}).json()
    assert fill["tx_hash"] and fill["fills"][0]["size"] == 7
    mine, others, pong, deadline = [], 0, False, time.time() + 10
    while time.time() < deadline and len({m["type"] for m in mine}) < 2:
        text = ws.recv()
        if text == "":                 # the real RTDS answers a PING with an empty message
            pong = True
            continue
        frame = json.loads(text)
        if frame["payload"]["proxyWallet"] == SOURCE:
            mine.append(frame)
        else:
            others += 1
    ws.close()
    assert pong and {m["type"] for m in mine} == {"trades", "orders_matched"}
    rec = json.loads((PAYLOADS / "rtds_activity_trade.json").read_text())
    frame = mine[0]
    assert set(frame) == set(rec) and set(frame["payload"]) >= set(rec["payload"])
    for k, v in rec["payload"].items():
        assert isinstance(frame["payload"][k], type(v)), k
    assert isinstance(frame["payload"]["timestamp"], int) and frame["payload"]["transactionHash"] == fill["tx_hash"]
    time.sleep(0.7)                                   # the Data API indexes behind the match
    page = httpx.get(f"{sim['data_api']}/v2/trades", params={"user": SOURCE, "taker_only": "false",
                                                             "limit": 1}).json()
    doc = json.loads((PAYLOADS / "data_api_v2_trade_fields.json").read_text())
    assert set(page["data"][0]) == set(doc["data"][0]) and set(page["pagination"]) == set(doc["pagination"])
    v1 = httpx.get(f"{sim['data_api']}/trades", params={"user": SOURCE}).json()
    assert set(v1[0]) == set(json.loads((PAYLOADS / "data_api_trades_v1.json").read_text())[0])


def test_v2_trades_paginate_with_a_cursor(sim):
    for _ in range(3):
        httpx.post(f"{sim['control']}/source-fill", json={"asset": "btc", "outcome": "Up", "side": "BUY", "size": 5})
    time.sleep(0.7)
    seen, cursor = [], None
    for _ in range(10):
        params = {"user": SOURCE, "taker_only": "false", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{sim['data_api']}/v2/trades", params=params).json()
        seen += [r["transaction_hash"] for r in page["data"]]
        if not page["pagination"]["has_more"]:
            break
        cursor = page["pagination"]["next_cursor"]
    assert len(seen) >= 4 and len(seen) == len(set(seen))
