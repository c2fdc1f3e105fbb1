"""The deposit-wallet relayer: EIP-712 batches signed with eth-account by the wallet's owner, submitted over HTTP,
polled to a terminal state; the same signed request is one transaction however often it is sent; refusals with
their texts; faults (lost answers, stalls past the deadline, a paused adapter). Black-box against a polysim process."""
import json
import time

import httpx
from conftest import (
    ADAPTER,
    CTF,
    approve_data,
    buy,
    eventually,
    ground_truth,
    redeem_data,
    resolve,
    rpc,
    wallet,
)
from eth_account import Account
from eth_account.messages import encode_typed_data

OWNER_KEY = "0x" + "d1" * 32
OWNER = Account.from_key(OWNER_KEY).address
DW = "0x" + "d1" * 19 + "01"                     # the deposit wallet (its CREATE2 derivation is not simulated)
OTHER_KEY = "0x" + "d2" * 32
DW_FAULTS = "0x" + "d2" * 19 + "02"
AUTH = {"RELAYER_API_KEY": "00000000-0000-4000-8000-000000000001", "RELAYER_API_KEY_ADDRESS": OWNER}
FACTORY = "0x00000000000Fb5C9ADea0298D729A0CB3823Cc07"


def _batch(key: str, wallet_address: str, nonce: int, calls: list[tuple[str, str]], deadline: int | None = None,
           *, sign_nonce: int | None = None) -> dict:
    """The relayer request a client builds: the batch signed as EIP-712 Batch in the wallet's domain."""
    deadline = deadline if deadline is not None else int(time.time()) + 600
    typed = {"domain": {"name": "DepositWallet", "version": "1", "chainId": 137, "verifyingContract": wallet_address},
             "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                        {"name": "chainId", "type": "uint256"},
                                        {"name": "verifyingContract", "type": "address"}],
                       "Batch": [{"name": "wallet", "type": "address"}, {"name": "nonce", "type": "uint256"},
                                 {"name": "deadline", "type": "uint256"}, {"name": "calls", "type": "Call[]"}],
                       "Call": [{"name": "target", "type": "address"}, {"name": "value", "type": "uint256"},
                                {"name": "data", "type": "bytes"}]},
             "primaryType": "Batch",
             "message": {"wallet": wallet_address, "nonce": sign_nonce if sign_nonce is not None else nonce,
                         "deadline": deadline,
                         "calls": [{"target": t, "value": 0, "data": bytes.fromhex(d[2:])} for t, d in calls]}}
    signed = Account.from_key(key).sign_message(encode_typed_data(full_message=typed))
    return {"type": "WALLET", "from": Account.from_key(key).address, "to": FACTORY, "nonce": str(nonce),
            "signature": "0x" + signed.signature.hex(), "metadata": "redeem",
            "depositWalletParams": {"depositWallet": wallet_address, "deadline": str(deadline),
                                    "calls": [{"target": t, "value": "0", "data": d} for t, d in calls]}}


def _submit(urls, body, headers=AUTH) -> httpx.Response:
    return httpx.post(f"{urls['relayer']}/submit", json=body, headers=headers, timeout=5)


def _state(urls, tx_id: str) -> dict:
    return httpx.get(f"{urls['relayer']}/v1/account/transactions/{tx_id}", timeout=5).json()


def _in_state(urls, tx_id: str, *states: str) -> dict | None:
    doc = _state(urls, tx_id)
    return doc if doc["state"] in states else None


def _terminal(urls, tx_id: str) -> dict:
    return eventually(lambda: _in_state(urls, tx_id, "STATE_CONFIRMED", "STATE_FAILED", "STATE_INVALID"), 20, 0.1,
                      f"relayer transaction {tx_id} to end")


def _nonce(urls, owner: str) -> int:
    doc = httpx.get(f"{urls['relayer']}/v1/account/transactions/params", params={"address": owner, "type": "WALLET"},
                    timeout=5).json()
    return int(doc["nonce"])


