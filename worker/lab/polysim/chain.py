"""Polygon JSON-RPC websocket: settlement transactions of every match, their mempool sighting and their V2 exchange
events in blocks, with reorgs.

Each `Match` on the hub becomes one operator transaction `matchOrders(conditionId, takerOrder, makerOrders,
takerFillAmount, makerFillAmounts, takerFeeAmount, makerFeeAmounts)` (selector 0x3c2b4399, reference §7c) sent to the
market's exchange (standard, neg-risk, or ExchangeV3 for Gamma "v2" markets). Every order in the calldata is filled
completely by its match, so the contract's `taking = making * takerAmount / makerAmount` is exact and the logs, the
calldata and the RTDS/Data API rows all describe the same amounts. Once mined, the transaction emits one `OrderFilled`
per maker order, then the taker order's (`taker` = the exchange; its fee is the match's taker fee), then
`OrdersMatched`. Makers on the other outcome (mint / merge matches) settle against the taker's share of 1 pUSD.

Delivery (wall-clock seconds, NOT scaled by --speed: block production and node latency are real time even when the
market windows are accelerated, like the RTDS and Data API delays):
- mempool: `newPendingTransactions` about `mempool_delay` after the match. The delay is log-normal (sigma 0.35, so
  p90 ~1.6x the median) but drifts with a 30 s correlation time instead of jumping per transaction, and one
  operator's transactions enter a node's pool in nonce order, so announcements keep the order and spacing of the
  matches (like the RTDS lag). A transaction mined before its announcement is never announced (real coverage ~92 %).
- logs: blocks every `block_s` on the wall clock; a transaction is included in the first block at or after
  match + `logs_delay` - `block_s`/2, so its logs arrive `logs_delay` after the match at the median.
- reorgs: before a block, with probability `reorg_rate` (or on request) the newest blocks are orphaned: their logs
  are sent again with `removed: true`, their transactions go back to the pool (and are announced again) and are
  included one block later; a "drop" request removes them for good.
- a match the exchange marks `will_fail` is announced and mined but reverts: it emits no logs.
Control (same port): POST /_chain/reorg {"tx_hash", "drop"}, POST /_chain/faults {"mempool_silent", "logs_silent",
"malformed"},
GET /_chain/state.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property, partial

from aiohttp import WSMsgType, web
from eth_abi import encode

from polysim import contracts, crypto
from polysim.events import MATCH, Hub, Match, WalletFill
from polysim.faults import Faults
from polysim.ledger import STUB_CODE, Frame
from polysim.node import BASE_FEE, SUGGESTED_TIP, Node, RpcError, UserTx, intrinsic_gas
from polysim.truth import GroundTruth

TOPIC_ORDER_FILLED = "0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee"
TOPIC_ORDERS_MATCHED = "0x174b3811690657c217184f89418266767c87e4805d09680c39fc9c031c0cab7c"
MATCH_ORDERS_SELECTOR = "3c2b4399"
ORDER_TUPLE = "(uint256,address,address,uint256,uint256,uint256,uint8,uint8,uint256,bytes32,bytes32,bytes)"
MATCH_ORDERS_ARGS = ["bytes32", ORDER_TUPLE, ORDER_TUPLE + "[]", "uint256", "uint256[]", "uint256", "uint256[]"]
ORDER_FILLED_DATA = ["uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"]
ORDERS_MATCHED_DATA = ["uint8", "uint256", "uint256", "uint256"]
OPERATOR = "0x" + hashlib.sha256(b"polysim operator").hexdigest()[:40]
FIRST_BLOCK = 79_000_000
KEPT_BLOCKS = 64
MEMPOOL_SIGMA = 0.35             # log-normal spread of the mempool delay
MEMPOOL_TAU_S = 30.0             # correlation time of its drift
ZERO32 = b"\x00" * 32
BLOCK_PRODUCER = "0x" + hashlib.sha256(b"polysim block producer").hexdigest()[:40]
EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
GAS_PER_TX = 450_000
BLOCK_TAGS = ("latest", "safe", "finalized", "pending")
MAX_LOG_BLOCKS = KEPT_BLOCKS
log = logging.getLogger("polysim.chain")


def _units(x: float) -> int:
    """6-decimal on-chain units of a share or pUSD amount."""
    return int(round(x * 1_000_000))


def _topic(address: str) -> str:
    return "0x" + address.lower()[2:].rjust(64, "0")


@dataclass
class _Leg:
    """One order of the settlement and what it made and took (6-decimal units)."""
    fill: WalletFill
    making: int
    taking: int
    fee: int


@dataclass(eq=False)
class Settlement:
    """One operator transaction. Encoded on first use: with nobody subscribed, a match costs no ABI work."""
    match: Match
    dropped: bool = False
    nonce: int = 0               # the operator's nonce: transactions are numbered in match order

    @property
    def tx_hash(self) -> str:
        return self.match.tx_hash

    @property
    def reverted(self) -> bool:
        """A failing settlement is mined but emits nothing."""
        return getattr(self.match, "will_fail", False)

    @cached_property
    def exchange(self) -> str:
        """Lowercase address of the market's exchange, which the transaction is sent to."""
        m = self.match.market
        return crypto.exchange_for(m.version, m.neg_risk)[0].lower()

    @cached_property
    def calldata(self) -> str:
        return _calldata(self.match, *_legs(self.match))

    gas_used = GAS_PER_TX

    def tx_fields(self) -> dict:
        """The operator's transaction as eth_getTransactionByHash shows it (block fields added by the chain)."""
        return {"from": OPERATOR, "gas": _hex(1_500_000), "gasPrice": _hex(60_000_000_000),
                "maxFeePerGas": _hex(90_000_000_000), "maxPriorityFeePerGas": _hex(30_000_000_000),
                "hash": self.tx_hash, "input": self.calldata, "nonce": _hex(self.nonce), "to": self.exchange,
                "value": "0x0", "type": "0x2", "accessList": [], "chainId": _hex(crypto.CHAIN_ID), "v": "0x0",
                "yParity": "0x0", "r": "0x" + hashlib.sha256(self.tx_hash.encode()).hexdigest(),
                "s": "0x" + hashlib.sha256(self.tx_hash.encode() + b"s").hexdigest()}

    def receipt_fields(self) -> dict:
        return {"from": OPERATOR, "to": self.exchange, "gasUsed": _hex(GAS_PER_TX),
                "effectiveGasPrice": _hex(BASE_FEE + 30_000_000_000), "contractAddress": None,
                "status": "0x0" if self.reverted else "0x1", "type": "0x2"}

    @cached_property
    def logs(self) -> list[dict]:
        """address, topics, data of each event (block fields are added when mined)."""
        return _logs(self.match, self.exchange, *_legs(self.match))


