"""web3.py (a standard Ethereum client) on polysim's Polygon JSON-RPC: over the websocket, subscriptions (newHeads,
logs, newPendingTransactions), blocks, logs, receipts and transactions of the settlement of a match, decoded with the
exchange's real event ABI; over HTTP, a wallet's redemption that web3 builds, signs and sends like any transaction."""
import asyncio
import json
from pathlib import Path

import httpx
from conftest import current_market, environment, open_market, resolve, tokens
from eth_account import Account
from polymarket import SecureClient
from web3 import AsyncWeb3, HTTPProvider, Web3, WebSocketProvider
from web3.logs import DISCARD

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


# ---- a standard client redeems: web3.py builds, signs and sends the transactions, then decodes the receipts ----
ERC20_ABI = [{"type": "function", "name": "balanceOf", "stateMutability": "view",
              "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]}]
CTF_ABI = [
    {"type": "function", "name": "setApprovalForAll", "stateMutability": "nonpayable",
     "inputs": [{"name": "operator", "type": "address"}, {"name": "approved", "type": "bool"}], "outputs": []},
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}, {"name": "id", "type": "uint256"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "payoutDenominator", "stateMutability": "view",
     "inputs": [{"name": "conditionId", "type": "bytes32"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "event", "name": "TransferBatch", "anonymous": False,
     "inputs": [{"name": "operator", "type": "address", "indexed": True},
                {"name": "from", "type": "address", "indexed": True},
                {"name": "to", "type": "address", "indexed": True},
                {"name": "ids", "type": "uint256[]", "indexed": False},
                {"name": "values", "type": "uint256[]", "indexed": False}]},
    {"type": "event", "name": "PayoutRedemption", "anonymous": False,
     "inputs": [{"name": "redeemer", "type": "address", "indexed": True},
                {"name": "collateralToken", "type": "address", "indexed": True},
                {"name": "parentCollectionId", "type": "bytes32", "indexed": True},
                {"name": "conditionId", "type": "bytes32", "indexed": False},
                {"name": "indexSets", "type": "uint256[]", "indexed": False},
                {"name": "payout", "type": "uint256", "indexed": False}]},
]
ADAPTER_ABI = [{"type": "function", "name": "redeemPositions", "stateMutability": "nonpayable",
                "inputs": [{"name": "collateralToken", "type": "address"},
                           {"name": "parentCollectionId", "type": "bytes32"},
                           {"name": "conditionId", "type": "bytes32"}, {"name": "indexSets", "type": "uint256[]"}],
                "outputs": []}]
PUSD = "0xC011a7E12a19f7B1f670d46F03B03f3342E82DFB"
CTF = "0x4D97DCd97eC945f40cF65F87097ACe5EA0476045"
ADAPTER = "0xAdA100Db00Ca00073811820692005400218FcE1f"
KEY_W3 = "0x" + "a6" * 32


def test_web3_signs_and_sends_a_redemption_through_the_collateral_adapter(life_sim):
    s = life_sim
    acct = Account.from_key(KEY_W3)
    trader = SecureClient.create(private_key=KEY_W3, wallet=acct.address, environment=environment(s))
    m = open_market(s)
    up, down = tokens(m)
    assert trader.place_market_order(asset_id=down, side="BUY", amount="4", max_price="0.99",
                                     order_type="FAK").status == "matched"
    trader.close()
    w3 = Web3(HTTPProvider(s["rpc_http"]))
    assert w3.eth.chain_id == 137 and w3.eth.get_balance(acct.address) > 0
    pusd = w3.eth.contract(address=PUSD, abi=ERC20_ABI)
    ctf = w3.eth.contract(address=CTF, abi=CTF_ABI)
    adapter = w3.eth.contract(address=ADAPTER, abi=ADAPTER_ABI)
    held = ctf.functions.balanceOf(acct.address, int(down)).call()
    assert held > 0 and ctf.functions.balanceOf(acct.address, int(up)).call() == 0
    cid = bytes.fromhex(m["conditionId"][2:])

    def send(fn) -> dict:
        """web3's own transaction building: nonce, gas estimate, EIP-1559 fees from the node; signed locally."""
        tx = fn.build_transaction({"from": acct.address, "nonce": w3.eth.get_transaction_count(acct.address)})
        signed = acct.sign_transaction(tx)
        return w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=20,
                                                   poll_latency=0.2)

    approval = send(ctf.functions.setApprovalForAll(ADAPTER, True))
    assert approval["status"] == 1 and approval["type"] == 2
    resolve(s, m, "Down")
    assert ctf.functions.payoutDenominator(cid).call() == 1
    before_pusd, before_pol = pusd.functions.balanceOf(acct.address).call(), w3.eth.get_balance(acct.address)
    redeemed = send(adapter.functions.redeemPositions(PUSD, b"\x00" * 32, cid, [1, 2]))
    assert redeemed["status"] == 1
    (payout,) = ctf.events.PayoutRedemption().process_receipt(redeemed, errors=DISCARD)
    (pulled,) = [e for e in ctf.events.TransferBatch().process_receipt(redeemed, errors=DISCARD)
                 if e["args"]["from"] == acct.address]
    assert payout["args"]["conditionId"] == cid and payout["args"]["payout"] == held
    assert payout["args"]["redeemer"] == ADAPTER and pulled["args"]["values"] == [0, held]
    assert pusd.functions.balanceOf(acct.address).call() == before_pusd + held
    assert ctf.functions.balanceOf(acct.address, int(down)).call() == 0
    assert w3.eth.get_balance(acct.address) == before_pol - redeemed["gasUsed"] * redeemed["effectiveGasPrice"]
