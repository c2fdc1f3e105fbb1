"""The Polygon node for wallets: balances by eth_call, signed transactions (eth-account, as a wallet signs them) to the
collateral adapter, geth's answers to bad or repeated transactions, receipts and logs, gas in POL, node faults.
Black-box over JSON-RPC (HTTP and websocket) against a polysim process."""
import json
import time

import httpx
import pytest
import websocket
from conftest import (
    ADAPTER,
    CTF,
    GWEI,
    NEG_RISK_ADAPTER,
    PUSD,
    approve_data,
    buy,
    calldata,
    eventually,
    ground_truth,
    merge_data,
    receipt,
    redeem_data,
    resolve,
    rpc,
    send_tx,
    sign_tx,
    wallet,
)
from eth_abi import decode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

TRANSFER_BATCH = "0x" + keccak(text="TransferBatch(address,address,address,uint256[],uint256[])").hex()
TRANSFER_SINGLE = "0x" + keccak(text="TransferSingle(address,address,address,uint256,uint256)").hex()
TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
PAYOUT_REDEMPTION = "0x" + keccak(text="PayoutRedemption(address,address,bytes32,bytes32,uint256[],uint256)").hex()
POSITIONS_MERGE = "0x" + keccak(text="PositionsMerge(address,address,bytes32,bytes32,uint256[],uint256)").hex()
APPROVAL_FOR_ALL = "0x" + keccak(text="ApprovalForAll(address,address,bool)").hex()
KEY_EOA = "0x" + "e1" * 32
KEY_MERGE = "0x" + "e2" * 32
KEY_ERRORS = "0x" + "e3" * 32
KEY_FAULTS = "0x" + "e4" * 32
KEY_POOR = "0x" + "e5" * 32


def _word(address: str) -> str:
    return "0x" + address.lower()[2:].rjust(64, "0")


def _call(urls, to: str, data: str) -> bytes:
    out = rpc(urls, "eth_call", {"to": to, "data": data}, "latest")
    assert "result" in out, out
    return bytes.fromhex(out["result"][2:])


def _pusd(urls, address: str) -> int:
    return decode(["uint256"], _call(urls, PUSD, calldata("balanceOf(address)", ["address"], [address])))[0]


def _tokens(urls, address: str, token_ids: list[str]) -> list[int]:
    data = calldata("balanceOfBatch(address[],uint256[])", ["address[]", "uint256[]"],
                    [[address] * len(token_ids), [int(t) for t in token_ids]])
    return list(decode(["uint256[]"], _call(urls, CTF, data))[0])


def _pol(urls, address: str) -> int:
    return int(rpc(urls, "eth_getBalance", address, "latest")["result"], 16)


def _error(urls, raw: str) -> dict:
    out = rpc(urls, "eth_sendRawTransaction", raw)
    assert "error" in out, out
    return out["error"]


