"""A hand-written Polygon node and deposit-wallet relayer for the redeemer's unit tests: ERC1155 balances and
payouts read by eth_call, signed transactions decoded with eth-account (sender, nonce, calldata), geth's answers to
repeated bytes and used nonces, the adapter's redeem and merge applied when a block is mined, and a relayer that
takes a signed batch once. `applied` is the ground truth: every call that moved money, with the transaction that
made it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from eth_abi import decode, encode
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes

from copier.redeem import ADAPTER, CTF, RpcAnswerError


def sel(signature: str) -> str:
    return keccak(text=signature)[:4].hex()


BALANCE_OF_BATCH = sel("balanceOfBatch(address[],uint256[])")
PAYOUT_DENOMINATOR = sel("payoutDenominator(bytes32)")
PAYOUT_NUMERATORS = sel("payoutNumerators(bytes32,uint256)")
IS_APPROVED = sel("isApprovedForAll(address,address)")
SET_APPROVAL = sel("setApprovalForAll(address,bool)")
REDEEM = sel("redeemPositions(address,bytes32,bytes32,uint256[])")
MERGE = sel("mergePositions(address,bytes32,bytes32,uint256[],uint256)")
GWEI = 10**9


@dataclass
class Market:
    cid: str
    tokens: tuple[str, str]
    numerators: tuple[int, int] = (0, 0)
    denominator: int = 0


@dataclass
class Mined:
    tx_hash: str
    status: int
    gas_used: int = 150_000
    price: int = 60 * GWEI


@dataclass
class StubChain:
    markets: dict[str, Market] = field(default_factory=dict)
    balances: dict[tuple[str, str], int] = field(default_factory=dict)      # (holder, token) -> units
    pusd: dict[str, int] = field(default_factory=dict)
    pol: dict[str, int] = field(default_factory=dict)
    approved: set[tuple[str, str]] = field(default_factory=set)
    nonces: dict[str, int] = field(default_factory=dict)
    pool: dict[str, tuple[str, int, str, bytes]] = field(default_factory=dict)   # hash -> (sender, nonce, to, data)
    mined: dict[str, Mined] = field(default_factory=dict)
    applied: list[tuple[str, str, str, int]] = field(default_factory=list)      # (tx or relayer id, kind, cid, paid)
    sent: list[str] = field(default_factory=list)                               # every raw accepted
    paused: bool = False
    calls: list[str] = field(default_factory=list)

    # ---- setup -----------------------------------------------------------------------------------------------
    def add_market(self, cid: str, tokens: tuple[str, str]) -> None:
        self.markets[cid] = Market(cid, tokens)

    def hold(self, holder: str, token: str, units: int) -> None:
        self.balances[(holder.lower(), token)] = self.balances.get((holder.lower(), token), 0) + units

    def resolve(self, cid: str, winner: int) -> None:
        m = self.markets[cid]
        m.numerators = (1, 0) if winner == 0 else (0, 1)
        m.denominator = 1

    # ---- JSON-RPC ----------------------------------------------------------------------------------------------
    def call(self, method: str, *params: object) -> object:
        self.calls.append(method)
        if method == "eth_call":
            return "0x" + self._eth_call(params[0]["to"], bytes.fromhex(params[0]["data"][2:])).hex()
        if method == "eth_getTransactionCount":
            addr = str(params[0]).lower()
            n = self.nonces.get(addr, 0)
            pending = sorted(nonce for s, nonce, *_ in self.pool.values() if s == addr)
            while n in pending:
                n += 1
            return hex(n)
        if method == "eth_gasPrice":
            return hex(60 * GWEI)
        if method == "eth_maxPriorityFeePerGas":
            return hex(30 * GWEI)
        if method == "eth_estimateGas":
            return hex(183_000)
        if method == "eth_getBalance":
            return hex(self.pol.get(str(params[0]).lower(), 0))
        if method == "eth_sendRawTransaction":
            return self.send_raw(str(params[0]))
        if method == "eth_getTransactionReceipt":
            m = self.mined.get(str(params[0]))
            return None if m is None else {"status": hex(m.status), "gasUsed": hex(m.gas_used),
                                           "effectiveGasPrice": hex(m.price), "transactionHash": m.tx_hash}
        if method == "eth_getTransactionByHash":
            h = str(params[0])
            return {"hash": h} if h in self.pool or h in self.mined else None
        raise RpcAnswerError(-32601, f"the method {method} does not exist")

    def _eth_call(self, to: str, data: bytes) -> bytes:
        s, args = data[:4].hex(), data[4:]
        if to.lower() != CTF:
            raise RpcAnswerError(3, "execution reverted")
        if s == BALANCE_OF_BATCH:
            holders, ids = decode(["address[]", "uint256[]"], args)
            units = [self.balances.get((h.lower(), str(i)), 0) for h, i in zip(holders, ids, strict=True)]
            return encode(["uint256[]"], [units])
        if s == PAYOUT_DENOMINATOR:
            (cid,) = decode(["bytes32"], args)
            m = self.markets.get("0x" + cid.hex())
            return encode(["uint256"], [m.denominator if m else 0])
        if s == PAYOUT_NUMERATORS:
            cid, i = decode(["bytes32", "uint256"], args)
            m = self.markets.get("0x" + cid.hex())
            return encode(["uint256"], [m.numerators[i] if m else 0])
        if s == IS_APPROVED:
            owner, operator = decode(["address", "address"], args)
            return encode(["bool"], [(owner.lower(), operator.lower()) in self.approved])
        raise RpcAnswerError(3, "execution reverted")

    def send_raw(self, raw: str) -> str:
        b = bytes.fromhex(raw[2:])
        tx_hash = "0x" + keccak(b).hex()
        sender = Account.recover_transaction(b).lower()
        d = TypedTransaction.from_bytes(HexBytes(b)).as_dict()
        if tx_hash in self.pool:
            raise RpcAnswerError(-32000, "already known")
        if d["nonce"] < self.nonces.get(sender, 0):
            raise RpcAnswerError(-32000, f"nonce too low: next nonce {self.nonces.get(sender, 0)}, "
                                         f"tx nonce {d['nonce']}")
        if self.pol.get(sender, 0) < d["gas"] * d["maxFeePerGas"]:
            raise RpcAnswerError(-32000, "insufficient funds for gas * price + value")
        self.pool[tx_hash] = (sender, d["nonce"], "0x" + bytes(d["to"]).hex(), bytes(d["data"]))
        self.sent.append(raw)
        return tx_hash

    def mine(self) -> None:
        for tx_hash, (sender, nonce, to, data) in sorted(self.pool.items(), key=lambda kv: kv[1][1]):
            if nonce != self.nonces.get(sender, 0):
                continue
            del self.pool[tx_hash]
            self.nonces[sender] = nonce + 1
            ok = self.execute(sender, to, data, tx_hash)
            m = Mined(tx_hash, int(ok))
            self.pol[sender] -= m.gas_used * m.price
            self.mined[tx_hash] = m

    def execute(self, holder: str, to: str, data: bytes, tag: str) -> bool:
        """The adapter and the CTF as polysim models them; False = reverted (nothing moved)."""
        s, args = data[:4].hex(), data[4:]
        if to == CTF and s == SET_APPROVAL:
            operator, on = decode(["address", "bool"], args)
            self.approved.add((holder, operator.lower()))
            self.applied.append((tag, "approve", "", 0))
            return True
        if to != ADAPTER or self.paused or (holder, ADAPTER) not in self.approved:
            return False
        if s == REDEEM:
            _, _, cid, _ = decode(["address", "bytes32", "bytes32", "uint256[]"], args)
            m = self.markets["0x" + cid.hex()]
            if m.denominator == 0:
                return False
            paid = 0
            for i, t in enumerate(m.tokens):
                units = self.balances.pop((holder, t), 0)
                paid += units * m.numerators[i] // m.denominator
            self.pusd[holder] = self.pusd.get(holder, 0) + paid
            self.applied.append((tag, "redeem", m.cid, paid))
            return True
        if s == MERGE:
            _, _, cid, _, amount = decode(["address", "bytes32", "bytes32", "uint256[]", "uint256"], args)
            m = self.markets["0x" + cid.hex()]
            if any(self.balances.get((holder, t), 0) < amount for t in m.tokens):
                return False
            for t in m.tokens:
                self.balances[(holder, t)] -= amount
            self.pusd[holder] = self.pusd.get(holder, 0) + amount
            self.applied.append((tag, "merge", m.cid, amount))
            return True
        return False

    def redeemed(self, kind: str = "redeem") -> dict[str, list[str]]:
        """condition -> the transactions that redeemed it (more than one is a second transaction)."""
        out: dict[str, list[str]] = {}
        for tag, k, cid, _ in self.applied:
            if k == kind:
                out.setdefault(cid, []).append(tag)
        return out


@dataclass
class StubRelayer:
    """The relayer for one deposit wallet: a signed batch taken once (by signature), executed on `mine`."""
    chain: StubChain
    wallet: str
    wallet_nonce: int = 0
    batches: dict[str, dict] = field(default_factory=dict)      # id -> {body, state, error}
    submits: int = 0
    lose_next_answer: int = 0
    fail_on_chain: bool = False

    def nonce(self, owner: str) -> tuple[int, object]:
        return 200, {"address": "0xrelayer", "nonce": str(self.wallet_nonce)}

    def submit(self, body) -> tuple[int, object]:
        self.submits += 1
        sig = body["signature"].lower()
        for bid, b in self.batches.items():
            if b["body"]["signature"].lower() == sig:
                return 200, {"transactionID": bid, "state": b["state"]}
        if int(body["nonce"]) != self.wallet_nonce:
            return 400, {"error": f"batch nonce {body['nonce']} does not match on-chain nonce {self.wallet_nonce}"}
        if any(b["state"] == "STATE_NEW" for b in self.batches.values()):
            return 400, {"error": "wallet has in-flight action"}
        bid = f"rel-{len(self.batches) + 1}"
        self.batches[bid] = {"body": json.loads(json.dumps(body)), "state": "STATE_NEW", "error": None}
        if self.lose_next_answer:
            self.lose_next_answer -= 1
            return 502, None
        return 200, {"transactionID": bid, "state": "STATE_NEW"}

    def transaction(self, relayer_id: str) -> tuple[int, object]:
        b = self.batches.get(relayer_id)
        if b is None:
            return 404, {"error": "transaction not found"}
        return 200, {"transaction_id": relayer_id, "state": b["state"], "error_msg": b["error"],
                     "transaction_hash": "0x" + keccak(text=relayer_id).hex() if b["state"] != "STATE_NEW" else None}

    def transactions(self) -> tuple[int, object]:
        return 200, [{"transactionID": bid, "signature": b["body"]["signature"], "state": b["state"]}
                     for bid, b in self.batches.items()]

    def mine(self) -> None:
        for bid, b in self.batches.items():
            if b["state"] != "STATE_NEW":
                continue
            if self.fail_on_chain:
                b["state"], b["error"] = "STATE_FAILED", "execution reverted: OnlyUnpaused()"
                self.wallet_nonce += 1
                continue
            self.wallet_nonce += 1
            for call in b["body"]["depositWalletParams"]["calls"]:
                self.chain.execute(self.wallet.lower(), call["target"].lower(), bytes.fromhex(call["data"][2:]), bid)
            b["state"] = "STATE_CONFIRMED"