def test_relayer_redeems_for_a_deposit_wallet_gas_free_and_once_per_signed_request(life_sim):
    s = life_sim
    httpx.post(f"{s['control']}/wallets/fund", json={"address": DW, "owner": OWNER, "pusd": 200}, timeout=5)
    assert httpx.get(f"{s['relayer']}/deployed", params={"address": DW, "type": "WALLET"}).json() == {"deployed": True}
    m = buy(s, OWNER_KEY, "Down", 10, funder=DW)
    down = json.loads(m["clobTokenIds"])[1]
    held = next(p for p in wallet(s, DW)["positions"] if p["token_id"] == down)["units"]
    before = wallet(s, DW)
    resolve(s, m, "Down")
    nonce = _nonce(s, OWNER)
    assert nonce == 0 and before["deposit_wallet"] == {"owner": OWNER.lower(), "nonce": 0}
    body = _batch(OWNER_KEY, DW, nonce, [(CTF, approve_data(ADAPTER)), (ADAPTER, redeem_data(m["conditionId"]))])
    first = _submit(s, body)
    assert first.status_code == 200 and first.json()["state"] == "STATE_NEW", first.text
    tx_id = first.json()["transactionID"]
    assert _submit(s, body).json()["transactionID"] == tx_id          # the same request: the same transaction
    done = _terminal(s, tx_id)
    assert done["state"] == "STATE_CONFIRMED" and done["transaction_hash"] and done["error_msg"] is None
    assert _submit(s, body).json() == {"transactionID": tx_id, "state": "STATE_CONFIRMED",
                                       "transactionHash": done["transaction_hash"]}
    after = wallet(s, DW)
    assert round(after["pusd"] * 1e6) == round(before["pusd"] * 1e6) + held      # paid once
    assert after["pol_wei"] == before["pol_wei"] and after["deposit_wallet"]["nonce"] == 1 and after["nonce"] == 0
    assert _nonce(s, OWNER) == 1
    (row,) = httpx.get(f"{s['relayer']}/transaction", params={"id": tx_id}).json()
    assert row["state"] == "STATE_CONFIRMED" and row["proxyAddress"] == DW and row["type"] == "WALLET" and \
        row["transactionHash"] == done["transaction_hash"] and row["owner"] == OWNER.lower()
    mine = httpx.get(f"{s['relayer']}/transactions", headers=AUTH).json()
    assert tx_id in [x["transactionID"] for x in mine]
    r = rpc(s, "eth_getTransactionReceipt", done["transaction_hash"])["result"]
    assert r["status"] == "0x1" and r["from"] != DW and r["to"] == FACTORY.lower()
    truth = ground_truth(s)
    (red,) = [t for t in truth if t["kind"] == "redemption" and t["wallet"] == DW]
    assert (red["via"], red["relayer_id"], red["payout_units"], red["gas_paid_wei"]) == ("relayer", tx_id, held, "0")
    assert [t["event"] for t in truth if t["kind"] == "relayer" and t.get("relayer_id") == tx_id] == \
        ["accepted", "resent", "resent"]
    # A second batch with the used nonce is refused with the relayer's own words.
    stale = _submit(s, _batch(OWNER_KEY, DW, 0, [(ADAPTER, redeem_data(m["conditionId"]))]))
    assert stale.status_code == 400 and stale.json() == {"error": "batch nonce 0 does not match on-chain nonce 1"}


def test_relayer_refuses_bad_requests_with_a_reason(life_sim):
    s = life_sim
    httpx.post(f"{s['control']}/wallets/fund", json={"address": DW_FAULTS, "owner": Account.from_key(OTHER_KEY)
                                                     .address}, timeout=5)
    call = [(CTF, approve_data(ADAPTER))]
    other = {"RELAYER_API_KEY": "k", "RELAYER_API_KEY_ADDRESS": Account.from_key(OTHER_KEY).address}
    assert _submit(s, _batch(OTHER_KEY, DW_FAULTS, 0, call), headers={}).status_code == 401
    cases = [
        (_batch(OTHER_KEY, "0x" + "77" * 20, 0, call),
         "deposit wallet 0x7777777777777777777777777777777777777777 is not deployed"),
        (_batch(OWNER_KEY, DW_FAULTS, 0, call), "invalid signature"),                    # not the owner's key
        (_batch(OTHER_KEY, DW_FAULTS, 0, call, sign_nonce=5), "invalid signature"),      # signed something else
        (_batch(OTHER_KEY, DW_FAULTS, 0, call, deadline=int(time.time()) - 1), None),
        (_batch(OTHER_KEY, DW_FAULTS, 0, call, deadline=int(time.time()) + 2), None),
        (_batch(OTHER_KEY, DW_FAULTS, 3, call), "batch nonce 3 does not match on-chain nonce 0"),
        ({**_batch(OTHER_KEY, DW_FAULTS, 0, call), "type": "SAFE"}, None),
        ({**_batch(OTHER_KEY, DW_FAULTS, 0, call), "depositWalletParams": {"calls": []}}, None),
        ("not an object", "invalid request body"),
    ]
    for body, text in cases:
        out = _submit(s, body, headers=other)
        assert out.status_code == 400, (body, out.text)
        assert text is None or out.json() == {"error": text}, out.json()
    assert _submit(s, _batch(OTHER_KEY, DW_FAULTS, 0, call, deadline=int(time.time()) - 1),
                   headers=other).json()["error"].startswith("deadline expired")
    assert _submit(s, _batch(OTHER_KEY, DW_FAULTS, 0, call, deadline=int(time.time()) + 2),
                   headers=other).json()["error"].startswith("deadline too soon")
    raw = httpx.post(f"{s['relayer']}/submit", content=b"<html>", headers=other, timeout=5)
    assert raw.status_code == 400 and "error" in raw.json()
    assert httpx.get(f"{s['relayer']}/v1/account/transactions/nope").status_code == 404
    assert httpx.get(f"{s['relayer']}/transaction", params={"id": "nope"}).json() == []
    assert httpx.get(f"{s['relayer']}/nonce", params={"address": "0x12", "type": "WALLET"}).status_code == 400
    # One batch in flight at a time per wallet: the next waits for it.
    httpx.post(f"{s['control']}/faults", json={"relayer_stall": {"count": 1, "seconds": 2}}, timeout=5)
    accepted = _submit(s, _batch(OTHER_KEY, DW_FAULTS, 0, call), headers=other)
    assert accepted.status_code == 200
    busy = _submit(s, _batch(OTHER_KEY, DW_FAULTS, 0, [(CTF, approve_data(CTF))]), headers=other)
    assert busy.status_code == 400 and busy.json() == {"error": "wallet has in-flight action"}
    assert _terminal(s, accepted.json()["transactionID"])["state"] == "STATE_CONFIRMED"


