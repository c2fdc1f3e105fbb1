"""The surfaces the official clients need (tests/conformance drives them with those clients): their answers to what
a client sends, and to what a hostile or broken one sends instead."""
import asyncio
import base64
import json

import httpx
import pytest
from conftest import KEY, SOURCE, current_market, eventually
from py_clob_client_v2.client import ClobClient
from test_chain import _match, _Socket
from test_exchange import T0, order, venue  # noqa: F401  (fixture)

from polysim.chain import Chain
from polysim.events import MATCH, Hub
from polysim.exchange import Reject

HOSTILE_BODIES = [b"<html>502</html>", b"\xff\xfe\x00", b"{}", b"[1,2,3]", b'[{"token_id": []}]',
                  b'[{"token_id": {"a": 1}, "side": "BUY"}]', b"[" * 5000 + b"]" * 5000, b'"str"', b"null"]


def _tokens(sim):
    return json.loads(current_market(sim)["clobTokenIds"])


def test_price_is_a_decimal_string_buy_is_the_best_bid_sell_the_best_ask(sim):
    up, _ = _tokens(sim)
    for _ in range(3):                                  # background makers requote: read both around the book
        book = httpx.get(f"{sim['clob']}/book", params={"token_id": up}).json()
        buy = httpx.get(f"{sim['clob']}/price", params={"token_id": up, "side": "BUY"}).json()["price"]
        sell = httpx.get(f"{sim['clob']}/price", params={"token_id": up, "side": "sell"}).json()["price"]
        after = httpx.get(f"{sim['clob']}/book", params={"token_id": up}).json()
        if book["hash"] == after["hash"]:
            break
    assert isinstance(buy, str) and isinstance(sell, str)
    assert buy == book["bids"][-1]["price"] and sell == book["asks"][-1]["price"]
    for side in ("", "HOLD", "<script>", "BUY" * 1000):
        assert httpx.get(f"{sim['clob']}/price", params={"token_id": up, "side": side}).status_code == 400
    assert httpx.get(f"{sim['clob']}/price", params={"token_id": "1", "side": "BUY"}).status_code == 404


@pytest.mark.parametrize("path", ["/prices", "/spreads", "/last-trades-prices", "/books", "/midpoints"])
def test_batch_market_data_skips_what_it_cannot_read(sim, path):
    up, down = _tokens(sim)
    for body in HOSTILE_BODIES:
        r = httpx.post(f"{sim['clob']}{path}", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json() in ({}, []), (body[:20], r.text[:200])
    good = httpx.post(f"{sim['clob']}{path}", json=[{"token_id": up, "side": "BUY"}, {"token_id": "nope"},
                                                     {"token_id": down, "side": "SELL"}]).json()
    keys = set(good) if isinstance(good, dict) else {x.get("token_id", x.get("asset_id")) for x in good}
    assert keys == {up, down}


def test_prices_history_has_the_trades_and_refuses_bad_ranges(sim, client):
    up, _ = _tokens(sim)
    httpx.post(f"{sim['control']}/source-fill", json={"asset": "btc", "outcome": "Up", "size": 5})
    hist = eventually(lambda: httpx.get(f"{sim['clob']}/prices-history",
                                        params={"market": up, "interval": "1h", "fidelity": 1}).json()["history"],
                      5, what="a point")
    assert all(set(p) == {"t", "p"} and 0 < p["p"] < 1 for p in hist)
    assert [p["t"] for p in hist] == sorted(p["t"] for p in hist)
    for params in ({"market": up}, {"market": up, "interval": "5y"}, {"market": up, "startTs": "x", "endTs": "1"},
                   {"market": up, "interval": "1h", "fidelity": "NaN"}):
        assert httpx.get(f"{sim['clob']}/prices-history", params=params).status_code == 400
    v2 = httpx.get(f"{sim['data_api']}/v2/prices-history", params={"token_id": up, "interval": "1h"}).json()
    assert v2["data"] and v2["pagination"]["has_more"] is False
    assert all(p["resolution_seconds"] == 60 and p["timestamp"] % 60 == 0 for p in v2["data"])
    assert httpx.get(f"{sim['data_api']}/v2/prices-history", params={"interval": "1h"}).status_code == 400
    assert httpx.get(f"{sim['data_api']}/v2/prices-history",
                     params={"token_id": up, "interval": "1h", "bucket_seconds": "5"}).status_code == 400


def test_gamma_keyset_pages_cover_everything_once_and_refuse_bad_cursors(sim):
    gamma = sim["gamma"]
    for kind in ("events", "markets"):
        seen, cursor = [], None
        for _ in range(50):
            page = httpx.get(f"{gamma}/{kind}/keyset", params={"limit": 2, **({"after_cursor": cursor} if cursor
                                                                            else {})}).json()
            seen += [x["slug"] for x in page[kind]]
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        listed = [x["slug"] for x in httpx.get(f"{gamma}/{kind}", params={"limit": 100}).json()]
        assert sorted(seen) == sorted(set(seen)) and set(listed) <= set(seen)
        for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"after_cursor": "!!!"},
                    {"after_cursor": base64.urlsafe_b64encode(b"-5").decode()}):
            assert httpx.get(f"{gamma}/{kind}/keyset", params=bad).status_code == 400
    event = httpx.get(f"{gamma}/events", params={"limit": 1}).json()[0]
    assert httpx.get(f"{gamma}/events/{event['id']}").json()["slug"] == event["slug"]
    market = event["markets"][0]
    assert httpx.get(f"{gamma}/markets/{market['id']}").json()["conditionId"] == market["conditionId"]
    assert all(s["id"] for s in event["series"]) and all(t["id"] for t in event["tags"])
    assert httpx.get(f"{gamma}/markets/999999999").status_code == 404


