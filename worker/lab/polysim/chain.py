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
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property, partial

from aiohttp import WSMsgType, web
from eth_abi import encode

from polysim import crypto
from polysim.events import MATCH, Hub, Match, WalletFill

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
BASE_FEE = 30_000_000_000
BLOCK_TAGS = ("latest", "safe", "finalized", "pending")
MAX_LOG_BLOCKS = KEPT_BLOCKS


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
    txs: list[Settlement]
    parent_hash: str = "0x" + "00" * 32
    logs: list[dict] | None = None       # built when mined if someone subscribed to logs, else on first request

    def header(self) -> dict:
        """The block header fields (what `newHeads` sends and `eth_getBlockBy*` start from)."""
        return {"number": _hex(self.number), "hash": self.hash, "parentHash": self.parent_hash,
                "nonce": "0x0000000000000000", "sha3Uncles": EMPTY_UNCLES, "logsBloom": "0x" + "00" * 256,
                "transactionsRoot": _h("txroot", self.hash), "stateRoot": _h("state", self.hash),
                "receiptsRoot": _h("receipts", self.hash), "miner": BLOCK_PRODUCER, "difficulty": "0x1",
                "totalDifficulty": _hex(self.number), "extraData": "0x", "size": _hex(1024 + 512 * len(self.txs)),
                "gasLimit": _hex(30_000_000), "gasUsed": _hex(GAS_PER_TX * len(self.txs)),
                "timestamp": _hex(self.timestamp), "baseFeePerGas": _hex(BASE_FEE), "mixHash": "0x" + "00" * 32}


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _rpc_error(req_id, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


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
                 reorg_rate: float = 0.0, seed: int = 1, clock=time.time):
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
                         "removed_logs": 0, "dropped_txs": 0}
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

    def _pending_tx(self, s: Settlement) -> dict:
        return self._tx_json(s, None, 0)

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
                      int(now), ready, parent)
        for s in ready:
            s.match.block_number = block.number
        self.blocks.append(block)
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
        return block.logs

    def _publish_head(self, block: Block) -> None:
        header = block.header()
        for ws, subs in list(self.clients.items()):
            for sub_id, sub in subs.items():
                if sub.kind == "heads":
                    self._notify(ws, sub_id, header)

    def _due_reorg(self) -> list[Settlement]:
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
        orphaned: list[Settlement] = []
        removed: list[dict] = []
        for _ in range(depth):
            block = self.blocks.pop()
            removed += [{**log, "removed": True} for log in reversed(block.logs or [])]
            orphaned = block.txs + orphaned
        self.head -= depth
        self.counters["reorgs"] += 1
        self._publish_logs(removed)
        self.counters["removed_logs"] += len(removed)
        now = self.clock()
        for s in orphaned:
            if s.tx_hash in drop:
                s.dropped = True
                self.counters["dropped_txs"] += 1
                continue
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
        try:
            result = self._dispatch(ws, method, params)
        except RpcError as exc:
            return _rpc_error(req_id, exc.code, str(exc))
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    def _dispatch(self, ws, method: str, params: list):
        if method == "eth_chainId":
            return _hex(crypto.CHAIN_ID)
        if method == "eth_blockNumber":
            return _hex(self.head)
        if method == "eth_subscribe":
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
        raise RpcError(-32601, f"the method {method} does not exist/is not available")

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

    def _tx_json(self, s: Settlement, block: Block | None, index: int) -> dict:
        """The operator's transaction; block fields are null while it is pending."""
        return {"blockHash": block.hash if block else None, "blockNumber": _hex(block.number) if block else None,
                "from": OPERATOR, "gas": _hex(1_500_000), "gasPrice": _hex(60_000_000_000),
                "maxFeePerGas": _hex(90_000_000_000), "maxPriorityFeePerGas": _hex(30_000_000_000),
                "hash": s.tx_hash, "input": s.calldata, "nonce": _hex(s.nonce), "to": s.exchange,
                "transactionIndex": _hex(index) if block else None, "value": "0x0", "type": "0x2",
                "accessList": [], "chainId": _hex(crypto.CHAIN_ID), "v": "0x0", "yParity": "0x0",
                "r": "0x" + hashlib.sha256(s.tx_hash.encode()).hexdigest(),
                "s": "0x" + hashlib.sha256(s.tx_hash.encode() + b"s").hexdigest()}

    def _receipt(self, block: Block, index: int, s: Settlement) -> dict:
        logs = [log for log in self.block_logs(block) if log["transactionHash"] == s.tx_hash]
        return {"transactionHash": s.tx_hash, "transactionIndex": _hex(index), "blockHash": block.hash,
                "blockNumber": _hex(block.number), "from": OPERATOR, "to": s.exchange,
                "cumulativeGasUsed": _hex(GAS_PER_TX * (index + 1)), "gasUsed": _hex(GAS_PER_TX),
                "effectiveGasPrice": _hex(BASE_FEE + 30_000_000_000), "contractAddress": None, "logs": logs,
                "logsBloom": "0x" + "00" * 256, "status": "0x0" if s.reverted else "0x1", "type": "0x2"}

    def _find_tx(self, tx_hash: str) -> tuple[Block | None, int, Settlement] | None:
        for block in reversed(self.blocks):
            for i, s in enumerate(block.txs):
                if s.tx_hash == tx_hash:
                    return block, i, s
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
                except ValueError:
                    await ws.send_str(json.dumps(_rpc_error(None, -32700, "parse error")))
                    continue
                if isinstance(req, list):
                    out = [self.call(ws, r) for r in req] if req else _rpc_error(None, -32600, "empty batch")
                else:
                    out = self.call(ws, req)
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
    app.router.add_post("/_chain/reorg", chain.ctl_reorg)
    app.router.add_post("/_chain/faults", chain.ctl_faults)
    app.router.add_get("/_chain/state", chain.ctl_state)
    return app