def test_node_redeem_from_an_eoa_pays_the_winning_tokens_and_the_sender_pays_the_gas(life_sim):
    s = life_sim
    me = Account.from_key(KEY_EOA).address
    m = buy(s, KEY_EOA, "Up", 12)
    up, down = json.loads(m["clobTokenIds"])
    held = _tokens(s, me, [up, down])
    pusd_before, pol_before = _pusd(s, me), _pol(s, me)
    assert held[0] > 0 and held[1] == 0 and pusd_before == round(wallet(s, me)["pusd"] * 1e6)
    # Before the resolution: the adapter's redeem reverts in the CTF (and first in the ERC1155 approval).
    no_approval = rpc(s, "eth_estimateGas", {"from": me, "to": ADAPTER, "data": redeem_data(m["conditionId"])})
    assert no_approval["error"]["code"] == 3
    assert no_approval["error"]["message"] == \
        "execution reverted: ERC1155: need operator approval for 3rd party transfers."
    approve = receipt(s, send_tx(KEY_EOA, s, CTF, approve_data(ADAPTER)))
    assert approve["status"] == "0x1" and [x["topics"][0] for x in approve["logs"]] == [APPROVAL_FOR_ALL]
    assert decode(["bool"], _call(s, CTF, calldata("isApprovedForAll(address,address)", ["address", "address"],
                                                   [me, ADAPTER])))[0] is True
    unresolved = rpc(s, "eth_estimateGas", {"from": me, "to": ADAPTER, "data": redeem_data(m["conditionId"])})
    assert unresolved["error"]["message"] == "execution reverted: result for condition not received yet"
    assert decode(["uint256"], _call(s, CTF, calldata("payoutDenominator(bytes32)", ["bytes32"],
                                                      [bytes.fromhex(m["conditionId"][2:])])))[0] == 0
    resolve(s, m, "Up")
    assert decode(["uint256"], _call(s, CTF, calldata("payoutDenominator(bytes32)", ["bytes32"],
                                                      [bytes.fromhex(m["conditionId"][2:])])))[0] == 1
    # A legacy EIP-155 transaction, as the unified SDK signs its EOA calls.
    raw = sign_tx(KEY_EOA, s, ADAPTER, redeem_data(m["conditionId"]), legacy=True)
    tx_hash = rpc(s, "eth_sendRawTransaction", raw)["result"]
    assert tx_hash == "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    r = receipt(s, tx_hash)
    assert r["status"] == "0x1" and r["from"] == me.lower() and r["to"] == ADAPTER
    topics = [x["topics"][0] for x in r["logs"]]
    assert topics == [TRANSFER_BATCH, TRANSFER_SINGLE, TRANSFER, PAYOUT_REDEMPTION, TRANSFER, TRANSFER,
                      topics[-1]]
    batch = r["logs"][0]
    assert batch["address"] == CTF and batch["topics"][2] == _word(me) and batch["topics"][3] == _word(ADAPTER)
    assert list(decode(["uint256[]", "uint256[]"], bytes.fromhex(batch["data"][2:]))[1]) == held
    redemption = r["logs"][3]
    assert redemption["topics"][1] == _word(ADAPTER)                # the redeemer is the adapter, not the wallet
    assert decode(["bytes32", "uint256[]", "uint256"], bytes.fromhex(redemption["data"][2:]))[2] == held[0]
    mint = r["logs"][5]
    assert mint["address"] == PUSD and mint["topics"][1] == _word("0x" + "00" * 20) and \
        mint["topics"][2] == _word(me) and int(mint["data"], 16) == held[0]
    # pUSD up by one per winning token; tokens gone; POL down by exactly gas used x effective price.
    assert _pusd(s, me) == pusd_before + held[0] and _tokens(s, me, [up, down]) == [0, 0]
    gas_paid = int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16)
    approve_paid = int(approve["gasUsed"], 16) * int(approve["effectiveGasPrice"], 16)
    assert int(r["effectiveGasPrice"], 16) == 60 * GWEI and _pol(s, me) == pol_before - gas_paid - approve_paid
    logs = rpc(s, "eth_getLogs", {"fromBlock": r["blockNumber"], "toBlock": r["blockNumber"],
                                  "topics": [PAYOUT_REDEMPTION]})["result"]
    assert [x["transactionHash"] for x in logs] == [tx_hash]
    # The same bytes again: the nonce is used, nothing happens twice.
    assert _error(s, raw)["message"].startswith("nonce too low: next nonce ")
    assert _pusd(s, me) == pusd_before + held[0]
    # A second redemption (a new transaction) finds nothing to burn and pays nothing, and still costs gas.
    again = receipt(s, send_tx(KEY_EOA, s, ADAPTER, redeem_data(m["conditionId"])))
    assert again["status"] == "0x1" and _pusd(s, me) == pusd_before + held[0]
    truth = ground_truth(s)
    mine = [t for t in truth if t["kind"] == "redemption" and t["wallet"] == me.lower()]
    assert [(t["tx_hash"], t["payout_units"], t["via"]) for t in mine] == [(tx_hash, held[0], "eoa"),
                                                                           (again["transactionHash"], 0, "eoa")]
    assert mine[0]["burned"] == {up: held[0]} and mine[0]["gas_paid_wei"] == str(gas_paid)
    txs = {t["tx_hash"]: t for t in truth if t["kind"] == "chain_tx"}
    assert txs[tx_hash]["gas_paid_wei"] == str(gas_paid) and txs[approve["transactionHash"]]["status"] == 1


