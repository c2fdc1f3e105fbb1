"""The fast order-signature path agrees with eth-account's EIP-712 encoder and the SDK's signers."""
import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import CreateOrderOptions, OrderArgsV2
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2

from polysim import crypto

KEY = "0x" + "3c" * 32
_TYPES = {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                           {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
          "Order": [{"name": n, "type": t} for n, t in (
              ("salt", "uint256"), ("maker", "address"), ("signer", "address"), ("tokenId", "uint256"),
              ("makerAmount", "uint256"), ("takerAmount", "uint256"), ("side", "uint8"), ("signatureType", "uint8"),
              ("timestamp", "uint256"), ("metadata", "bytes32"), ("builder", "bytes32"))]}


def _signed(neg_risk=False, version=2, **client_kw) -> dict:
    c = ClobClient("http://127.0.0.1:9", chain_id=137, key=KEY, **client_kw)
    o = c.builder.build_order(OrderArgsV2(token_id="1234567", price=0.43, size=12, side="SELL"),
                              CreateOrderOptions(tick_size="0.01", neg_risk=neg_risk), version=version)
    return order_to_json_v2(o, "k", "GTC")["order"]


def _reference_hash(order: dict, contract: str, version: str) -> str:
    msg = {k: int(order[k]) for k in ("salt", "tokenId", "makerAmount", "takerAmount", "signatureType", "timestamp")}
    msg.update(maker=order["maker"], signer=order["signer"], side=1 if order["side"] == "SELL" else 0,
               metadata=bytes.fromhex(order["metadata"][2:]), builder=bytes.fromhex(order["builder"][2:]))
    s = encode_typed_data(full_message={"types": _TYPES, "primaryType": "Order", "message": msg, "domain": {
        "name": "Polymarket CTF Exchange", "version": version, "chainId": 137, "verifyingContract": contract}})
    return "0x" + keccak(b"\x19" + s.version + s.header + s.body).hex()


@pytest.mark.parametrize("neg_risk,contract", [(False, crypto.EXCHANGE_V2), (True, crypto.NEG_RISK_EXCHANGE_V2)])
def test_order_hash_matches_eth_account_and_recovers_the_sdk_signer(neg_risk, contract):
    order = _signed(neg_risk)
    h, signer = crypto.order_hash_and_signer(order, contract, "2")
    assert h == _reference_hash(order, contract, "2")
    assert signer == order["signer"].lower()


def test_a_v2_order_checked_against_the_v3_domain_recovers_someone_else():
    order = _signed()
    assert crypto.order_hash_and_signer(order, crypto.EXCHANGE_V3, "3")[1] != order["signer"].lower()


def test_poly_1271_wrapper_recovers_the_deposit_wallet_owner_and_rejects_a_foreign_wrapper():
    funder = "0x" + "ab" * 20
    order = _signed(neg_risk=True, signature_type=3, funder=funder)
    assert order["signer"].lower() == order["maker"].lower() == funder
    _, owner = crypto.order_hash_and_signer(order, crypto.NEG_RISK_EXCHANGE_V2, "2")
    assert owner == ClobClient("http://127.0.0.1:9", chain_id=137, key=KEY).signer.address().lower()
    with pytest.raises(crypto.BadSignature, match="another order or exchange"):
        crypto.order_hash_and_signer(order, crypto.EXCHANGE_V2, "2")


def test_a_high_s_signature_is_refused():
    order = _signed()
    sig = bytes.fromhex(order["signature"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    flipped = sig[:32] + (n - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([sig[64] ^ 1])
    with pytest.raises(crypto.BadSignature):
        crypto.order_hash_and_signer({**order, "signature": "0x" + flipped.hex()}, crypto.EXCHANGE_V2, "2")
