"""Transactions sent by wallets (and by the venue's relayer and auto-redeem operator): the node's pool and what
mining them does.

`eth_sendRawTransaction` takes a signed transaction (EIP-1559 type 2, EIP-2930 type 1, or legacy with EIP-155 chain
id), recovers the sender from the signature and checks it the way geth's pool does, with geth's error texts (JSON-RPC
code -32000): `already known` for the same bytes still pending, `nonce too low: next nonce N, tx nonce M` for a nonce
already used (so a transaction sent again after it was mined), `insufficient funds for gas * price + value`,
`invalid sender: invalid chain id for signer`, `intrinsic gas too low`, `exceeds block gas limit`, `max priority fee
per gas higher than max fee per gas`, `transaction gas price below minimum`, `replacement transaction underpriced`,
`only replay-protected (EIP-155) transactions allowed over RPC`. A nonce above the next one waits in the queue until
the gap fills; a fee cap below the base fee waits forever, as on a real node.

Each block mines every executable transaction in nonce order (ledger.py runs the call): success or revert, the
sender pays gas used x effective price (min(fee cap, base fee + tip)) in POL, and the nonce is used either way.
A reorg that orphans the block undoes all of it and puts the transaction back in the pool.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import rlp
from eth_abi import encode
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes

from polysim import contracts as c
from polysim import crypto
from polysim.events import SimMarket
from polysim.ledger import Frame, Ledger
from polysim.truth import GroundTruth

GWEI = 10**9
BASE_FEE = 30 * GWEI               # constant on this chain (the block headers carry it)
SUGGESTED_TIP = 30 * GWEI          # eth_maxPriorityFeePerGas
MIN_TIP = 25 * GWEI                # Polygon's minimum priority fee (the node refuses less)
BLOCK_GAS_LIMIT = 30_000_000
REPLACE_BUMP = 1.10                # geth: a replacement pays at least 10 % more (tip and fee cap)
RELAYER_EOA = "0x4da9395388791c22684e03779c3de10934eb9cfb"     # the docs' example relayer address
AUTO_REDEEM_EOA = "0x" + hashlib.sha256(b"polysim auto-redeem sender").hexdigest()[:40]
SYSTEM_POL = 10**9 * 10**18        # the venue's own senders never run out of gas money


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None):
        super().__init__(message)
        self.code = code
        self.data = data


def intrinsic_gas(data: bytes, access_list: int = 0) -> int:
    return 21_000 + sum(16 if b else 4 for b in data) + 2_400 * access_list


@dataclass(eq=False)
class UserTx:
    """A transaction not from the exchange's operator: a wallet's, the relayer's or the auto-redeem operator's."""
    tx_hash: str
    sender: str
    nonce: int
    to: str | None
    value: int
    data: bytes
    gas: int
    fee_cap: int                       # maxFeePerGas, or gasPrice
    tip: int                           # maxPriorityFeePerGas, or gasPrice
    type: int
    chain_id: int | None
    v: int = 0
    r: int = 0
    s: int = 0
    access_list: list[dict[str, Any]] = field(default_factory=list)
    received_at: float = 0.0
    action: Callable[[Frame], None] | None = None     # the venue's own transactions run this instead of a call
    tag: dict[str, str] = field(default_factory=dict)   # ground truth: via, relayer_id, wallet
    on_mined: Callable[[UserTx], None] | None = None
    status: int | None = None          # 1 success, 0 reverted; None while pending
    gas_used: int = 0
    price: int = 0                     # effective gas price
    revert: str = ""
    frame: Frame | None = None
    block_number: int | None = None
    dropped: bool = False
    # (block hash, number, index, logs, cumulative gas) once mined
    receipt: tuple[str, int, int, list[dict[str, Any]], int] | None = None

    @property
    def reverted(self) -> bool:
        return self.status == 0

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [log.json() for log in self.frame.logs] if self.frame is not None and self.status == 1 else []

    @property
    def gas_paid(self) -> int:
        return self.gas_used * self.price

    def tx_fields(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"from": self.sender, "gas": hex(self.gas), "hash": self.tx_hash,
                               "input": "0x" + self.data.hex(), "nonce": hex(self.nonce), "to": self.to,
                               "value": hex(self.value), "type": hex(self.type), "v": hex(self.v), "r": hex(self.r),
                               "s": hex(self.s)}
        if self.type == 2:
            doc.update(maxFeePerGas=hex(self.fee_cap), maxPriorityFeePerGas=hex(self.tip),
                       gasPrice=hex(min(self.fee_cap, BASE_FEE + self.tip)), yParity=hex(self.v))
        else:
            doc["gasPrice"] = hex(self.fee_cap)
        if self.type:
            doc.update(chainId=hex(self.chain_id or crypto.CHAIN_ID), accessList=self.access_list)
        elif self.chain_id is not None:
            doc["chainId"] = hex(self.chain_id)
        return doc

    def receipt_fields(self) -> dict[str, Any]:
        return {"from": self.sender, "to": self.to, "gasUsed": hex(self.gas_used),
                "effectiveGasPrice": hex(self.price), "status": "0x1" if self.status == 1 else "0x0",
                "type": hex(self.type), "contractAddress": None}


def decode_raw(raw_hex: str, now: float) -> UserTx:
    """A signed transaction's fields and its sender. Raises RpcError like a node that cannot use the bytes."""
    if not isinstance(raw_hex, str):
        raise RpcError(-32602, "invalid argument 0: json: cannot unmarshal non-string into Go value of type "
                               "hexutil.Bytes")
    if not raw_hex.startswith("0x"):
        raise RpcError(-32602, "invalid argument 0: hex string without 0x prefix")
    try:
        raw = bytes.fromhex(raw_hex[2:])
    except ValueError:
        raise RpcError(-32602, "invalid argument 0: invalid hex string") from None
    if not raw:
        raise RpcError(-32000, "typed transaction too short")
    tx_hash = "0x" + keccak(raw).hex()
    if raw[0] <= 0x7f:
        if raw[0] not in (1, 2):
            raise RpcError(-32000, "transaction type not supported")
        try:
            d = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        except Exception as exc:  # eth-account raises assorted errors for broken bytes
            raise RpcError(-32000, f"rlp: {str(exc).splitlines()[0][:120]}") from None
        tx = UserTx(tx_hash, "", d["nonce"], _to(d["to"]), d["value"], bytes(d["data"]), d["gas"],
                    d.get("maxFeePerGas", d.get("gasPrice", 0)), d.get("maxPriorityFeePerGas", d.get("gasPrice", 0)),
                    raw[0], d["chainId"], d["v"], d["r"], d["s"],
                    access_list=[{"address": a["address"], "storageKeys": list(a["storageKeys"])}
                                 for a in d.get("accessList", ())], received_at=now)
    else:
        try:
            fields = rlp.decode(raw)
            if not isinstance(fields, list) or len(fields) != 9:
                raise ValueError("not 9 fields")
            nonce, price, gas, to, value, data, v, r, s = fields
            ints = [int.from_bytes(x, "big") for x in (nonce, price, gas, value, v, r, s)]
        except Exception:  # rlp raises its own hierarchy for every malformation
            raise RpcError(-32000, "rlp: expected input list for types.LegacyTx") from None
        nonce_i, price_i, gas_i, value_i, v_i, r_i, s_i = ints
        chain_id = (v_i - 35) // 2 if v_i >= 35 else None
        tx = UserTx(tx_hash, "", nonce_i, _to("0x" + to.hex()) if to else None, value_i, bytes(data), gas_i,
                    price_i, price_i, 0, chain_id, v_i, r_i, s_i, received_at=now)
    try:
        tx.sender = Account.recover_transaction(raw).lower()
    except Exception as exc:  # a signature that recovers no key
        raise RpcError(-32000, f"invalid sender: {str(exc).splitlines()[0][:120]}") from None
    return tx