def test_node_merge_turns_full_sets_into_pusd_and_refuses_more_than_held(life_sim):
    s = life_sim
    me = Account.from_key(KEY_MERGE).address
    m = buy(s, KEY_MERGE, "Up", 6)
    buy(s, KEY_MERGE, "Down", 6, market=m)
    tokens = json.loads(m["clobTokenIds"])
    held = _tokens(s, me, tokens)
    sets = min(held)
    assert sets > 0
    receipt(s, send_tx(KEY_MERGE, s, CTF, approve_data(ADAPTER)))
    too_many = rpc(s, "eth_estimateGas", {"from": me, "to": ADAPTER, "data": merge_data(m["conditionId"],
                                                                                         sets + 1)})
    assert too_many["error"]["message"] == "execution reverted: SafeMath: subtraction overflow"
    before = _pusd(s, me)
    r = receipt(s, send_tx(KEY_MERGE, s, ADAPTER, merge_data(m["conditionId"], sets)))
    assert r["status"] == "0x1" and POSITIONS_MERGE in [x["topics"][0] for x in r["logs"]]
    assert _tokens(s, me, tokens) == [held[0] - sets, held[1] - sets] and _pusd(s, me) == before + sets
    merges = [t for t in ground_truth(s) if t["kind"] == "merge" and t["wallet"] == me.lower()]
    assert [(t["amount_units"], t["tx_hash"]) for t in merges] == [(sets, r["transactionHash"])]
    # The neg-risk adapter names other position ids: nothing of this standard market is burned or paid.
    receipt(s, send_tx(KEY_MERGE, s, CTF, approve_data(NEG_RISK_ADAPTER)))
    resolve(s, m, "Down")
    wrong = receipt(s, send_tx(KEY_MERGE, s, NEG_RISK_ADAPTER, redeem_data(m["conditionId"])))
    assert wrong["status"] == "0x1" and _tokens(s, me, tokens) == [held[0] - sets, held[1] - sets]


