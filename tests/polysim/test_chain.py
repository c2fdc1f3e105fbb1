"""The Polygon JSON-RPC surface: settlements encoded with the reference ABI, blocks and reorgs, and the websocket."""
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websocket
from eth_abi import decode
from eth_utils import keccak

from polysim import crypto
from polysim.chain import MATCH_ORDERS_ARGS, Chain, settle
from polysim.events import MATCH, Hub, Match, SimMarket, WalletFill

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
SOURCE = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
ABI = {e["name"]: e for e in json.loads((PAYLOADS / "orderfilled_event_abi.json").read_text())}


def _topic0(name: str) -> str:
    event = ABI[name]
    sig = f"{name}({','.join(i['type'] for i in event['inputs'])})"
    assert "0x" + keccak(text=sig).hex() == event["_topic0"]
    return event["_topic0"]


def _data(name: str, log: dict) -> dict:
    inputs = [i for i in ABI[name]["inputs"] if not i["indexed"]]
    values = decode([i["type"] for i in inputs], bytes.fromhex(log["data"][2:]))
    return dict(zip((i["name"] for i in inputs), values, strict=True))


def _pad(address: str) -> str:
    return "0x" + address.lower()[2:].rjust(64, "0")


def _market(version="v1", neg_risk=False) -> SimMarket:
    return SimMarket(condition_id="0x" + "cd" * 32, question_id="0x" + "01" * 32, slug="btc-updown-15m-1",
                     event_slug="e", event_id="1", market_id="1", title="t", asset_symbol="btc", window_start=0.0,
                     window_end=900.0, created_at=0.0, token_ids=["123456789", "987654321"], neg_risk=neg_risk,
                     version=version)


def _match(side="BUY", market=None, t=1_795_000_000.123) -> Match:
    """The source takes two makers at different prices: its average price is not on the tick."""
    m = market or _market()
    maker_side = "SELL" if side == "BUY" else "BUY"
    makers = [WalletFill("0x" + "a1" * 20, "maker", "0x" + "11" * 32, maker_side, "123456789", "Up", 0, 0.51, 7.123456),
              WalletFill("0x" + "b2" * 20, "maker", "0x" + "22" * 32, maker_side, "123456789", "Up", 0, 0.52, 3.5)]
    qty = sum(f.size for f in makers)
    avg = round(sum(f.size * f.price for f in makers) / qty, 6)
    fee = round(sum(f.size * 0.07 * f.price * (1 - f.price) for f in makers), 5)      # the exchange's taker fee
    taker = WalletFill(SOURCE, "taker", "0x" + "33" * 32, side, "123456789", "Up", 0, avg, round(qty, 6), fee=fee)
    return Match(tx_hash="0x" + "44" * 32, match_time=t, market=m, taker=taker, makers=makers)


def test_settlement_logs_decode_with_the_reference_abi_one_per_maker_then_taker_then_matched():
    match = _match()
    s = settle(match)
    filled, matched = _topic0("OrderFilled"), _topic0("OrdersMatched")
    assert [log["topics"][0] for log in s.logs] == [filled, filled, filled, matched]
    assert all(log["address"] == crypto.EXCHANGE_V2.lower() for log in s.logs)
    makers, taker, om = s.logs[:2], s.logs[2], s.logs[3]
    for log, f in zip(makers, match.makers, strict=True):
        d = _data("OrderFilled", log)
        assert log["topics"][1:] == [f.order_hash, _pad(f.wallet), _pad(SOURCE)]
        assert d["side"] == 1 and d["tokenId"] == 123456789 and d["makerAmountFilled"] == round(f.size * 1e6)
        assert d["takerAmountFilled"] == round(f.size * f.price * 1e6) and d["fee"] == 0
    d = _data("OrderFilled", taker)
    assert taker["topics"][2:] == [_pad(SOURCE), _pad(crypto.EXCHANGE_V2)]      # taker = the exchange
    shares = 7_123_456 + 3_500_000
    assert d["side"] == 0 and d["takerAmountFilled"] == shares
    assert d["makerAmountFilled"] == sum(_data("OrderFilled", log)["takerAmountFilled"] for log in makers)
    assert abs(d["makerAmountFilled"] / shares - match.taker.price) < 1e-6      # RTDS's rounded average price
    assert d["fee"] == round(match.taker.fee * 1e6) > 0
    om_data = _data("OrdersMatched", om)
    assert om["topics"][1:] == [match.taker.order_hash, _pad(SOURCE)]
    assert (om_data["makerAmountFilled"], om_data["takerAmountFilled"]) == (d["makerAmountFilled"], shares)


