"""Signature checks the real CLOB does: ClobAuth (L1), HMAC headers (L2) and the order's EIP-712 signature.

Written from the published typed-data definitions (reference §3-4). The order path is the hot path of the
throughput benchmark, so the fixed `Order` struct is hashed directly (keccak over the ABI words) and the signer is
recovered with coincurve; eth-account only serves the cold ClobAuth path. A test cross-checks both hashes.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from coincurve import PublicKey
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

CHAIN_ID = 137
EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"
ZERO32 = "0x" + "00" * 32

ORDER_TYPE = ("Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,"
              "uint256 takerAmount,uint8 side,uint8 signatureType,uint256 timestamp,bytes32 metadata,bytes32 builder)")
ORDER_TYPEHASH = keccak(text=ORDER_TYPE)
_DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
# POLY_1271 (deposit wallet): Solady's TypedDataSign wrapper around the order, nested in the wallet's own domain.
_TYPED_DATA_SIGN_TYPEHASH = keccak(text="TypedDataSign(Order contents,string name,string version,uint256 chainId,"
                                        "address verifyingContract,bytes32 salt)" + ORDER_TYPE)
_WALLET_NAME, _WALLET_VERSION = keccak(text="DepositWallet"), keccak(text="1")
POLY_1271 = 3

V1_ONLY_FIELDS = frozenset({"nonce", "feeRateBps", "taker"})
V2_SIGNED_FIELDS = frozenset({"salt", "maker", "signer", "tokenId", "makerAmount", "takerAmount", "side",
                              "signatureType", "timestamp", "metadata", "builder", "signature"})
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class BadSignature(Exception):
    pass


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    raw = bytes.fromhex(address[2:] if address[:2] in ("0x", "0X") else address)
    if len(raw) != 20:
        raise ValueError(f"address {address!r} is not 20 bytes")
    return b"\x00" * 12 + raw


def _bytes32(value: str | None) -> bytes:
    v = (value or ZERO32)
    raw = bytes.fromhex(v[2:] if v[:2] in ("0x", "0X") else v)
    if len(raw) > 32:
        raise ValueError("bytes32 value longer than 32 bytes")
    return raw.rjust(32, b"\x00")


@lru_cache(maxsize=16)
def domain_separator(contract: str, domain_version: str, name: str = "Polymarket CTF Exchange") -> bytes:
    return keccak(_DOMAIN_TYPEHASH + keccak(text=name) + keccak(text=domain_version) + _word(CHAIN_ID)
                  + _address_word(contract))


def order_struct_hash(order: dict) -> bytes:
    side = order["side"]
    side_num = {"BUY": 0, "SELL": 1}.get(side, side) if isinstance(side, str) else side
    return keccak(ORDER_TYPEHASH + _word(int(order["salt"])) + _address_word(order["maker"])
                  + _address_word(order["signer"]) + _word(int(order["tokenId"])) + _word(int(order["makerAmount"]))
                  + _word(int(order["takerAmount"])) + _word(int(side_num)) + _word(int(order["signatureType"]))
                  + _word(int(order["timestamp"])) + _bytes32(order.get("metadata")) + _bytes32(order.get("builder")))


def recover(digest: bytes, signature: bytes) -> str:
    """Checksum-free lowercase address that signed `digest` (65-byte r||s||v signature)."""
    if len(signature) != 65:
        raise BadSignature("signature is not 65 bytes")
    v = signature[64]
    recid = v - 27 if v >= 27 else v
    s = int.from_bytes(signature[32:64], "big")
    if recid not in (0, 1) or s == 0 or s > _SECP256K1_N // 2:
        raise BadSignature("malleable or malformed signature")
    try:
        pub = PublicKey.from_signature_and_message(signature[:64] + bytes([recid]), digest, hasher=None)
    except Exception as exc:  # coincurve raises plain Exceptions for unrecoverable points
        raise BadSignature(str(exc)) from None
    return "0x" + keccak(pub.format(compressed=False)[1:])[-20:].hex()


def order_hash_and_signer(order: dict, contract: str, domain_version: str) -> tuple[str, str]:
    """(EIP-712 order hash, lowercase address whose key signed it). Raises BadSignature.

    For POLY_1271 orders the key that signed is the deposit wallet's owner EOA; the wrapper must carry this
    exchange's domain separator and this order's contents hash, as the wallet contract checks on chain.
    """
    try:
        struct = order_struct_hash(order)
        separator = domain_separator(contract, domain_version)
        sig = bytes.fromhex(str(order["signature"])[2:])
    except (KeyError, ValueError, TypeError) as exc:
        raise BadSignature(f"unencodable order: {exc}") from None
    order_hash = keccak(b"\x19\x01" + separator + struct)
    if int(order.get("signatureType", 0)) != POLY_1271:
        return "0x" + order_hash.hex(), recover(order_hash, sig)
    type_len = int.from_bytes(sig[-2:], "big") if len(sig) > 131 else -1
    if len(sig) != 65 + 32 + 32 + type_len + 2 or sig[129:129 + type_len] != ORDER_TYPE.encode():
        raise BadSignature("malformed POLY_1271 wrapper")
    if sig[65:97] != separator or sig[97:129] != struct:
        raise BadSignature("POLY_1271 wrapper signs another order or exchange")
    wallet_struct = keccak(_TYPED_DATA_SIGN_TYPEHASH + struct + _WALLET_NAME + _WALLET_VERSION + _word(CHAIN_ID)
                           + _address_word(order["signer"]) + b"\x00" * 32)
    return "0x" + order_hash.hex(), recover(keccak(b"\x19\x01" + separator + wallet_struct), sig[:65])


def clob_auth_signer(address: str, timestamp: str, nonce: int, signature: str) -> str:
    typed = {"domain": {"name": "ClobAuthDomain", "version": "1", "chainId": CHAIN_ID},
             "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                        {"name": "chainId", "type": "uint256"}],
                       "ClobAuth": [{"name": "address", "type": "address"}, {"name": "timestamp", "type": "string"},
                                    {"name": "nonce", "type": "uint256"}, {"name": "message", "type": "string"}]},
             "primaryType": "ClobAuth",
             "message": {"address": address, "timestamp": str(timestamp), "nonce": int(nonce),
                         "message": CLOB_AUTH_MESSAGE}}
    try:
        signable = encode_typed_data(full_message=typed)
        digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
        return Account._recover_hash(digest, signature=signature)
    except Exception as exc:  # eth-account raises a variety of types for bad input
        raise BadSignature(str(exc)) from None


def hmac_signature(secret: str, timestamp: str, method: str, path: str, body: str) -> str:
    # The SDKs sign the body with single quotes turned into double quotes; the server must do the same.
    message = f"{timestamp}{method}{path}{body.replace(chr(39), chr(34))}"
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