def test_node_answers_bad_and_repeated_transactions_like_geth(life_sim):
    s = life_sim
    acct = Account.from_key(KEY_ERRORS)
    httpx.post(f"{s['control']}/wallets/fund", json={"address": acct.address, "pol": 1}, timeout=5)
    to, data = CTF, approve_data(ADAPTER)

    def raw(**kw):
        return sign_tx(KEY_ERRORS, s, to, data, **{"gas": 80_000, **kw})
    assert _error(s, raw(chainId=1))["message"] == "invalid sender: invalid chain id for signer: have 1 want 137"
    unprotected = Account.from_key(KEY_ERRORS).sign_transaction(
        {"to": to_checksum_address(to), "data": data, "gas": 80_000, "gasPrice": 60 * GWEI, "nonce": 0, "value": 0})
    assert _error(s, "0x" + unprotected.raw_transaction.hex())["message"] == \
        "only replay-protected (EIP-155) transactions allowed over RPC"
    assert _error(s, raw(gas=21_000))["message"].startswith("intrinsic gas too low: gas 21000, minimum needed ")
    assert _error(s, raw(gas=31_000_000))["message"] == "exceeds block gas limit"
    assert _error(s, raw(maxFeePerGas=40 * GWEI, maxPriorityFeePerGas=50 * GWEI))["message"].startswith(
        "max priority fee per gas higher than max fee per gas")
    assert _error(s, raw(maxPriorityFeePerGas=GWEI))["message"] == \
        f"transaction gas price below minimum: gas tip cap {GWEI}, minimum needed {25 * GWEI}"
    assert _error(s, raw(gas=20_000_000))["message"].startswith(
        "insufficient funds for gas * price + value: balance 1000000000000000000, tx cost 2000000000000000000")
    for garbage, code in (("0x", -32000), ("0xdeadbeef", -32000), ("0x03" + "00" * 40, -32000),
                          ("not hex", -32602), ("0xzz", -32602)):
        assert _error(s, garbage)["code"] == code, garbage
    assert rpc(s, "eth_sendRawTransaction", 7)["error"]["code"] == -32602
    # A gap waits in the queue; the missing nonce lets both through in order.
    later = raw(nonce=1)
    later_hash = rpc(s, "eth_sendRawTransaction", later)["result"]
    assert int(rpc(s, "eth_getTransactionCount", acct.address, "pending")["result"], 16) == 0
    first = raw(nonce=0)
    first_hash = rpc(s, "eth_sendRawTransaction", first)["result"]
    assert receipt(s, first_hash)["status"] == "0x1" and receipt(s, later_hash)["status"] == "0x1"
    assert int(rpc(s, "eth_getTransactionCount", acct.address, "latest")["result"], 16) == 2
    assert _error(s, first)["message"] == "nonce too low: next nonce 2, tx nonce 0"
    # A fee cap under the base fee is accepted and never mined (as on a real node) ...
    stuck_raw = raw(nonce=2, maxFeePerGas=29 * GWEI, maxPriorityFeePerGas=25 * GWEI)
    stuck = rpc(s, "eth_sendRawTransaction", stuck_raw)["result"]
    assert _error(s, stuck_raw)["message"] == "already known"
    pending = rpc(s, "eth_getTransactionByHash", stuck)["result"]
    assert pending["blockNumber"] is None and pending["from"] == acct.address.lower() and pending["nonce"] == "0x2"
    assert int(rpc(s, "eth_getTransactionCount", acct.address, "pending")["result"], 16) == 3
    # ... a replacement needs 10 % more of both fees ...
    assert _error(s, raw(nonce=2, maxFeePerGas=31 * GWEI, maxPriorityFeePerGas=28 * GWEI))["message"] == \
        "replacement transaction underpriced"
    # ... and one that pays it is mined instead.
    bumped = rpc(s, "eth_sendRawTransaction", raw(nonce=2, maxFeePerGas=60 * GWEI,
                                                  maxPriorityFeePerGas=30 * GWEI))["result"]
    assert receipt(s, bumped)["status"] == "0x1"
    assert rpc(s, "eth_getTransactionReceipt", stuck)["result"] is None
    assert rpc(s, "eth_getTransactionByHash", stuck)["result"] is None


def test_node_a_reverted_transaction_is_mined_uses_its_nonce_and_pays_gas(life_sim):
    s = life_sim
    poor = Account.from_key(KEY_POOR).address
    httpx.post(f"{s['control']}/wallets/fund", json={"address": poor, "pol": 0.05}, timeout=5)
    m = httpx.get(f"{s['gamma']}/markets", params={"closed": "false"}, timeout=5).json()[0]
    before = _pol(s, poor)
    # Forced with an explicit gas limit: the adapter reverts (no approval), the block still takes it.
    tx_hash = send_tx(KEY_POOR, s, ADAPTER, redeem_data(m["conditionId"]), gas=200_000)
    r = receipt(s, tx_hash)
    assert r["status"] == "0x0" and r["logs"] == [] and int(r["gasUsed"], 16) < 200_000
    assert _pol(s, poor) == before - int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16)
    assert int(rpc(s, "eth_getTransactionCount", poor, "latest")["result"], 16) == 1
    (row,) = [t for t in ground_truth(s) if t["kind"] == "chain_tx" and t["tx_hash"] == tx_hash]
    assert row["status"] == 0 and row["revert"] == \
        "execution reverted: ERC1155: need operator approval for 3rd party transfers."
    # Out of gas: the whole limit is paid.
    oog = receipt(s, send_tx(KEY_POOR, s, CTF, approve_data(ADAPTER), gas=30_000))
    assert oog["status"] == "0x0" and int(oog["gasUsed"], 16) == 30_000
    # Not enough POL left for the gas: refused before the pool.
    out = rpc(s, "eth_sendRawTransaction", sign_tx(KEY_POOR, s, CTF, approve_data(ADAPTER), gas=2_000_000))
    assert out["error"]["message"].startswith("insufficient funds for gas * price + value")


