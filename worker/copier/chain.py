"""On-chain feeds of the source wallet's fills: V2 exchange `OrderFilled` logs and pending `matchOrders` transactions.

Both are Polygon JSON-RPC websocket subscriptions (`eth_subscribe`), each its own greenlet with a watchdog (no message
for `data_watchdog_s`, or a head that stops advancing, means reconnect), capped exponential backoff with jitter, and
malformed messages counted and skipped. Payloads are decoded here into `SourceFill`s (reference §7c):
- logs, filtered on the source as the order's maker (topic 2): the event describes the source's own order, so its
  side, token, amounts and fee are the source's fill whether it was a maker or (taker = the exchange) the taker;
- mempool: `matchOrders(conditionId, takerOrder, makerOrders, takerFillAmount, makerFillAmounts, takerFeeAmount,
  makerFeeAmounts)`; fill amounts are in the order's maker asset and the other side follows the contract's
  `taking = making * takerAmount / makerAmount`; the taker gets the makers' shares and, per maker, pays (BUY) or
  receives (SELL) that maker's pUSD on the same token, or the rest of each share's 1 pUSD when the maker is on the
  other outcome with the same side (mint / merge). Mempool fills are unconfirmed until another feed sees them.
Amounts are 6-decimal integers; price = pUSD / shares rounded to 6 decimals (the Deduper absorbs the last digit).
Every message is parsed into a typed JSON-RPC answer or notification first (`parse_rpc_message`); the decoders raise
only MalformedMessage; a fill dated outside [now - horizon, now + skew] is refused (schemas.check_match_ts).
"""
from __future__ import annotations

import json
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import gevent
from eth_abi import decode
from eth_abi.exceptions import DecodingError

from copier.config import replay_horizon_s
from copier.errors import MalformedMessage, TemporaryError
from copier.schemas import JsonObject, Untrusted, check_match_ts, epoch_seconds, json_object, loads
from copier.types import Feed, MarketMeta, Side, SourceFill
from copier.wsfeed import ReconnectingFeed

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.config import Config
    from copier.detection import Detection
    from copier.ports import Alerts, Markets, Metrics, Stopping

log = logging.getLogger("copier.chain")

EXCHANGES = frozenset({"0xe111180000d2663c0091e4f400237545b87b996b",      # CTF Exchange V2
                       "0xe2222d279d744050d28e00520010520000310f59",      # Neg Risk CTF Exchange V2
                       "0xe3333700ca9d93003f00f0f71f8515005f6c00aa"})     # ExchangeV3 (Protocol V2 markets)
TOPIC_ORDER_FILLED = "0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee"
MATCH_ORDERS_SELECTOR = "0x3c2b4399"
ORDER_FILLED_DATA = ("uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32")
_ORDER = "(uint256,address,address,uint256,uint256,uint256,uint8,uint8,uint256,bytes32,bytes32,bytes)"
MATCH_ORDERS_ARGS = ("bytes32", _ORDER, _ORDER + "[]", "uint256", "uint256[]", "uint256", "uint256[]")
MAX_INPUT_CHARS = 256 * 1024
MAX_RPC_MESSAGE_BYTES = 1024 * 1024      # a pending transaction with the largest input we decode, and its envelope
UNRESOLVED_TTL_S = 30.0
REPLACEMENT_MEMORY = 10_000     # pending transactions remembered by (sender, nonce), at most, and only for the horizon
MAX_SHARE_UNITS = 10 ** 18               # a trillion shares: more is not a fill, it is an overflow
SUBSCRIBE_ID, HEAD_ID = 1, 2


def pad_topic(address: str) -> str:
    return "0x" + address.lower()[2:].rjust(64, "0")


@dataclass(frozen=True, slots=True)
class ChainFill:
    """One order's fill as the chain states it, in 6-decimal units."""
    tx_hash: str
    token_id: str
    side: Side
    shares: int
    usdc: int
    fee: int
    match_ts: float | None       # block timestamp (logs) or taker order timestamp (mempool); None if unknown
    condition_id: str = ""       # only the calldata names the market


@dataclass(frozen=True, slots=True)
class RpcAnswer:
    """The answer to one of our requests (eth_subscribe, eth_blockNumber)."""
    id: int
    result: object
    error: str                   # "" when the node reported none