def test_relayer_faults_lose_answers_stall_past_deadlines_and_fail_on_chain(life_sim):
    s = life_sim
    key = OTHER_KEY
    headers = {"RELAYER_API_KEY": "k", "RELAYER_API_KEY_ADDRESS": Account.from_key(key).address}
    wallet_address = "0x" + "d3" * 19 + "03"
    httpx.post(f"{s['control']}/wallets/fund", json={"address": wallet_address, "owner": Account.from_key(key)
                                                     .address}, timeout=5)
    # 503 before acting: nothing accepted.
    httpx.post(f"{s['control']}/faults", json={"relayer_5xx": {"count": 1}}, timeout=5)
    body = _batch(key, wallet_address, 0, [(CTF, approve_data(ADAPTER))])
    assert _submit(s, body, headers).status_code == 503
    # The answer lost after acceptance: sending the same request again finds the same transaction.
    httpx.post(f"{s['control']}/faults", json={"relayer_lost_answer": {"count": 1}}, timeout=5)
    lost = _submit(s, body, headers)
    assert lost.status_code == 502
    again = _submit(s, body, headers)
    assert again.status_code == 200
    assert _terminal(s, again.json()["transactionID"])["state"] == "STATE_CONFIRMED"
    assert wallet(s, wallet_address)["deposit_wallet"]["nonce"] == 1
    accepted = [t for t in ground_truth(s) if t["kind"] == "relayer" and t["event"] == "accepted"
                and t["wallet"] == wallet_address]
    assert len(accepted) == 1
    # Stalled past its deadline: never sent, STATE_INVALID, the nonce unused (the next batch takes it).
    httpx.post(f"{s['control']}/faults", json={"relayer_stall": {"count": 1, "seconds": 4}}, timeout=5)
    late = _submit(s, _batch(key, wallet_address, 1, [(CTF, approve_data(CTF))], deadline=int(time.time()) + 3),
                   headers)
    assert late.status_code == 200
    invalid = eventually(lambda: _in_state(s, late.json()["transactionID"], "STATE_INVALID"), 10, 0.1,
                         "the stalled batch to expire")
    assert invalid["transaction_hash"] is None and "deadline" in invalid["error_msg"]
    assert wallet(s, wallet_address)["deposit_wallet"]["nonce"] == 1
    # A paused adapter: the batch is mined and reverts whole (the approval too), STATE_FAILED with the reason;
    # the relayer paid the gas.
    httpx.post(f"{s['control']}/faults", json={"adapter_paused": {"seconds": 30}}, timeout=5)
    try:
        failing = _submit(s, _batch(key, wallet_address, 1, [(CTF, approve_data(AUTO)),
                                                            (ADAPTER, redeem_data("0x" + "ab" * 32))]), headers)
        failed = _terminal(s, failing.json()["transactionID"])
    finally:                                         # unpaused for the tests after this one
        httpx.post(f"{s['control']}/faults", json={"adapter_paused": {"seconds": 0}}, timeout=5)
    assert failed["state"] == "STATE_FAILED" and failed["transaction_hash"] and failed["error_msg"] == \
        "execution reverted"
    doc = wallet(s, wallet_address)
    assert doc["deposit_wallet"]["nonce"] == 1 and AUTO not in doc["approved_operators"] and doc["pol_wei"] == "0"
    r = rpc(s, "eth_getTransactionReceipt", failed["transaction_hash"])["result"]
    assert r["status"] == "0x0" and r["logs"] == [] and int(r["gasUsed"], 16) > 0


AUTO = "0xa1200000d0002264c9a1698e001292d00e1b00af"
