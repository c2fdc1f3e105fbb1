"""Signature checks the real CLOB does: ClobAuth (L1), HMAC headers (L2) and the order's EIP-712 signature.

Written from the published typed-data definitions (reference §3-4), with eth-account doing the curve maths.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

CHAIN_ID = 137
EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"
ZERO32 = "0x" + "00" * 32

_DOMAIN_TYPES = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                 {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]
_ORDER_TYPES = [{"name": "salt", "type": "uint256"}, {"name": "maker", "type": "address"},
                {"name": "signer", "type": "address"}, {"name": "tokenId", "type": "uint256"},
                {"name": "makerAmount", "type": "uint256"}, {"name": "takerAmount", "type": "uint256"},
                {"name": "side", "type": "uint8"}, {"name": "signatureType", "type": "uint8"},
                {"name": "timestamp", "type": "uint256"}, {"name": "metadata", "type": "bytes32"},
                {"name": "builder", "type": "bytes32"}]
V2_FIELDS = {"salt", "maker", "signer", "tokenId", "makerAmount", "takerAmount", "side", "signatureType",
             "timestamp", "metadata", "builder", "signature", "expiration"}
V1_ONLY_FIELDS = {"nonce", "feeRateBps", "taker"}


class BadSignature(Exception):
    pass


def _digest(signable) -> bytes:
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def clob_auth_signer(address: str, timestamp: str, nonce: int, signature: str) -> str:
    typed = {"domain": {"name": "ClobAuthDomain", "version": "1", "chainId": CHAIN_ID},
             "types": {"EIP712Domain": _DOMAIN_TYPES[:3],
                       "ClobAuth": [{"name": "address", "type": "address"}, {"name": "timestamp", "type": "string"},
                                    {"name": "nonce", "type": "uint256"}, {"name": "message", "type": "string"}]},
             "primaryType": "ClobAuth",
             "message": {"address": address, "timestamp": str(timestamp), "nonce": int(nonce),
                         "message": CLOB_AUTH_MESSAGE}}
    try:
        return Account._recover_hash(_digest(encode_typed_data(full_message=typed)), signature=signature)
    except Exception as exc:
        raise BadSignature(str(exc)) from None


def hmac_signature(secret: str, timestamp: str, method: str, path: str, body: str) -> str:
    message = f"{timestamp}{method}{path}{body}"
    mac = hmac.new(base64.urlsafe_b64decode(secret), message.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode()


def derive_creds(address: str, nonce: int, server_secret: bytes) -> dict:
    seed = hmac.new(server_secret, f"{address.lower()}:{nonce}".encode(), hashlib.sha256).digest()
    h = seed.hex()
    return {"apiKey": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
            "secret": base64.urlsafe_b64encode(hashlib.sha256(seed + b"secret").digest()).decode(),
            "passphrase": hashlib.sha256(seed + b"pass").hexdigest()}


def exchange_for(version: str, neg_risk: bool) -> tuple[str, str]:
    """(verifying contract, EIP-712 domain version) for a market's Gamma `version`."""
    if version == "v2":
        return EXCHANGE_V3, "3"
    return (NEG_RISK_EXCHANGE_V2 if neg_risk else EXCHANGE_V2), "2"


def order_typed_data(order: dict, contract: str, domain_version: str) -> dict:
    def b32(v):
        v = v or ZERO32
        return bytes.fromhex(v[2:].zfill(64))
    return {"primaryType": "Order", "types": {"EIP712Domain": _DOMAIN_TYPES, "Order": _ORDER_TYPES},
            "domain": {"name": "Polymarket CTF Exchange", "version": domain_version, "chainId": CHAIN_ID,
                       "verifyingContract": contract},
            "message": {"salt": int(order["salt"]), "maker": order["maker"], "signer": order["signer"],
                        "tokenId": int(order["tokenId"]), "makerAmount": int(order["makerAmount"]),
                        "takerAmount": int(order["takerAmount"]), "side": 0 if order["side"] == "BUY" else 1,
                        "signatureType": int(order["signatureType"]), "timestamp": int(order["timestamp"]),
                        "metadata": b32(order.get("metadata")), "builder": b32(order.get("builder"))}}


def order_hash_and_signer(order: dict, contract: str, domain_version: str) -> tuple[str, str]:
    """(EIP-712 order hash, recovered signer). Raises BadSignature."""
    try:
        digest = _digest(encode_typed_data(full_message=order_typed_data(order, contract, domain_version)))
    except (KeyError, ValueError, TypeError) as exc:
        raise BadSignature(f"unencodable order: {exc}") from None
    try:
        signer = Account._recover_hash(digest, signature=order["signature"])
    except Exception as exc:
        raise BadSignature(str(exc)) from None
    return "0x" + digest.hex(), signer