def _to(value: object) -> str | None:
    if value in (None, b"", "", "0x"):
        return None
    return ("0x" + bytes(value).hex() if isinstance(value, (bytes, bytearray)) else str(value)).lower()


class Node:
    """The pool of wallet transactions and their execution in blocks."""

    def __init__(self, ledger: Ledger, *, truth: GroundTruth, now: Callable[[], float]):
        self.ledger = ledger
        self.truth = truth
        self.now = now
        self.pending: dict[str, dict[int, UserTx]] = {}    # sender -> nonce -> tx (executable or queued)
        self.by_hash: dict[str, UserTx] = {}               # every transaction the node has seen and kept
        self.announce: Callable[[UserTx], None] = lambda tx: None
        self.counters = {"accepted": 0, "rejected": 0, "replaced": 0, "mined": 0, "reverted": 0, "orphaned": 0}
        for sender in (RELAYER_EOA, AUTO_REDEEM_EOA):
            ledger.pol[sender] = SYSTEM_POL

    # ---- the pool ------------------------------------------------------------------------------------------
    def send_raw(self, raw_hex: str) -> str:
        """eth_sendRawTransaction: check and pool a signed transaction; returns its hash or raises RpcError."""
        try:
            tx = self._admit(decode_raw(raw_hex, self.now()))
        except RpcError:
            self.counters["rejected"] += 1
            raise
        self.counters["accepted"] += 1
        return tx.tx_hash

    def _admit(self, tx: UserTx) -> UserTx:
        known = self.by_hash.get(tx.tx_hash)
        if known is not None and known.status is None and not known.dropped:
            raise RpcError(-32000, "already known")
        if tx.type == 0 and tx.chain_id is None:
            raise RpcError(-32000, "only replay-protected (EIP-155) transactions allowed over RPC")
        if tx.chain_id != crypto.CHAIN_ID:
            raise RpcError(-32000, f"invalid sender: invalid chain id for signer: have {tx.chain_id} "
                                   f"want {crypto.CHAIN_ID}")
        if tx.gas > BLOCK_GAS_LIMIT:
            raise RpcError(-32000, "exceeds block gas limit")
        if tx.tip > tx.fee_cap:
            raise RpcError(-32000, f"max priority fee per gas higher than max fee per gas: address {tx.sender}, "
                                   f"maxPriorityFeePerGas: {tx.tip}, maxFeePerGas: {tx.fee_cap}")
        need = intrinsic_gas(tx.data, len(tx.access_list))
        if tx.gas < need:
            raise RpcError(-32000, f"intrinsic gas too low: gas {tx.gas}, minimum needed {need}")
        if tx.tip < MIN_TIP:
            raise RpcError(-32000, f"transaction gas price below minimum: gas tip cap {tx.tip}, "
                                   f"minimum needed {MIN_TIP}")
        next_nonce = self.ledger.nonce(tx.sender)
        if tx.nonce < next_nonce:
            raise RpcError(-32000, f"nonce too low: next nonce {next_nonce}, tx nonce {tx.nonce}")
        cost = tx.gas * tx.fee_cap + tx.value
        balance = self.ledger.balance(tx.sender)
        if balance < cost:
            raise RpcError(-32000, f"insufficient funds for gas * price + value: balance {balance}, "
                                   f"tx cost {cost}, overshot {cost - balance}")
        slot = self.pending.setdefault(tx.sender, {})
        old = slot.get(tx.nonce)
        if old is not None:
            if tx.tip < old.tip * REPLACE_BUMP or tx.fee_cap < old.fee_cap * REPLACE_BUMP:
                raise RpcError(-32000, "replacement transaction underpriced")
            old.dropped = True
            self.counters["replaced"] += 1
        slot[tx.nonce] = tx
        self.by_hash[tx.tx_hash] = tx
        self.announce(tx)
        return tx

    def system_tx(self, sender: str, to: str, data: bytes, gas: int, action: Callable[[Frame], None],
                  tag: dict[str, str], on_mined: Callable[[UserTx], None] | None = None) -> UserTx:
        """A transaction of the venue's own senders (the relayer, the auto-redeem operator), next in their nonce."""
        slot = self.pending.setdefault(sender, {})
        nonce = max([self.ledger.nonce(sender) - 1, *slot]) + 1
        tx_hash = "0x" + keccak(f"{sender}:{nonce}:{data.hex()}:{self.now()}".encode()).hex()
        tx = UserTx(tx_hash, sender, nonce, to, 0, data, gas, BASE_FEE + SUGGESTED_TIP, SUGGESTED_TIP, 2,
                    crypto.CHAIN_ID, 0, int.from_bytes(keccak(tx_hash.encode()), "big"),
                    int.from_bytes(keccak(tx_hash.encode() + b"s"), "big") >> 2, received_at=self.now(),
                    action=action, tag=tag, on_mined=on_mined)
        slot[nonce] = tx
        self.by_hash[tx_hash] = tx
        self.announce(tx)
        return tx

    def auto_redeem(self, m: SimMarket) -> list[UserTx]:
        """The venue's auto-redeem operator: one gas-free transaction per wallet that approved it and still holds a
        winning token of `m` (its sender and calldata are polysim's own; the operator's approval is what counts)."""
        cid = bytes.fromhex(m.condition_id[2:])
        out = []
        for holder in self.ledger.holders_to_auto_redeem(m):
            data = bytes.fromhex(c.AUTO_REDEEM) + encode(["address", "bytes32"], [holder, cid])

            def act(frame: Frame, holder: str = holder) -> None:
                self.ledger.redeem(frame, holder, cid, operator=c.AUTO_REDEEM_OPERATOR, via_adapter=None)
            out.append(self.system_tx(AUTO_REDEEM_EOA, c.AUTO_REDEEM_OPERATOR, data, 400_000, act,
                                      tag={"via": "auto", "wallet": holder}))
        return out

    def pending_nonce(self, address: str) -> int:
        """eth_getTransactionCount(address, "pending"): the next nonce after the consecutive pooled ones."""
        n = self.ledger.nonce(address)
        slot = self.pending.get(address.lower(), {})
        while n in slot:
            n += 1
        return n

    def find(self, tx_hash: str) -> UserTx | None:
        tx = self.by_hash.get(tx_hash)
        return None if tx is None or tx.dropped else tx

    # ---- mining --------------------------------------------------------------------------------------------
    def mine(self, number: int, block_hash: str, timestamp: int, hold: Collection[str] = ()) -> list[UserTx]:
        """Execute every executable pooled transaction, senders in arrival order, each sender in nonce order
        (a sender stops at a transaction in `hold`)."""
        mined: list[UserTx] = []
        for sender in sorted(self.pending, key=lambda a: min(t.received_at for t in self.pending[a].values())
                             if self.pending[a] else 0.0):
            slot = self.pending[sender]
            while True:
                tx = slot.get(self.ledger.nonce(sender))
                if tx is None or tx.tx_hash in hold or tx.fee_cap < BASE_FEE or \
                        self.ledger.balance(sender) < tx.gas * min(tx.fee_cap, BASE_FEE + tx.tip) + tx.value:
                    break
                del slot[tx.nonce]
                self._execute(tx, number, block_hash, timestamp)
                mined.append(tx)
        self.pending = {a: s for a, s in self.pending.items() if s}
        return mined

    def _execute(self, tx: UserTx, number: int, block_hash: str, timestamp: int) -> None:
        ledger = self.ledger
        frame = Frame()
        inner = Frame()
        intrinsic = intrinsic_gas(tx.data, len(tx.access_list))
        tx.price = min(tx.fee_cap, BASE_FEE + tx.tip)
        ledger.bump_nonce(frame, tx.sender)
        try:
            if tx.action is not None:
                tx.action(inner)
            elif tx.to is None:
                raise c.Revert("polysim: contract creation is not simulated")
            else:
                ledger.call(inner, tx.sender, tx.to, tx.data, tx.value)
            if intrinsic + inner.gas > tx.gas:
                raise c.Revert("out of gas")
            tx.status, tx.gas_used = 1, intrinsic + inner.gas
        except c.Revert as exc:
            inner.rollback()
            out_of_gas = intrinsic + inner.gas > tx.gas or exc.reason == "out of gas"
            tx.status, tx.revert = 0, "out of gas" if out_of_gas else exc.message
            tx.gas_used = tx.gas if out_of_gas else intrinsic + inner.gas
            inner = Frame(gas=inner.gas)
        frame.undos += inner.undos
        frame.logs, frame.records = inner.logs, inner.records
        ledger.charge_gas(frame, tx.sender, tx.gas_paid)
        tx.frame, tx.block_number = frame, number
        self.counters["mined"] += 1
        self.counters["reverted"] += tx.status == 0
        self._record(tx, number, block_hash, timestamp)
        if tx.on_mined is not None:
            tx.on_mined(tx)

    def _record(self, tx: UserTx, number: int, block_hash: str, timestamp: int) -> None:
        """Ground truth: every mined transaction (`chain_tx`: gas paid even when it reverts), and every redemption
        and merge it made (with the gas its wallet paid: none when the relayer or the operator sent it)."""
        via = tx.tag.get("via", "eoa")
        block = {"tx_hash": tx.tx_hash, "block_number": number, "block_hash": block_hash, "block_time": timestamp}
        self.truth.record("chain_tx", **block, sender=tx.sender, to=tx.to, nonce=tx.nonce, status=tx.status,
                          gas_used=tx.gas_used, effective_gas_price=tx.price, gas_paid_wei=str(tx.gas_paid),
                          gas_paid_pol=round(tx.gas_paid / 10**18, 18), method="0x" + tx.data[:4].hex(),
                          revert=tx.revert, via=via, relayer_id=tx.tag.get("relayer_id"),
                          wallet=tx.tag.get("wallet", tx.sender))
        wallet_pays = via == "eoa"
        for kind, rec in tx.frame.records if tx.frame is not None else ():
            self.truth.record(kind, **rec, **block, via=via, relayer_id=tx.tag.get("relayer_id"),
                              gas_paid_wei=str(tx.gas_paid if wallet_pays else 0),
                              gas_paid_pol=round(tx.gas_paid / 10**18, 18) if wallet_pays else 0.0)

    def orphan(self, tx: UserTx) -> None:
        """Its block left the chain: undo what it did and pool it again (it will be mined anew)."""
        assert tx.frame is not None
        tx.frame.rollback()
        tx.status, tx.gas_used, tx.revert, tx.frame, tx.block_number = None, 0, "", None, None
        self.pending.setdefault(tx.sender, {})[tx.nonce] = tx
        self.counters["orphaned"] += 1