def test_api_keys_are_listed_and_a_deleted_key_is_refused_at_once(sim):
    c = ClobClient(sim["clob"], chain_id=137, key="0x" + "7a" * 32)
    c.set_api_creds(c.create_or_derive_api_key())
    assert c.get_api_keys() == {"apiKeys": [c.creds.api_key]}
    assert httpx.get(f"{sim['clob']}/auth/api-keys").status_code == 401
    assert c.delete_api_key() == "OK"
    for call in (c.get_api_keys, c.get_closed_only_mode, c.get_notifications):
        with pytest.raises(Exception) as gone:
            call()
        assert getattr(gone.value, "status_code", None) == 401


def test_scoring_and_notifications_answer_their_shapes_and_refuse_garbage(sim, client):
    from py_clob_client_v2.clob_types import OrderScoringParams, RequestArgs
    assert client.is_order_scoring(OrderScoringParams(orderId="0x" + "00" * 32)) == {"scoring": False}
    from py_clob_client_v2.headers.headers import create_level_2_headers
    from py_clob_client_v2.signer import Signer
    for body in ('{"a":1}', '[1,2]', "not json", "[" * 3000):
        headers = create_level_2_headers(Signer(KEY, 137), client.creds, RequestArgs(
            method="POST", request_path="/orders-scoring", body=body, serialized_body=body))
        assert httpx.post(f"{sim['clob']}/orders-scoring", content=body, headers=headers).status_code == 400
    assert client.get_notifications() == []


def test_v2_positions_follow_our_fills_and_refuse_bad_parameters(sim, client):
    up, _ = _tokens(sim)
    from py_clob_client_v2.clob_types import MarketOrderArgs, OrderType, PartialCreateOrderOptions
    client.create_and_post_market_order(MarketOrderArgs(token_id=up, amount=2, side="BUY", price=0.99),
                                        PartialCreateOrderOptions(tick_size="0.01"), OrderType.FAK)
    me = client.get_address()
    rows = eventually(lambda: [p for p in httpx.get(f"{sim['data_api']}/v2/positions",
                                                    params={"user": me, "_": id(object())}).json()["data"]
                               if p["token_id"] == up], 5, what="the position")
    p = rows[0]
    assert p["status"] == "OPEN" and p["current_size"] > 0 and p["entry_fees_usdc"] > 0
    assert p["total_cost_usdc"] == pytest.approx(p["entry_cost_usdc"] + p["entry_fees_usdc"])
    for params in ({"user": "0x123"}, {"user": me, "status": "LOST"}, {"user": me, "cursor": "%%%"},
                   {"user": me, "limit": "0"}):
        r = httpx.get(f"{sim['data_api']}/v2/positions", params=params)
        assert r.status_code == 400 and {"error", "code", "retryable", "trace_id"} <= set(r.json())
    assert httpx.get(f"{sim['data_api']}/v2/positions", params={"user": SOURCE.replace("1", "2")}).json() == {
        "data": [], "pagination": {"has_more": False, "limit": 100, "next_cursor": None}}