@dataclass(frozen=True, slots=True)
class RpcNotification:
    """An `eth_subscription` message: one log or one pending transaction, decoded by the feed that subscribed."""
    subscription: str
    result: object


def parse_rpc_message(data: Untrusted) -> RpcAnswer | RpcNotification | None:
    """One JSON-RPC websocket message -> a typed answer or notification; None for anything else a node may send."""
    msg = json_object(loads(data, "JSON-RPC message", MAX_RPC_MESSAGE_BYTES), "JSON-RPC message")
    if msg.get("id") is not None:
        rid = msg["id"]
        if isinstance(rid, bool) or not isinstance(rid, int):
            raise MalformedMessage("JSON-RPC answer with a non-integer id")
        error = msg.get("error")
        return RpcAnswer(rid, msg.get("result"), json.dumps(error)[:300] if error is not None else "")
    if msg.get("method") == "eth_subscription":
        params = json_object(msg.get("params"), "eth_subscription params")
        sub = params.get("subscription")
        if not isinstance(sub, str):
            raise MalformedMessage("eth_subscription without a subscription id")
        return RpcNotification(sub, params.get("result"))
    return None


def _hex32(value: Untrusted, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise MalformedMessage(f"{what} is not a 32-byte hex string")
    try:
        int(value, 16)
    except ValueError:
        raise MalformedMessage(f"{what} is not a 32-byte hex string") from None
    return value.lower()


def _int(value: Untrusted, what: str) -> int:
    """A JSON-RPC quantity: a 0x hex string (or an integer) of at most 256 bits."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and len(value) > 66):
        raise MalformedMessage(f"{what} is not a number")
    try:
        n = int(value, 16) if isinstance(value, str) else value
    except ValueError:
        raise MalformedMessage(f"{what} is not a number") from None
    if not 0 <= n < 2 ** 256:
        raise MalformedMessage(f"{what} is out of range")
    return n


def _side(raw: int) -> Side:
    if raw not in (0, 1):
        raise MalformedMessage(f"order side {raw} is neither BUY (0) nor SELL (1)")
    return Side.BUY if raw == 0 else Side.SELL


def _amounts(side: Side, making: int, taking: int) -> tuple[int, int]:
    """(shares, usdc) of an order that made `making` and took `taking`: BUY makes pUSD, SELL makes shares."""
    return (taking, making) if side is Side.BUY else (making, taking)


def decode_order_filled(entry: JsonObject, wallet: str) -> ChainFill | None:
    """An `OrderFilled` log -> the source's fill, or None when the log is not about the source's order."""
    if not isinstance(entry, dict):
        raise MalformedMessage("log is not an object")
    topics = entry.get("topics")
    if not isinstance(topics, list) or len(topics) != 4 or not all(isinstance(t, str) for t in topics):
        raise MalformedMessage("log without four topics")
    address = entry.get("address")
    if topics[0].lower() != TOPIC_ORDER_FILLED or not isinstance(address, str) or address.lower() not in EXCHANGES:
        return None
    if topics[2].lower() != pad_topic(wallet):
        return None
    data = entry.get("data")
    if not isinstance(data, str) or not data.startswith("0x") or len(data) > 4096:
        raise MalformedMessage("OrderFilled data is not a hex string")
    try:
        side, token, making, taking, fee, _, _ = decode(ORDER_FILLED_DATA, bytes.fromhex(data[2:]))
    except (DecodingError, ValueError, TypeError, OverflowError):
        raise MalformedMessage("OrderFilled data does not decode") from None
    side = _side(side)
    shares, usdc = _amounts(side, making, taking)
    ts = entry.get("blockTimestamp")
    return ChainFill(tx_hash=_hex32(entry.get("transactionHash"), "transactionHash"), token_id=str(token),
                     side=side, shares=shares, usdc=usdc, fee=fee,
                     match_ts=epoch_seconds(_int(ts, "blockTimestamp"), "blockTimestamp") if ts is not None else None)


def decode_match_orders(tx: JsonObject, wallet: str) -> list[ChainFill]:
    """A pending `matchOrders` transaction -> the source's fills in it (as taker or as maker)."""
    if not isinstance(tx, dict):
        raise MalformedMessage("transaction is not an object")
    data = tx.get("input")
    if not isinstance(data, str) or len(data) > MAX_INPUT_CHARS:
        raise MalformedMessage("transaction input missing or too large")
    to = tx.get("to")
    if not isinstance(to, str) or to.lower() not in EXCHANGES or not data.lower().startswith(MATCH_ORDERS_SELECTOR):
        return []
    if wallet.lower()[2:] not in data.lower():
        return []                       # cheap pre-filter: the source's address is in every order it signed
    try:
        cid, taker, makers, taker_fill, maker_fills, taker_fee, maker_fees = decode(
            MATCH_ORDERS_ARGS, bytes.fromhex(data[len(MATCH_ORDERS_SELECTOR):]))
    except (DecodingError, ValueError, TypeError, OverflowError):
        raise MalformedMessage("matchOrders calldata does not decode") from None
    if not makers or len(makers) != len(maker_fills) or len(makers) != len(maker_fees):
        raise MalformedMessage("matchOrders with mismatched maker arrays")
    tx_hash = _hex32(tx.get("hash"), "hash")
    stamp = taker[8]
    common = dict(tx_hash=tx_hash, match_ts=epoch_seconds(stamp, "order timestamp") if stamp else None,
                  condition_id="0x" + cid.hex())
    t_side = _side(taker[6])
    fills, t_shares, t_usdc, consistent = [], 0, 0, True
    for order, making, fee in zip(makers, maker_fills, maker_fees, strict=True):
        if order[4] == 0:
            raise MalformedMessage("maker order with a zero makerAmount")
        side = _side(order[6])
        shares, usdc = _amounts(side, making, making * order[5] // order[4])
        same_token = order[3] == taker[3]
        consistent &= same_token is (side is not t_side)      # complementary, or mint / merge on the other outcome
        t_shares += shares
        t_usdc += usdc if same_token else shares - usdc
        if order[1].lower() == wallet.lower():
            fills.append(ChainFill(token_id=str(order[3]), side=side, shares=shares, usdc=usdc, fee=fee, **common))
    if taker[1].lower() == wallet.lower() and consistent:
        fills.insert(0, ChainFill(token_id=str(taker[3]), side=t_side, shares=t_shares, usdc=t_usdc, fee=taker_fee,
                                  **common))
    return fills


def to_source_fill(cf: ChainFill, meta: MarketMeta | None, feed: str, recv_ns: int, wallet: str,
                   confirmed: bool) -> SourceFill:
    if not 0 < cf.usdc <= cf.shares <= MAX_SHARE_UNITS:
        raise MalformedMessage(f"fill of {cf.shares} share units for {cf.usdc} pUSD units is not a trade")
    idx = meta.token_ids.index(cf.token_id) if meta is not None else 999
    return SourceFill(
        tx_hash=cf.tx_hash, asset=cf.token_id,
        condition_id=meta.condition_id if meta is not None else cf.condition_id,
        outcome=meta.outcomes[idx] if meta is not None else "", outcome_index=idx, side=cf.side,
        price=float(round(Fraction(cf.usdc, cf.shares), 6)), size=cf.shares / 1e6,
        match_ts=cf.match_ts if cf.match_ts is not None else recv_ns / 1e9, recv_ns=recv_ns, feed=feed,
        wallet=wallet, event_slug=meta.event_slug if meta is not None else "",
        slug=meta.slug if meta is not None else "", confirmed=confirmed, fee=cf.fee / 1e6)


class _RpcFeed(ReconnectingFeed):
    """One JSON-RPC websocket subscription; subclasses say what to subscribe to and how to read a result."""

    feed = ""
    confirmed = True

    metrics: Metrics

    def __init__(self, cfg: Config, *, url: str, detection: Detection, on_fill: Callable[[SourceFill], None],
                 catalog: Markets, clock: Clock, metrics: Metrics, rng: random.Random | None = None,
                 alerts: Alerts | None = None) -> None:
        super().__init__(cfg, clock=clock, metrics=metrics, rng=rng, alerts=alerts)
        self.url = url
        self.wallet = cfg.copy.source_wallet.lower()
        self.detection = detection
        self.on_fill = on_fill
        self.catalog = catalog
        self.messages = 0
        self.fills = 0
        self.live_since: float | None = None      # wall clock since the subscription has been live without a gap
        self._head: int | None = None
        self._head_at = 0.0
        self._last_msg = 0.0
        self._sub_id: str | None = None
        self._unresolved: deque[tuple[float, ChainFill, str, str, int]] = deque(maxlen=1000)

    def subscription(self) -> list[object]:
        raise NotImplementedError

    def on_result(self, result: Untrusted, recv_ns: int) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, object]:
        age = self.clock.monotonic() - self._last_msg if self._last_msg else None
        return {"name": self.name, "connected": self.connected, "reconnects": self.reconnects,
                "malformed": self.malformed, "errors": self.edge.errors, "frames": self.messages,
                "fills": self.fills, "head": self._head,
                "last_frame_age_s": round(age, 3) if age is not None else None}

    def _dropped(self) -> None:
        self.connected, self.live_since = False, None

    def _session(self, stopping: Stopping) -> None:
        ws = self._connect(self.url)
        self._sub_id = None
        try:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": SUBSCRIBE_ID, "method": "eth_subscribe",
                                "params": self.subscription()}))
            self.connected = True
            self._last_msg = self._head_at = self.clock.monotonic()
            self._head = None
            keepalive = gevent.spawn(self._keepalive, ws, self._probe)
            try:
                while not stopping.is_set():
                    data = self._recv(ws)
                    if data is None:
                        return
                    recv_ns = self.clock.now_ns()
                    self._last_msg = self.clock.monotonic()
                    self.messages += 1
                    msg = self._parse(data)
                    if isinstance(msg, RpcAnswer) and msg.id == SUBSCRIBE_ID:
                        self._sub_id = self._subscribed(msg)       # a refusal ends the session: reconnect
                    elif isinstance(msg, RpcAnswer) and msg.id == HEAD_ID:
                        if self._head_stalled(msg):
                            return
                    elif isinstance(msg, RpcNotification) and self._sub_id is not None \
                            and msg.subscription == self._sub_id:
                        self._guarded(self.on_result, msg.result, recv_ns)
            finally:
                keepalive.kill(block=False)
        finally:
            self._disconnect(ws)

    def _parse(self, data: bytes) -> RpcAnswer | RpcNotification | None:
        try:
            return parse_rpc_message(data)
        except MalformedMessage as exc:
            self.edge.malformed(exc)
        except Exception as exc:
            self.edge.failed("message", exc)
        return None

    def _subscribed(self, msg: RpcAnswer) -> str:
        if msg.error or not isinstance(msg.result, str) or not msg.result:
            raise TemporaryError(f"eth_subscribe refused: {msg.error[:200]}")
        self.live_since = self.clock.now()
        log.info("%s: subscribed", self.name)
        return msg.result

    def _head_stalled(self, msg: RpcAnswer) -> bool:
        """eth_blockNumber answers double as the node's liveness: a head that stops moving means a stuck node."""
        try:
            head = _int(msg.result, "eth_blockNumber answer")
        except MalformedMessage as exc:
            self.edge.malformed(exc)
            return False
        now = self.clock.monotonic()
        if head != self._head:
            self._head, self._head_at = head, now
            return False
        if now - self._head_at > self.cfg.feeds.data_watchdog_s:
            self.metrics.incr(f"feed.{self.name}.head_stalled")
            log.warning("%s: head %d has not moved for %.0fs, reconnecting", self.name, head, now - self._head_at)
            return True
        return False

    def _probe(self) -> str:
        """Every ping interval: retry fills on markets not known yet, then ask for the head (the node's liveness)."""
        try:
            self._retry_unresolved()
        except Exception as exc:
            self.edge.failed("retrying fills on unknown markets", exc)
        return json.dumps({"jsonrpc": "2.0", "id": HEAD_ID, "method": "eth_blockNumber", "params": []})

    def deliver(self, cf: ChainFill, stream: str, frame_id: str, recv_ns: int) -> None:
        """Into the shared dedupe. A fill on a market the catalog does not know yet can only confirm a fill that
        another feed introduced (it lacks the market to be decided on); it is retried for a while."""
        meta = self.catalog.by_asset(cf.token_id)
        if meta is None and cf.condition_id:
            meta = self.catalog.lookup(cf.condition_id, cf.token_id)
        fill = to_source_fill(cf, meta, self.feed, recv_ns, self.wallet, self.confirmed)
        check_match_ts(fill.match_ts, recv_ns / 1e9)
        if meta is None:
            if not self.detection.confirm_only(fill, stream, frame_id):
                self.metrics.incr("chain.unknown_market")
                self._unresolved.append((self.clock.monotonic() + UNRESOLVED_TTL_S, cf, stream, frame_id, recv_ns))
            return
        self.fills += 1
        parsed_ns = self.clock.now_ns()
        admitted = self.detection.sight(fill, stream, frame_id)
        if admitted is not None:
            self.metrics.timing("stage.parse_ms", (parsed_ns - recv_ns) / 1e6)
            self.metrics.timing("stage.dedupe_ms", (self.clock.now_ns() - parsed_ns) / 1e6)
            self.on_fill(admitted)

    def _retry_unresolved(self) -> None:
        pending, self._unresolved = self._unresolved, deque(maxlen=1000)
        now = self.clock.monotonic()
        for deadline, cf, stream, frame_id, recv_ns in pending:
            if deadline > now:
                self._guarded(self.deliver, cf, stream, frame_id, recv_ns)