def _leg(f: WalletFill, fee: int = 0) -> _Leg:
    shares = _units(f.size)
    usdc = int(round(shares * Fraction(str(round(f.price, 6)))))
    return _Leg(f, *((usdc, shares) if f.side == "BUY" else (shares, usdc)), fee)


def settle(match: Match) -> Settlement:
    """The operator's transaction and the events it emits once mined."""
    return Settlement(match)


def _legs(match: Match) -> tuple[_Leg, list[_Leg]]:
    """(taker, makers) with their on-chain amounts. The taker gets every maker's shares; per maker it pays (BUY) or
    receives (SELL) the maker's pUSD when they trade the same token, and the rest of each share's 1 pUSD when the
    maker trades the other outcome on the same side (mint / merge)."""
    makers = [_leg(f) for f in match.makers]
    t = match.taker
    shares = usdc = 0
    for mk in makers:
        mk_shares, mk_usdc = (mk.taking, mk.making) if mk.fill.side == "BUY" else (mk.making, mk.taking)
        shares += mk_shares
        usdc += mk_usdc if mk.fill.token_id == t.token_id else mk_shares - mk_usdc
    making, taking = (usdc, shares) if t.side == "BUY" else (shares, usdc)
    return _Leg(t, making, taking, _units(t.fee)), makers


def _calldata(match: Match, taker: _Leg, makers: list[_Leg]) -> str:
    ts_ms = int(match.match_time * 1000)

    def order(leg: _Leg) -> tuple:
        f = leg.fill
        return (int(f.order_hash[2:18], 16), f.wallet, f.wallet, int(f.token_id), leg.making, leg.taking,
                0 if f.side == "BUY" else 1, 0, ts_ms, ZERO32, ZERO32,
                hashlib.sha512(f.order_hash.encode()).digest()[:65])

    args = [bytes.fromhex(match.market.condition_id[2:]), order(taker), [order(mk) for mk in makers], taker.making,
            [mk.making for mk in makers], taker.fee, [mk.fee for mk in makers]]
    return "0x" + MATCH_ORDERS_SELECTOR + encode(MATCH_ORDERS_ARGS, args).hex()


def _logs(match: Match, exchange: str, taker: _Leg, makers: list[_Leg]) -> list[dict]:
    t = match.taker

    def filled(leg: _Leg, counterparty: str) -> dict:
        f = leg.fill
        data = encode(ORDER_FILLED_DATA, [0 if f.side == "BUY" else 1, int(f.token_id), leg.making, leg.taking,
                                          leg.fee, ZERO32, ZERO32])
        return {"address": exchange, "topics": [TOPIC_ORDER_FILLED, f.order_hash.lower(), _topic(f.wallet),
                                                _topic(counterparty)], "data": "0x" + data.hex()}

    logs = [filled(mk, t.wallet) for mk in makers] + [filled(taker, exchange)]
    matched = encode(ORDERS_MATCHED_DATA, [0 if t.side == "BUY" else 1, int(t.token_id), taker.making, taker.taking])
    logs.append({"address": exchange, "topics": [TOPIC_ORDERS_MATCHED, t.order_hash.lower(), _topic(t.wallet)],
                 "data": "0x" + matched.hex()})
    return logs