def test_match_orders_calldata_uses_the_reference_selector_and_the_contract_fill_arithmetic():
    match = _match(side="SELL")
    s = settle(match)
    order = "(uint256,address,address,uint256,uint256,uint256,uint8,uint8,uint256,bytes32,bytes32,bytes)"
    sig = f"matchOrders(bytes32,{order},{order}[],uint256,uint256[],uint256,uint256[])"
    assert s.calldata.startswith("0x3c2b4399") and keccak(text=sig)[:4].hex() == "3c2b4399"
    cid, taker, makers, taker_fill, maker_fills, taker_fee, maker_fees = decode(
        list(MATCH_ORDERS_ARGS), bytes.fromhex(s.calldata[10:]))
    assert "0x" + cid.hex() == match.market.condition_id and taker[1] == SOURCE and taker[6] == 1
    assert taker[8] == int(match.match_time * 1000)                              # order timestamp, ms
    logs = [_data("OrderFilled", log) for log in s.logs[:3]]
    for order_t, making, d in zip(makers, maker_fills, logs[:2], strict=True):
        assert (making, making * order_t[5] // order_t[4]) == (d["makerAmountFilled"], d["takerAmountFilled"])
    assert taker_fill == logs[2]["makerAmountFilled"] == 7_123_456 + 3_500_000   # a SELL taker makes shares
    assert sum(maker_fills) == logs[2]["takerAmountFilled"] and taker_fee == logs[2]["fee"] and maker_fees == (0, 0)


def test_a_mint_match_charges_the_taker_the_rest_of_each_share():
    match = _match()
    match.makers[1] = WalletFill("0x" + "b2" * 20, "maker", "0x" + "22" * 32, "BUY", "987654321", "Down", 1, 0.47, 3.5)
    s = settle(match)
    maker_down, taker = _data("OrderFilled", s.logs[1]), _data("OrderFilled", s.logs[2])
    assert (maker_down["side"], maker_down["tokenId"]) == (0, 987654321)             # the maker buys Down
    assert maker_down["makerAmountFilled"] == 1_645_000 and maker_down["takerAmountFilled"] == 3_500_000
    up_cost = _data("OrderFilled", s.logs[0])["takerAmountFilled"]
    assert taker["makerAmountFilled"] == up_cost + 3_500_000 - 1_645_000             # 0.53 pUSD per minted share
    assert taker["takerAmountFilled"] == 7_123_456 + 3_500_000


@pytest.mark.parametrize("version,neg_risk,exchange", [("v1", False, crypto.EXCHANGE_V2),
                                                       ("v1", True, crypto.NEG_RISK_EXCHANGE_V2),
                                                       ("v2", False, crypto.EXCHANGE_V3)])
def test_settlement_goes_to_the_market_exchange(version, neg_risk, exchange):
    s = settle(_match(market=_market(version, neg_risk)))
    assert s.exchange == exchange.lower() and {log["address"] for log in s.logs} == {exchange.lower()}
    assert _data("OrderFilled", s.logs[2])["fee"] > 0


class _Socket:
    """Stands in for a websocket: records what the chain sends to it."""

    closed = False

    def __init__(self):
        self.sent = []

    async def send_str(self, text):
        self.sent.append(json.loads(text)["params"]["result"])


def _run_chain(steps, reorg_rate=0.0):
    """Drive a Chain on a fake clock inside a loop; steps(chain, hub, now, socket) -> None."""
    async def main():
        now = [1_795_000_000.0]
        hub = Hub()
        chain = Chain(hub, mempool_delay=0.3, logs_delay=1.0, block_s=1.0, reorg_rate=reorg_rate, clock=lambda: now[0])
        sock = _Socket()
        chain.call(sock, {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", {}]})
        await steps(chain, hub, now, sock)
    asyncio.run(main())


def test_a_reorg_sends_removed_logs_then_reincludes_them_in_a_later_block():
    async def steps(chain, hub, now, sock):
        match = _match(t=now[0])
        hub.publish(MATCH, match)
        now[0] += 1.0
        mined = chain.produce(now[0])
        await asyncio.sleep(0)
        assert [s.tx_hash for s in mined.txs] == [match.tx_hash] and match.block_number == mined.number
        chain.request_reorg(match.tx_hash)
        now[0] += 1.0
        replacement = chain.produce(now[0])
        await asyncio.sleep(0)
        removed = [log for log in sock.sent if log["removed"]]
        assert len(removed) == 4 and {log["blockHash"] for log in removed} == {mined.hash}
        assert replacement.number == mined.number and replacement.hash != mined.hash and not replacement.txs
        now[0] += 1.0
        later = chain.produce(now[0])
        await asyncio.sleep(0)
        readded = [log for log in sock.sent if log["blockHash"] == later.hash]
        assert len(readded) == 4 and not any(log["removed"] for log in readded)
        assert later.number == mined.number + 1 and [s.tx_hash for s in later.txs] == [match.tx_hash]
    _run_chain(steps)


def test_a_dropped_reorg_never_brings_the_transaction_back():
    async def steps(chain, hub, now, sock):
        match = _match(t=now[0])
        hub.publish(MATCH, match)
        now[0] += 1.0
        chain.produce(now[0])
        chain.request_reorg(match.tx_hash, drop=True)
        for _ in range(4):
            now[0] += 1.0
            chain.produce(now[0])
        await asyncio.sleep(0)
        assert [log["removed"] for log in sock.sent] == [False] * 4 + [True] * 4
        assert chain.counters["dropped_txs"] == 1 and not chain.pool
    _run_chain(steps)


def test_a_failing_settlement_is_mined_without_logs():
    async def steps(chain, hub, now, sock):
        match = _match(t=now[0])
        match.will_fail = True
        hub.publish(MATCH, match)
        now[0] += 1.0
        block = chain.produce(now[0])
        await asyncio.sleep(0)
        assert [s.tx_hash for s in block.txs] == [match.tx_hash] and not block.logs and not sock.sent
    _run_chain(steps)


# ---- the websocket, on a real simulator process ---------------------------------------------------------------
@pytest.fixture(scope="module")
def rpc(tmp_path_factory):
    proc = subprocess.Popen([sys.executable, "-m", "polysim.cli", "serve", "--speed", "4", "--seed", "3",
                             "--mempool-delay", "0.2", "--logs-delay", "0.8", "--block-time", "0.5"],
                            stdout=subprocess.PIPE, cwd=tmp_path_factory.mktemp("chain"))
    urls = json.loads(proc.stdout.readline())
    yield urls
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def _call(ws, method, params=None, req_id=1):
    ws.send(json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or []}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == req_id:
            return msg


def test_json_rpc_answers_and_error_objects(rpc):
    ws = websocket.create_connection(rpc["rpc_ws"], timeout=5)
    try:
        assert _call(ws, "eth_chainId")["result"] == "0x89"
        head = int(_call(ws, "eth_blockNumber")["result"], 16)
        ws.send("{not json")
        assert json.loads(ws.recv())["error"]["code"] == -32700
        ws.send(json.dumps({"id": 7, "method": "eth_chainId"}))
        assert json.loads(ws.recv()) == {"jsonrpc": "2.0", "id": 7, "error": {"code": -32600,
                                                                              "message": "invalid request"}}
        assert _call(ws, "eth_getBalance", [SOURCE, "latest"])["result"] == "0x0"       # no POL
        assert _call(ws, "debug_traceTransaction", ["0x" + "00" * 32])["error"]["code"] == -32601
        assert _call(ws, "eth_subscribe", ["logs", {"address": "0x12"}])["error"]["code"] == -32602
        assert _call(ws, "eth_subscribe", ["syncing"])["error"]["code"] == -32602
        sub = _call(ws, "eth_subscribe", ["newPendingTransactions"])["result"]
        assert _call(ws, "eth_unsubscribe", [sub])["result"] is True
        assert _call(ws, "eth_unsubscribe", [sub])["result"] is False
        time.sleep(0.6)
        assert int(_call(ws, "eth_blockNumber")["result"], 16) > head
    finally:
        ws.close()


def test_malformed_fault_sends_broken_notifications_to_every_subscription(rpc):
    ws = websocket.create_connection(rpc["rpc_ws"], timeout=5)
    try:
        _call(ws, "eth_subscribe", ["newPendingTransactions", True])
        ctl = rpc["rpc_ws"].replace("ws://", "http://") + "_chain/faults"
        assert httpx.post(ctl, json={"malformed": 4}).json()["ok"]
        texts = []
        while len(texts) < 4:
            text = ws.recv()
            if "eth_subscription" not in text or "0xnope" in text or not text.endswith("}}"):
                texts.append(text)
        assert any(t == "not json at all" for t in texts) and any(len(t) == 200_000 for t in texts)
        assert any("0xnope" in t for t in texts) and any(t.startswith('{"jsonrpc"') and t[-1] != "}" for t in texts)
    finally:
        ws.close()


def test_pending_transaction_then_filtered_logs_then_a_reorg_on_demand(rpc):
    ws = websocket.create_connection(rpc["rpc_ws"], timeout=5)
    try:
        logs_sub = _call(ws, "eth_subscribe", ["logs", {
            "address": [crypto.EXCHANGE_V2, crypto.NEG_RISK_EXCHANGE_V2, crypto.EXCHANGE_V3],
            "topics": [_topic0("OrderFilled"), None, _pad(SOURCE)]}])["result"]
        pending_sub = _call(ws, "eth_subscribe", ["newPendingTransactions", True], 2)["result"]
        fill = httpx.post(f"{rpc['control']}/source-fill", json={"asset": "btc", "outcome": "Up", "side": "BUY",
                                                                 "size": 9}).json()
        tx = fill["tx_hash"]
        events, deadline = [], time.time() + 10
        while time.time() < deadline and not any(kind == "log" for kind, _ in events):
            msg = json.loads(ws.recv())
            sub, result = msg["params"]["subscription"], msg["params"]["result"]
            if sub == pending_sub and result["hash"] == tx:
                events.append(("pending", result))
            elif sub == logs_sub:
                assert result["topics"][2] == _pad(SOURCE)           # the filter holds: only the source's orders
                if result["transactionHash"] == tx:
                    events.append(("log", result))
        assert [kind for kind, _ in events] == ["pending", "log"]
        pending, log = events[0][1], events[1][1]
        assert pending["to"] == crypto.EXCHANGE_V2.lower() and pending["input"].startswith("0x3c2b4399")
        assert pending["blockNumber"] is None and log["topics"][3] == _pad(crypto.EXCHANGE_V2)
        assert _data("OrderFilled", log)["takerAmountFilled"] == 9_000_000
        assert httpx.post(rpc["rpc_ws"].replace("ws://", "http://") + "_chain/reorg", json={"tx_hash": tx}).json()["ok"]
        seen, deadline = [], time.time() + 10
        while time.time() < deadline and len(seen) < 2:
            msg = json.loads(ws.recv())
            result = msg["params"]["result"]
            if msg["params"]["subscription"] == logs_sub and result["transactionHash"] == tx:
                seen.append(result)
        assert [r["removed"] for r in seen] == [True, False]
        assert seen[0]["blockHash"] == log["blockHash"] and seen[1]["blockHash"] != log["blockHash"]
        assert int(seen[1]["blockNumber"], 16) > int(log["blockNumber"], 16) - 1
    finally:
        ws.close()


def test_random_reorgs_at_the_configured_rate_orphan_the_newest_block():
    async def steps(chain, hub, now, sock):
        hub.publish(MATCH, _match(t=now[0]))
        heads = []
        for _ in range(3):
            now[0] += 1.0
            heads.append(chain.produce(now[0]).number)
        await asyncio.sleep(0)
        assert heads[1] == heads[0] and chain.counters["reorgs"] == 2       # every block replaces the one before
        assert [log["removed"] for log in sock.sent] == [False] * 4 + [True] * 4 + [False] * 4
    _run_chain(steps, reorg_rate=1.0)
