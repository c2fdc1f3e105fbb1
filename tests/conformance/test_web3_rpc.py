"""web3.py (a standard Ethereum client) on polysim's Polygon JSON-RPC websocket: subscriptions (newHeads, logs,
newPendingTransactions), blocks, logs, receipts and transactions of the settlement of a match, decoded with the
exchange's real event ABI."""
import asyncio
import json
from pathlib import Path

import httpx
from conftest import current_market
from web3 import AsyncWeb3, WebSocketProvider

ABI = [e for e in json.loads((Path(__file__).parents[1] / "payloads" / "polymarket" / "orderfilled_event_abi.json")
                             .read_text()) if e.get("type") == "event"]
ORDER_FILLED = "0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee"
SOURCE = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"


def hx(value) -> str:
    """0x-hex of a bytes value web3 returns (hashes, topics, input)."""
    return "0x" + bytes(value).hex()


async def _next(w3, want, timeout: float, what: str):
    """Subscription messages until want(message) returns something (bounded)."""
    async def read():
        async for msg in w3.socket.process_subscriptions():
            found = want(msg)
            if found:
                return found
    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_web3_subscriptions_blocks_logs_and_receipts_of_a_settlement(sim):
    current_market(sim)

    async def run():
        async with AsyncWeb3(WebSocketProvider(sim["rpc_ws"])) as w3:
            assert await w3.eth.chain_id == 137
            heads = await w3.eth.subscribe("newHeads")
            logs = await w3.eth.subscribe("logs", {"topics": [ORDER_FILLED, None, "0x" + SOURCE[2:].rjust(64, "0")]})
            pending = await w3.eth.subscribe("newPendingTransactions")
            head = await _next(w3, lambda m: m["subscription"] == heads and m["result"], 10, "a new head")
            fill = httpx.post(f"{sim['control']}/source-fill", json={"asset": "btc", "size": 6}, timeout=5).json()
            tx = fill["tx_hash"]
            seen = await _next(w3, lambda m: m["subscription"] == pending and hx(m["result"]) == tx
                               and m["result"], 10, "the settlement in the mempool")
            log = await _next(w3, lambda m: m["subscription"] == logs and m["result"], 10, "our OrderFilled log")
            receipt = await w3.eth.get_transaction_receipt(tx)
            block = await w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
            by_hash = await w3.eth.get_block(block["hash"])
            latest = await w3.eth.get_block("latest")
            got_logs = await w3.eth.get_logs({"fromBlock": receipt["blockNumber"], "toBlock": receipt["blockNumber"],
                                              "topics": [ORDER_FILLED]})
            tx_doc = await w3.eth.get_transaction(tx)
            contract = w3.eth.contract(abi=ABI)
            decoded = [contract.events.OrderFilled().process_log(x) for x in receipt["logs"]
                       if hx(x["topics"][0]) == ORDER_FILLED]
            return head, seen, log, receipt, block, by_hash, latest, got_logs, tx_doc, decoded, fill

    head, seen, log, receipt, block, by_hash, latest, got_logs, tx_doc, decoded, fill = asyncio.run(run())
    assert head["number"] > 0 and len(head["hash"]) == 32 and len(head["parentHash"]) == 32
    assert receipt["status"] == 1 and hx(receipt["transactionHash"]) == fill["tx_hash"]
    assert block["number"] == receipt["blockNumber"] and by_hash["number"] == block["number"]
    assert fill["tx_hash"] in {hx(t["hash"]) for t in block["transactions"]}
    assert latest["number"] >= block["number"] and block["parentHash"] != block["hash"]
    assert log["transactionHash"] == receipt["transactionHash"] and not log["removed"]
    assert {x["logIndex"] for x in receipt["logs"] if hx(x["topics"][0]) == ORDER_FILLED} <= \
        {x["logIndex"] for x in got_logs}
    assert tx_doc["blockNumber"] == block["number"] and hx(tx_doc["input"]).startswith("0x3c2b4399")
    # The source wallet's fill as the exchange's event says it: maker or taker, side, token and amounts.
    mine = [d for d in decoded if SOURCE in (d["args"]["maker"].lower(), d["args"]["taker"].lower())]
    assert mine and all(d["event"] == "OrderFilled" for d in decoded)
    token = int(fill["token_id"])
    assert any(d["args"]["tokenId"] == token and d["args"]["side"] == 0 and d["args"]["makerAmountFilled"] > 0
               for d in mine), mine