def test_node_reads_fees_codes_and_calls_for_a_standard_client(life_sim):
    s = life_sim
    assert int(rpc(s, "eth_gasPrice")["result"], 16) == 60 * GWEI
    assert int(rpc(s, "eth_maxPriorityFeePerGas")["result"], 16) == 30 * GWEI
    history = rpc(s, "eth_feeHistory", "0x4", "latest", [25, 75])["result"]
    assert len(history["baseFeePerGas"]) == 5 and len(history["reward"]) == 4 and len(history["reward"][0]) == 2
    assert rpc(s, "eth_getCode", ADAPTER, "latest")["result"] != "0x"
    assert rpc(s, "eth_getCode", Account.from_key(KEY_EOA).address, "latest")["result"] == "0x"
    assert decode(["uint8"], _call(s, PUSD, calldata("decimals()", [], [])))[0] == 6
    assert rpc(s, "eth_call", {"to": ADAPTER, "data": "0x12345678"}, "latest")["error"]["code"] == 3
    for bad in ({"to": "0x12"}, {"to": PUSD, "data": "0xzz"}, "nope", {"data": "0x"}):
        assert "error" in rpc(s, "eth_call", bad, "latest"), bad
    assert rpc(s, "eth_call", {"to": PUSD, "data": "0x70a08231" + "ff"}, "latest")["error"]["code"] == 3
    assert rpc(s, "eth_getBalance", "0x12", "latest")["error"]["code"] == -32602
    batch = httpx.post(s["rpc_http"], json=[{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
                                            {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber"}], timeout=5).json()
    assert [x["id"] for x in batch] == [1, 2] and batch[0]["result"] == "0x89"
    assert rpc(s, "eth_subscribe", "newHeads")["error"]["message"] == "notifications not supported"
    assert httpx.post(s["rpc_http"], content=b"{not json", timeout=5).json()["error"]["code"] == -32700


def test_node_faults_fail_stall_or_lose_the_answer_and_never_apply_twice(life_sim):
    s = life_sim
    me = Account.from_key(KEY_FAULTS).address
    httpx.post(f"{s['control']}/wallets/fund", json={"address": me, "pol": 1}, timeout=5)
    raw = sign_tx(KEY_FAULTS, s, CTF, approve_data(ADAPTER), gas=80_000)
    httpx.post(f"{s['control']}/faults", json={"rpc_5xx": {"count": 1}}, timeout=5)
    failed = httpx.post(s["rpc_http"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                                             "params": [raw]}, timeout=5)
    assert failed.status_code == 503 and "503" in failed.text
    assert int(rpc(s, "eth_getTransactionCount", me, "pending")["result"], 16) == 0      # nothing applied
    httpx.post(f"{s['control']}/faults", json={"rpc_lost_answer": {"count": 1}}, timeout=5)
    lost = httpx.post(s["rpc_http"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                                           "params": [raw]}, timeout=5)
    assert lost.status_code == 504
    tx_hash = "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    assert receipt(s, tx_hash)["status"] == "0x1"                 # it went through: the receipt tells
    assert _error(s, raw)["message"] == "nonce too low: next nonce 1, tx nonce 0"
    assert len([t for t in ground_truth(s) if t["kind"] == "chain_tx" and t["tx_hash"] == tx_hash]) == 1
    httpx.post(f"{s['control']}/faults", json={"rpc_stall": {"count": 1, "seconds": 1.0}}, timeout=5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(s["rpc_http"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=0.5)
    # The websocket: a lost answer closes the connection; the transaction is in anyway.
    ws = websocket.create_connection(s["rpc_ws"], timeout=5)
    try:
        raw2 = sign_tx(KEY_FAULTS, s, CTF, approve_data(NEG_RISK_ADAPTER), gas=80_000)
        httpx.post(f"{s['control']}/faults", json={"rpc_lost_answer": {"count": 1}}, timeout=5)
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw2]}))
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.recv()
            ws.recv()
    finally:
        ws.close()
    assert receipt(s, "0x" + keccak(bytes.fromhex(raw2[2:])).hex())["status"] == "0x1"
    eventually(lambda: wallet(s, me)["nonce"] == 2, 5, 0.1, "both transactions mined once")


def test_node_survives_hostile_request_bodies(life_sim):
    s = life_sim
    deep = "[" * 100_000 + "]" * 100_000
    for body in (deep.encode(), b"\xff\xfe\x00garbage", b"<html>502</html>", b"[]", b'{"jsonrpc": "2.0"}',
                 json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                             "params": [{"to": PUSD, "data": "0x70a08231" + "f" * 64}, {"nested": [[[]]]}]}).encode(),
                 json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [None, None]}).encode(),
                 json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_feeHistory", "params": ["0x" + "f" * 70,
                                                                                              "latest"]}).encode()):
        out = httpx.post(s["rpc_http"], content=body, timeout=10)
        assert out.status_code == 200, body[:40]
        doc = out.json()
        assert isinstance(doc, dict) and doc["jsonrpc"] == "2.0" and ("error" in doc) != ("result" in doc), doc
    assert httpx.post(f"{s['relayer']}/submit", content=deep.encode(),
                      headers={"RELAYER_API_KEY": "k", "RELAYER_API_KEY_ADDRESS": "0x" + "11" * 20},
                      timeout=10).status_code == 400
    assert httpx.post(f"{s['control']}/wallets/fund", content=deep.encode(), timeout=10).status_code == 400
    assert rpc(s, "eth_chainId")["result"] == "0x89"                     # still serving