class ChainLogFeed(_RpcFeed):
    """`OrderFilled` logs where the source is the order's maker: confirmed fills, and reorg removals."""

    name = "chain-logs"
    feed = Feed.CHAIN_LOGS.value

    def subscription(self) -> list[object]:
        return ["logs", {"address": sorted(EXCHANGES), "topics": [TOPIC_ORDER_FILLED, None, pad_topic(self.wallet)]}]

    def on_result(self, result: Untrusted, recv_ns: int) -> None:
        cf = decode_order_filled(result, self.wallet)
        if cf is None:
            return
        # One stream per block: a log re-included in another block after a reorg meets its first sighting.
        stream = f"{self.name}:{_hex32(result.get('blockHash'), 'blockHash')}"
        frame_id = str(_int(result.get("logIndex"), "logIndex"))
        if result.get("removed") is True:
            meta = self.catalog.by_asset(cf.token_id)
            self.detection.removed(to_source_fill(cf, meta, self.feed, recv_ns, self.wallet, True))
            return
        self.deliver(cf, stream, frame_id, recv_ns)


class MempoolFeed(_RpcFeed):
    """Pending `matchOrders` transactions naming the source: unconfirmed fills, about 1.4 s ahead of RTDS."""

    name = "chain-mempool"
    feed = Feed.MEMPOOL.value
    confirmed = False

    def __init__(self, cfg: Config, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        # (from, nonce) -> (first tx hash, last seen): past the replay horizon the dedupe has forgotten the fills too
        self._senders: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._horizon_s = replay_horizon_s(cfg)

    def subscription(self) -> list[object]:
        return ["newPendingTransactions", True]

    def on_result(self, result: Untrusted, recv_ns: int) -> None:
        if isinstance(result, str):
            return                      # a node that ignores the full-transactions flag sends bare hashes
        fills = decode_match_orders(result, self.wallet)
        if fills:
            self._note_replacement(result, fills[0].tx_hash)
        for i, cf in enumerate(fills):
            # One stream per transaction: a re-announced transaction is the same frames again.
            self.deliver(cf, f"{self.name}:{cf.tx_hash}", str(i), recv_ns)

    def _note_replacement(self, tx: JsonObject, tx_hash: str) -> None:
        """A gas-bumped replacement (same sender and nonce, new hash) carries the same orders: its fills, on every
        feed, are the ones first seen under the original hash."""
        sender, nonce = str(tx.get("from") or "").lower(), str(tx.get("nonce") or "")
        if not sender or not nonce:
            return
        now = self.clock.now()
        first, _ = self._senders.pop((sender, nonce), (tx_hash, now))
        self._senders[(sender, nonce)] = (first, now)
        while len(self._senders) > REPLACEMENT_MEMORY or next(iter(self._senders.values()))[1] < now - self._horizon_s:
            self._senders.popitem(last=False)
        if first != tx_hash:
            self.metrics.incr("chain.replaced")
            log.info("%s: %s replaces %s", self.name, tx_hash, first)
            self.detection.alias(tx_hash, first)