def test_a_buy_capped_a_hair_off_the_price_range_is_accepted_and_a_tenth_of_a_tick_off_is_not(venue):  # noqa: F811
    ex, _ = venue
    for price in (0.990001, 0.9901, 0.009999, 0.0099):     # the SDKs sign a 0.99 cap as 0.990001
        ex.validate(order(ex, "0xapi", "Up", "BUY", price, 10, api=True), T0)          # 100 pUSD covers 10 shares
    for price in (0.9902, 0.0098, 1.0, 0.0):
        with pytest.raises(Reject, match="breaks minimum tick size rule"):
            ex.validate(order(ex, "0xapi", "Up", "BUY", price, 10, api=True), T0)


def test_json_rpc_reads_blocks_logs_receipts_and_refuses_bad_requests():
    async def main():
        now = [1_795_000_000.0]
        hub = Hub()
        chain = Chain(hub, mempool_delay=0.3, logs_delay=1.0, block_s=1.0, clock=lambda: now[0])
        sock = _Socket()
        heads = chain.call(sock, {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
        match = _match(t=now[0])
        hub.publish(MATCH, match)
        now[0] += 2
        block = chain.produce(now[0])
        await asyncio.sleep(0)

        def rpc(method, *params):
            return chain.call(sock, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
        return chain, block, match, sock, heads, rpc
    chain, block, match, sock, heads, rpc = asyncio.run(main())
    assert sock.sent and sock.sent[-1]["hash"] == block.hash and sock.sent[-1]["number"] == hex(block.number)
    receipt = rpc("eth_getTransactionReceipt", match.tx_hash)["result"]
    assert receipt["status"] == "0x1" and receipt["blockHash"] == block.hash and receipt["logs"]
    assert [x["logIndex"] for x in receipt["logs"]] == [hex(i) for i in range(len(receipt["logs"]))]
    by_number = rpc("eth_getBlockByNumber", hex(block.number), False)["result"]
    assert by_number["transactions"] == [match.tx_hash] and by_number == rpc("eth_getBlockByHash", block.hash,
                                                                             False)["result"]
    assert rpc("eth_getBlockByNumber", "latest", True)["result"]["transactions"][0]["hash"] == match.tx_hash
    logs = rpc("eth_getLogs", {"fromBlock": hex(block.number), "toBlock": "latest"})["result"]
    assert logs == receipt["logs"]
    assert rpc("eth_getLogs", {"blockHash": block.hash})["result"] == logs
    assert rpc("eth_getTransactionByHash", match.tx_hash)["result"]["blockNumber"] == hex(block.number)
    assert rpc("eth_getTransactionReceipt", "0x" + "ab" * 32)["result"] is None
    assert rpc("eth_getBlockByNumber", hex(block.number + 10), False)["result"] is None
    for method, params, code in (("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}], -32005),
                                 ("eth_getLogs", [{"blockHash": block.hash, "fromBlock": "0x1"}], -32602),
                                 ("eth_getLogs", [{"fromBlock": "yesterday"}], -32602),
                                 ("eth_getLogs", ["not an object"], -32602),
                                 ("eth_getBlockByNumber", ["0xzz", False], -32602),
                                 ("eth_getBlockByNumber", [hex(block.number)], -32602),
                                 ("eth_getBlockByHash", ["0x12", False], -32602),
                                 ("eth_getTransactionReceipt", [12], -32602)):
        assert rpc(method, *params)["error"]["code"] == code, (method, params)