@dataclass
class Block:
    number: int
    hash: str
    timestamp: int
    txs: list[Settlement | UserTx]
    parent_hash: str = "0x" + "00" * 32
    logs: list[dict] | None = None       # built when mined if someone subscribed to logs, else on first request

    def header(self) -> dict:
        """The block header fields (what `newHeads` sends and `eth_getBlockBy*` start from)."""
        return {"number": _hex(self.number), "hash": self.hash, "parentHash": self.parent_hash,
                "nonce": "0x0000000000000000", "sha3Uncles": EMPTY_UNCLES, "logsBloom": "0x" + "00" * 256,
                "transactionsRoot": _h("txroot", self.hash), "stateRoot": _h("state", self.hash),
                "receiptsRoot": _h("receipts", self.hash), "miner": BLOCK_PRODUCER, "difficulty": "0x1",
                "totalDifficulty": _hex(self.number), "extraData": "0x", "size": _hex(1024 + 512 * len(self.txs)),
                "gasLimit": _hex(30_000_000), "gasUsed": _hex(sum(tx.gas_used for tx in self.txs)),
                "timestamp": _hex(self.timestamp), "baseFeePerGas": _hex(BASE_FEE), "mixHash": "0x" + "00" * 32}


def _rpc_error(req_id, code: int, message: str, data: str | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": req_id, "error": error}


def _hex(n: int) -> str:
    return hex(n)


def _h(kind: str, seed: str) -> str:
    return "0x" + hashlib.sha256(f"{kind}:{seed}".encode()).hexdigest()


def _is_hex(value, nbytes: int) -> bool:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 2 + 2 * nbytes:
        return False
    try:
        int(value[2:], 16)
    except ValueError:
        return False
    return True


def parse_log_filter(raw) -> tuple[frozenset[str] | None, list[frozenset[str] | None]]:
    """eth_subscribe("logs", {address, topics}) filter -> (addresses or None, positional topic sets or None)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RpcError(-32602, "invalid argument 1: filter must be an object")
    addr = raw.get("address")
    addresses = None
    if addr is not None:
        items = addr if isinstance(addr, list) else [addr]
        if not all(_is_hex(a, 20) for a in items):
            raise RpcError(-32602, "invalid argument 1: hex string has length != 40 or is not an address")
        addresses = frozenset(a.lower() for a in items)
    topics = raw.get("topics") or []
    if not isinstance(topics, list) or len(topics) > 4:
        raise RpcError(-32602, "invalid argument 1: topics must be a list of at most 4 entries")
    out: list[frozenset[str] | None] = []
    for t in topics:
        if t is None:
            out.append(None)
            continue
        items = t if isinstance(t, list) else [t]
        if not all(_is_hex(x, 32) for x in items):
            raise RpcError(-32602, "invalid argument 1: topic must be a 32-byte hex string")
        out.append(frozenset(x.lower() for x in items))
    return addresses, out


def log_matches(log: dict, addresses, topics) -> bool:
    if addresses is not None and log["address"] not in addresses:
        return False
    for i, wanted in enumerate(topics):
        if wanted is None:
            continue
        if i >= len(log["topics"]) or log["topics"][i] not in wanted:
            return False
    return True


@dataclass
class _Sub:
    kind: str                    # logs | pending | heads
    addresses: frozenset[str] | None = None
    topics: list = field(default_factory=list)
    full: bool = False


class Chain:
    def __init__(self, hub: Hub, *, mempool_delay: float = 0.65, logs_delay: float = 2.2, block_s: float = 2.0,
                 reorg_rate: float = 0.0, seed: int = 1, clock=time.time, node: Node | None = None,
                 faults: Faults | None = None, truth: GroundTruth | None = None):
        self.mempool_delay = mempool_delay
        self.logs_delay = logs_delay
        self.block_s = block_s
        self.reorg_rate = reorg_rate
        self.rng = random.Random(seed + 2000)
        self.clock = clock
        self.head = FIRST_BLOCK - 1
        self.blocks: deque[Block] = deque(maxlen=KEPT_BLOCKS)
        self.pool: list[tuple[float, Settlement]] = []        # (includable at, tx) not yet mined
        self.clients: dict[web.WebSocketResponse, dict[str, _Sub]] = {}
        self.reorg_requests: dict[str, bool] = {}             # tx hash -> drop for good
        self.silent: set[str] = set()                         # feeds that deliver nothing (fault)
        self.nonce = 0
        self.epoch = 0
        self._lag_x: float | None = None       # log of the mempool delay over its median, drifting
        self._lag_at = 0.0
        self._last_announce = 0.0
        self.counters = {"txs": 0, "pending_sent": 0, "pending_skipped": 0, "blocks": 0, "reorgs": 0,
                         "removed_logs": 0, "dropped_txs": 0, "rpc_requests": 0, "rpc_faults": 0}
        self.node = node                     # wallets' transactions (None: settlements only)
        self.faults = faults or Faults()
        self.truth = truth or GroundTruth(None, clock)
        if node is not None:
            node.announce = self._announce_user
        hub.subscribe(MATCH, self._on_match)

    # ---- production ---------------------------------------------------------------------------------------
    def start(self) -> None:
        asyncio.get_running_loop().create_task(self._block_loop())

    def _next_tick(self, t: float) -> float:
        return math.ceil(t / self.block_s) * self.block_s

    def _on_match(self, match: Match) -> None:
        s = settle(match)
        self.nonce += 1
        s.nonce = self.nonce
        self.counters["txs"] += 1
        now = self.clock()
        includable = match.match_time + self.logs_delay - self.block_s / 2
        self.pool.append((includable, s))
        at = max(match.match_time + self._mempool_delay(now), self._last_announce + 0.0005)
        if at < self._next_tick(includable):
            self._last_announce = at
            Hub.later(at - now, lambda: self._announce(s))
        else:
            self.counters["pending_skipped"] += 1

    def _mempool_delay(self, now: float) -> float:
        """Log-normal around mempool_delay; an Ornstein-Uhlenbeck drift in log space keeps neighbours alike."""
        if self._lag_x is None:
            self._lag_x = 0.0                   # a session starts at the median and drifts from there
        else:
            keep = math.exp(-max(0.0, now - self._lag_at) / MEMPOOL_TAU_S)
            self._lag_x = keep * self._lag_x + math.sqrt(1 - keep * keep) * self.rng.gauss(0.0, MEMPOOL_SIGMA)
        self._lag_at = now
        return self.mempool_delay * math.exp(self._lag_x)

    def _subscribed(self, kind: str) -> bool:
        return any(sub.kind == kind for subs in self.clients.values() for sub in subs.values())

    def _announce(self, s: Settlement) -> None:
        if s.dropped or "mempool" in self.silent or not any(s is tx for _, tx in self.pool):
            return
        full = None
        for ws, subs in list(self.clients.items()):
            for sub_id, sub in subs.items():
                if sub.kind == "pending":
                    if sub.full and full is None:
                        full = self._pending_tx(s)
                    self._notify(ws, sub_id, full if sub.full else s.tx_hash)
        if full is not None:
            self.counters["pending_sent"] += 1

    def _pending_tx(self, s: Settlement | UserTx) -> dict:
        return self._tx_json(s, None, 0)

    def _announce_user(self, tx: UserTx) -> None:
        """A wallet's transaction enters the pool: `newPendingTransactions` right away."""
        if "mempool" in self.silent:
            return
        full = None
        for ws, subs in list(self.clients.items()):
            for sub_id, sub in subs.items():
                if sub.kind == "pending":
                    if sub.full and full is None:
                        full = self._pending_tx(tx)
                    self._notify(ws, sub_id, full if sub.full else tx.tx_hash)

    async def _block_loop(self) -> None:
        while True:
            now = self.clock()
            await asyncio.sleep(max(0.0, self._next_tick(now + 1e-3) - now))
            self.produce(self.clock())

    def produce(self, now: float) -> Block:
        """One block at `now`, after any due reorg."""
        orphaned = self._due_reorg()
        ready = [s for t, s in self.pool if t <= now + 1e-3 and not any(s is o for o in orphaned)]
        self.pool = [(t, s) for t, s in self.pool if not any(s is r for r in ready)]
        self.head += 1
        self.epoch += 1
        parent = self.blocks[-1].hash if self.blocks else _h("block", str(self.head - 1))
        block = Block(self.head, "0x" + hashlib.sha256(f"block:{self.head}:{self.epoch}".encode()).hexdigest(),
                      int(now), list(ready), parent)
        for s in ready:
            s.match.block_number = block.number
        if self.node is not None:
            # Transactions a reorg just took out come back one block later, like the settlements.
            block.txs += self.node.mine(block.number, block.hash, block.timestamp,
                                        hold={tx.tx_hash for tx in orphaned if isinstance(tx, UserTx)})
        self.blocks.append(block)
        if any(isinstance(tx, UserTx) for tx in block.txs):
            self.block_logs(block)                   # wallets' receipts are built when mined
        self.counters["blocks"] += 1
        if self._subscribed("heads"):
            self._publish_head(block)
        if self._subscribed("logs"):
            self._publish_logs(self.block_logs(block))
        return block

    @staticmethod
    def block_logs(block: Block) -> list[dict]:
        """Every event of the block's transactions with its block fields (a reverted transaction emits none)."""
        if block.logs is None:
            block.logs = []
            for tx_index, s in enumerate(block.txs):
                for log in () if s.reverted else s.logs:
                    block.logs.append({**log, "blockNumber": _hex(block.number), "transactionHash": s.tx_hash,
                                       "transactionIndex": _hex(tx_index), "blockHash": block.hash,
                                       "blockTimestamp": _hex(block.timestamp), "logIndex": _hex(len(block.logs)),
                                       "removed": False})
                if isinstance(s, UserTx):        # its receipt outlives the blocks the node keeps
                    s.receipt = (block.hash, block.number, tx_index,
                                 [log for log in block.logs if log["transactionHash"] == s.tx_hash],
                                 sum(t.gas_used for t in block.txs[:tx_index + 1]))
        return block.logs

    def _publish_head(self, block: Block) -> None:
        header = block.header()
        for ws, subs in list(self.clients.items()):
            for sub_id, sub in subs.items():
                if sub.kind == "heads":
                    self._notify(ws, sub_id, header)

    def _due_reorg(self) -> list[Settlement | UserTx]:
        """Orphan the newest blocks if a reorg is due; returns the transactions taken out of them."""
        depth, drop = 0, set()
        for tx_hash, drop_it in list(self.reorg_requests.items()):
            for back, block in enumerate(reversed(self.blocks)):
                if any(s.tx_hash == tx_hash for s in block.txs):
                    depth = max(depth, back + 1)
                    if drop_it:
                        drop.add(tx_hash)
                    del self.reorg_requests[tx_hash]
                    break
        if not depth and self.blocks and self.reorg_rate and self.rng.random() < self.reorg_rate:
            depth = 1
        if not depth:
            return []
        orphaned: list[Settlement | UserTx] = []
        removed: list[dict] = []
        gone: list[Block] = []
        for _ in range(depth):
            block = self.blocks.pop()
            gone.append(block)
            removed += [{**log, "removed": True} for log in reversed(block.logs or [])]
            orphaned = block.txs + orphaned
        self.head -= depth
        self.counters["reorgs"] += 1
        self._publish_logs(removed)
        self.counters["removed_logs"] += len(removed)
        now = self.clock()
        users = [tx for tx in orphaned if isinstance(tx, UserTx)]
        if users and self.node is not None:
            # What they did is undone, newest first; ground truth readers drop the records of these blocks.
            for tx in reversed(users):
                tx.receipt = None
                self.node.orphan(tx)
            self.truth.record("chain_reorg", block_hashes=[b.hash for b in gone],
                              tx_hashes=[tx.tx_hash for tx in users])
        for s in orphaned:
            if s.tx_hash in drop:
                s.dropped = True
                self.counters["dropped_txs"] += 1
                if isinstance(s, UserTx) and self.node is not None:
                    self.node.pending.get(s.sender, {}).pop(s.nonce, None)
                continue
            if isinstance(s, Settlement):
                self.pool.append((now, s))
                Hub.later(0.05, partial(self._announce, s))
        return orphaned

    def _publish_logs(self, logs: list[dict]) -> None:
        if not logs or "logs" in self.silent:
            return
        for ws, subs in list(self.clients.items()):
            for sub_id, sub in subs.items():
                if sub.kind != "logs":
                    continue
                for log in logs:
                    if log_matches(log, sub.addresses, sub.topics):
                        self._notify(ws, sub_id, log)

    def _notify(self, ws: web.WebSocketResponse, sub_id: str, result) -> None:
        if ws.closed:
            return
        text = json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                           "params": {"subscription": sub_id, "result": result}})
        asyncio.ensure_future(_safe_send(ws, text))

    # ---- JSON-RPC -----------------------------------------------------------------------------------------
    def call(self, ws, req) -> dict:
        """One JSON-RPC 2.0 request object -> its response object."""
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
            return _rpc_error(req.get("id") if isinstance(req, dict) else None, -32600, "invalid request")
        req_id, method, params = req.get("id"), req["method"], req.get("params", [])
        if not isinstance(params, list):
            return _rpc_error(req_id, -32602, "invalid params: expected an array")
        self.counters["rpc_requests"] += 1
        try:
            result = self._dispatch(ws, method, params)
        except RpcError as exc:
            return _rpc_error(req_id, exc.code, str(exc), exc.data)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError):
            # Hostile input the checks above did not foresee: a clear error, never a dead connection.
            log.exception("JSON-RPC %s failed", method)
            return _rpc_error(req_id, -32603, "internal error")
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    async def _answer(self, ws, body) -> tuple[object | None, bool]:
        """The answer to one request body (object or batch) with the node faults applied: (answer or None when it
        is lost, whether the connection should be cut)."""
        stall = self.faults.take("rpc_stall")
        if stall is not None:
            self.counters["rpc_faults"] += 1
            await asyncio.sleep(float(stall.get("seconds", 30)))
        if self.faults.take("rpc_5xx") is not None:
            self.counters["rpc_faults"] += 1
            return None, False
        if isinstance(body, list):
            out: object = [self.call(ws, r) for r in body] if body else _rpc_error(None, -32600, "empty batch")
        else:
            out = self.call(ws, body)
        sends = [r for r in (body if isinstance(body, list) else [body])
                 if isinstance(r, dict) and r.get("method") == "eth_sendRawTransaction"]
        if sends and self.faults.take("rpc_lost_answer") is not None:
            self.counters["rpc_faults"] += 1
            return None, True
        return out, False

    async def rpc_http(self, request: web.Request) -> web.Response:
        """JSON-RPC over HTTP POST (what HTTP providers and the official SDK's EOA path use)."""
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            return web.json_response(_rpc_error(None, -32700, "parse error"))
        out, cut = await self._answer(None, body)
        if out is None:
            status, text = (504, "Gateway Time-out") if cut else (503, "Service Temporarily Unavailable")
            return web.Response(status=status, content_type="text/html",
                                text=f"<html><head><title>{status} {text}</title></head><body><center><h1>{status} "
                                     f"{text}</h1></center></body></html>")
        return web.json_response(out)

    def _dispatch(self, ws, method: str, params: list):
        if method == "eth_chainId":
            return _hex(crypto.CHAIN_ID)
        if method == "eth_blockNumber":
            return _hex(self.head)
        if method == "eth_subscribe":
            if ws is None:
                raise RpcError(-32601, "notifications not supported")
            if not params or not isinstance(params[0], str):
                raise RpcError(-32602, "invalid params: missing subscription type")
            if params[0] == "logs":
                addresses, topics = parse_log_filter(params[1] if len(params) > 1 else None)
                sub = _Sub("logs", addresses, topics)
            elif params[0] == "newPendingTransactions":
                sub = _Sub("pending", full=len(params) > 1 and params[1] is True)
            elif params[0] == "newHeads":
                sub = _Sub("heads")
            else:
                raise RpcError(-32602, f"invalid params: no \"{params[0]}\" subscription in eth namespace")
            sub_id = "0x" + hashlib.sha256(f"{id(ws)}:{len(self.clients.get(ws, {}))}:{self.rng.random()}"
                                           .encode()).hexdigest()[:32]
            self.clients.setdefault(ws, {})[sub_id] = sub
            return sub_id
        if method == "eth_unsubscribe":
            if len(params) != 1 or not isinstance(params[0], str):
                raise RpcError(-32602, "invalid params: expected one subscription id")
            return self.clients.get(ws, {}).pop(params[0], None) is not None
        if method == "net_version":
            return str(crypto.CHAIN_ID)
        if method == "eth_syncing":
            return False
        if method in ("eth_getBlockByNumber", "eth_getBlockByHash"):
            if len(params) != 2 or not isinstance(params[1], bool):
                raise RpcError(-32602, "invalid params: expected [block, full transactions]")
            block = self._block_by_number(params[0]) if method == "eth_getBlockByNumber" else \
                self._block_by_hash(params[0])
            return None if block is None else self._block_json(block, params[1])
        if method == "eth_getLogs":
            return self._get_logs(params[0] if len(params) == 1 else None)
        if method in ("eth_getTransactionReceipt", "eth_getTransactionByHash"):
            if len(params) != 1 or not _is_hex(params[0], 32):
                raise RpcError(-32602, "invalid argument 0: hex string has length != 64")
            found = self._find_tx(params[0].lower())
            if found is None:
                return None
            block, index, tx = found
            if method == "eth_getTransactionReceipt":
                return None if block is None else self._receipt(block, index, tx)
            return self._tx_json(tx, block, index)
        if method == "eth_gasPrice":
            return _hex(BASE_FEE + SUGGESTED_TIP)
        if method == "eth_maxPriorityFeePerGas":
            return _hex(SUGGESTED_TIP)
        if method == "eth_feeHistory":
            return self._fee_history(params)
        if method == "web3_clientVersion":
            return "bor/v2.2.9-stable/linux-amd64/go1.24 (polysim)"
        if self.node is not None:
            return self._state_method(method, params)
        raise RpcError(-32601, f"the method {method} does not exist/is not available")

    # ---- state: balances, calls, wallets' transactions ------------------------------------------------------
    def _state_method(self, method: str, params: list):
        node = self.node
        assert node is not None
        ledger = node.ledger
        if method in ("eth_getBalance", "eth_getTransactionCount", "eth_getCode"):
            if not params or not _is_hex(params[0], 20):
                raise RpcError(-32602, "invalid argument 0: hex string has length != 40")
            tag = params[1] if len(params) > 1 else "latest"
            self._check_block_ref(tag)
            address = params[0].lower()
            if method == "eth_getBalance":
                return _hex(ledger.balance(address))
            if method == "eth_getCode":
                return STUB_CODE if ledger.is_contract(address) else "0x"
            return _hex(node.pending_nonce(address) if tag == "pending" else ledger.nonce(address))
        if method in ("eth_call", "eth_estimateGas"):
            call = self._call_object(params)
            if len(params) > 1:
                self._check_block_ref(params[1])
            frame = Frame()
            try:
                out = ledger.call(frame, *call)
            except contracts.Revert as exc:
                raise RpcError(3, exc.message, exc.data) from None
            finally:
                frame.rollback()
            if method == "eth_call":
                return "0x" + out.hex()
            return _hex(intrinsic_gas(call[2]) + frame.gas)
        if method == "eth_sendRawTransaction":
            if len(params) != 1:
                raise RpcError(-32602, "missing value for required argument 0")
            return node.send_raw(params[0])
        raise RpcError(-32601, f"the method {method} does not exist/is not available")

    @staticmethod
    def _check_block_ref(ref) -> None:
        if isinstance(ref, dict) and ("blockHash" in ref or "blockNumber" in ref):
            return
        if ref in BLOCK_TAGS or ref == "earliest":
            return
        if isinstance(ref, str) and ref.startswith("0x"):
            try:
                int(ref, 16)
                return
            except ValueError:
                pass
        raise RpcError(-32602, "invalid argument 1: hex string without 0x prefix")

    def _call_object(self, params: list) -> tuple[str, str, bytes, int]:
        """(from, to, data, value) of an eth_call / eth_estimateGas transaction object."""
        if not params or not isinstance(params[0], dict):
            raise RpcError(-32602, "invalid argument 0: json: cannot unmarshal into a transaction call object")
        obj = params[0]
        sender = obj.get("from") or contracts.ZERO_ADDRESS
        to = obj.get("to")
        if not _is_hex(sender, 20):
            raise RpcError(-32602, "invalid argument 0: hex string has length != 40")
        if to is None:
            raise RpcError(-32000, "polysim: contract creation is not simulated")
        if not _is_hex(to, 20):
            raise RpcError(-32602, "invalid argument 0: hex string has length != 40")
        raw = obj.get("input", obj.get("data")) or "0x"
        try:
            if not isinstance(raw, str) or not raw.startswith("0x"):
                raise ValueError
            data = bytes.fromhex(raw[2:])
            value = int(obj.get("value") or "0x0", 16)
        except (ValueError, TypeError):
            raise RpcError(-32602, "invalid argument 0: invalid hex string") from None
        if value and self.node is not None and self.node.ledger.balance(sender) < value:
            raise RpcError(-32000, "insufficient funds for transfer")
        return sender.lower(), to.lower(), data, value

    def _fee_history(self, params: list) -> dict:
        """eth_feeHistory(blockCount, newestBlock, rewardPercentiles): the base fee is constant on this chain."""
        try:
            count = int(params[0], 16) if isinstance(params[0], str) else int(params[0])
            newest = self.head if params[1] in BLOCK_TAGS else int(params[1], 16)
        except (IndexError, TypeError, ValueError):
            raise RpcError(-32602, "invalid argument: expected [blockCount, newestBlock, rewardPercentiles]") from None
        count = max(0, min(count, 1024, newest - FIRST_BLOCK + 1))
        percentiles = params[2] if len(params) > 2 and isinstance(params[2], list) else None
        doc: dict = {"oldestBlock": _hex(newest - count + 1), "baseFeePerGas": [_hex(BASE_FEE)] * (count + 1),
                     "gasUsedRatio": [0.1] * count}
        if percentiles is not None:
            doc["reward"] = [[_hex(SUGGESTED_TIP)] * len(percentiles) for _ in range(count)]
        return doc

    # ---- reads ---------------------------------------------------------------------------------------------
    def _block_by_number(self, ref) -> Block | None:
        if ref in BLOCK_TAGS:
            return self.blocks[-1] if self.blocks else None
        if ref == "earliest":
            return self.blocks[0] if self.blocks else None
        if not isinstance(ref, str) or not ref.startswith("0x"):
            raise RpcError(-32602, "invalid argument 0: hex string without 0x prefix")
        try:
            n = int(ref, 16)
        except ValueError:
            raise RpcError(-32602, "invalid argument 0: invalid hex string") from None
        return next((b for b in self.blocks if b.number == n), None)

    def _block_by_hash(self, ref) -> Block | None:
        if not _is_hex(ref, 32):
            raise RpcError(-32602, "invalid argument 0: hex string has length != 64")
        return next((b for b in self.blocks if b.hash == ref.lower()), None)

    def _block_json(self, block: Block, full: bool) -> dict:
        txs = [self._tx_json(s, block, i) if full else s.tx_hash for i, s in enumerate(block.txs)]
        return {**block.header(), "transactions": txs, "uncles": []}

    def _tx_json(self, s: Settlement | UserTx, block: Block | None, index: int) -> dict:
        """A transaction as eth_getTransactionByHash shows it; block fields are null while it is pending."""
        return {**s.tx_fields(), "blockHash": block.hash if block else None,
                "blockNumber": _hex(block.number) if block else None,
                "transactionIndex": _hex(index) if block else None}

    def _receipt(self, block: Block, index: int, s: Settlement | UserTx) -> dict:
        if isinstance(s, UserTx) and s.receipt is not None:
            _, _, _, logs, cumulative = s.receipt
        else:
            logs = [log for log in self.block_logs(block) if log["transactionHash"] == s.tx_hash]
            cumulative = sum(t.gas_used for t in block.txs[:index + 1])
        return {**s.receipt_fields(), "transactionHash": s.tx_hash, "transactionIndex": _hex(index),
                "blockHash": block.hash, "blockNumber": _hex(block.number), "cumulativeGasUsed": _hex(cumulative),
                "logs": logs, "logsBloom": "0x" + "00" * 256}

    def _find_tx(self, tx_hash: str) -> tuple[Block | None, int, Settlement | UserTx] | None:
        for block in reversed(self.blocks):
            for i, s in enumerate(block.txs):
                if s.tx_hash == tx_hash:
                    return block, i, s
        if self.node is not None:
            tx = self.node.find(tx_hash)
            if tx is not None and tx.receipt is not None:        # mined in a block the node no longer keeps
                block_hash, number, index, _, _ = tx.receipt
                return Block(number, block_hash, 0, []), index, tx
            if tx is not None and tx.status is None:
                return None, 0, tx
        pending = next((s for _, s in self.pool if s.tx_hash == tx_hash and not s.dropped), None)
        return (None, 0, pending) if pending is not None else None

    def _get_logs(self, raw) -> list[dict]:
        """eth_getLogs over the blocks the node still keeps: {fromBlock, toBlock | blockHash, address, topics}."""
        if not isinstance(raw, dict):
            raise RpcError(-32602, "invalid argument 0: filter must be an object")
        addresses, topics = parse_log_filter({k: raw[k] for k in ("address", "topics") if k in raw})
        if "blockHash" in raw:
            if "fromBlock" in raw or "toBlock" in raw:
                raise RpcError(-32602, "invalid argument 0: cannot specify both BlockHash and FromBlock/ToBlock")
            block = self._block_by_hash(raw["blockHash"])
            if block is None:
                raise RpcError(-32000, "unknown block")
            blocks = [block]
        else:
            lo, hi = (self._bound(raw.get(k, "latest")) for k in ("fromBlock", "toBlock"))
            if hi - lo > MAX_LOG_BLOCKS:
                raise RpcError(-32005, f"block range is too wide (maximum {MAX_LOG_BLOCKS} blocks)")
            blocks = [b for b in self.blocks if lo <= b.number <= hi]
        return [log for b in blocks for log in self.block_logs(b) if log_matches(log, addresses, topics)]

    def _bound(self, ref) -> int:
        if ref in BLOCK_TAGS:
            return self.head
        if ref == "earliest":
            return self.blocks[0].number if self.blocks else self.head
        if isinstance(ref, str) and ref.startswith("0x"):
            try:
                return int(ref, 16)
            except ValueError:
                pass
        raise RpcError(-32602, "invalid argument 0: invalid block number")

    async def rpc_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.clients[ws] = {}
        try:
            async for msg in ws:
                # Nodes take a request in a text or a binary frame (web3.py sends binary ones).
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    req = json.loads(msg.data)
                except (ValueError, RecursionError):          # not JSON, or nested past any sane depth
                    await ws.send_str(json.dumps(_rpc_error(None, -32700, "parse error")))
                    continue
                out, cut = await self._answer(ws, req)
                if cut:
                    await ws.close(code=1011, message=b"upstream connection lost")
                    break
                if out is None:
                    out = _rpc_error(req.get("id") if isinstance(req, dict) else None, -32603,
                                     "internal error: upstream unavailable")
                await ws.send_str(json.dumps(out))
        finally:
            self.clients.pop(ws, None)
        return ws

    # ---- control -----------------------------------------------------------------------------------------
    async def ctl_reorg(self, request: web.Request) -> web.Response:
        """{"tx_hash": "0x…", "drop": false}: orphan the block holding that tx (once mined) at the next block;
        without tx_hash, the newest block. drop=true: its transactions never come back."""
        body = await request.json()
        tx_hash = (body.get("tx_hash") or "").lower()
        if not tx_hash:
            newest = next((s.tx_hash for block in reversed(self.blocks) for s in block.txs), "")
            if not newest:
                return web.json_response({"error": "no mined transaction yet"}, status=409)
            tx_hash = newest
        self.request_reorg(tx_hash, bool(body.get("drop", False)))
        return web.json_response({"ok": True, "tx_hash": tx_hash, "head": self.head})

    def request_reorg(self, tx_hash: str, drop: bool = False) -> None:
        """Orphan the block holding tx_hash (and every later one) before the first block after it is mined."""
        self.reorg_requests[tx_hash.lower()] = drop

    async def ctl_faults(self, request: web.Request) -> web.Response:
        """{"mempool_silent": true, "logs_silent": false}: a feed that stays connected but delivers nothing.
        {"malformed": N}: N broken messages to every subscription (bad input for the client to count and skip)."""
        body = await request.json()
        for name in ("mempool", "logs"):
            key = f"{name}_silent"
            if key in body:
                (self.silent.add if body[key] else self.silent.discard)(name)
        for i in range(int(body.get("malformed", 0))):
            self._send_malformed(i)
        return web.json_response({"ok": True, "silent": sorted(self.silent)})

    def _send_malformed(self, i: int) -> None:
        """Truncated, oversized, non-JSON and type-confused notifications, in turn."""
        for ws, subs in list(self.clients.items()):
            for sub_id in subs:
                kind = i % 4
                if kind == 0:
                    text = '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"' + sub_id
                elif kind == 1:
                    text = "x" * 200_000
                elif kind == 2:
                    text = "not json at all"
                else:
                    text = json.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": {
                        "subscription": sub_id, "result": {"topics": "0xnope", "data": 7, "transactionHash": [],
                                                           "input": {"a": 1}, "blockNumber": None}}})
                self.counters["malformed_sent"] = self.counters.get("malformed_sent", 0) + 1
                if not ws.closed:
                    asyncio.ensure_future(_safe_send(ws, text))

    async def ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response({"head": self.head, "pool": len(self.pool), "clients": len(self.clients),
                                  "subscriptions": sum(len(subs) for subs in self.clients.values()),
                                  "counters": self.counters, "silent": sorted(self.silent)})


async def _safe_send(ws, text: str) -> None:
    try:
        await ws.send_str(text)
    except (ConnectionError, RuntimeError):
        pass


def chain_app(chain: Chain) -> web.Application:
    async def close_clients(app) -> None:
        for ws in list(chain.clients):
            await ws.close(code=1001, message=b"server shutdown")

    app = web.Application()
    app.on_shutdown.append(close_clients)
    app.router.add_get("/", chain.rpc_ws)
    app.router.add_post("/", chain.rpc_http)
    app.router.add_post("/_chain/reorg", chain.ctl_reorg)
    app.router.add_post("/_chain/faults", chain.ctl_faults)
    app.router.add_get("/_chain/state", chain.ctl_state)
    return app