def test_node_subscriptions_see_a_wallets_transaction_pending_then_its_logs(life_sim):
    s = life_sim
    key = "0x" + "e6" * 32
    m = buy(s, key, "Up", 5)
    receipt(s, send_tx(key, s, CTF, approve_data(ADAPTER)))
    resolve(s, m, "Up")
    ws = websocket.create_connection(s["rpc_ws"], timeout=5)
    try:
        def sub(params):
            ws.send(json.dumps({"jsonrpc": "2.0", "id": len(params), "method": "eth_subscribe", "params": params}))
            return json.loads(ws.recv())["result"]
        pending = sub(["newPendingTransactions"])
        logs = sub(["logs", {"address": CTF, "topics": [PAYOUT_REDEMPTION]}])
        tx_hash = send_tx(key, s, ADAPTER, redeem_data(m["conditionId"]))
        seen: dict[str, list] = {pending: [], logs: []}
        deadline = time.monotonic() + 10
        while not seen[logs] and time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("method") == "eth_subscription" and msg["params"]["subscription"] in seen:
                seen[msg["params"]["subscription"]].append(msg["params"]["result"])
    finally:
        ws.close()
    assert tx_hash in seen[pending]
    (log,) = [x for x in seen[logs] if x["transactionHash"] == tx_hash]
    assert log["topics"][1] == _word(ADAPTER) and log["removed"] is False
