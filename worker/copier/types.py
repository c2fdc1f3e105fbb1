"""Immutable domain messages passed between pipeline stages. Imports nothing internal.

Prices are pUSD per share in [0, 1]; sizes are shares; notionals are pUSD (USD).
Wall-clock instants are epoch seconds (float) or epoch nanoseconds (int, suffix _ns).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum


class Side(str, Enum):  # noqa: UP042 -- str() and format() of a member give its qualified name; StrEnum would change that
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderStatus(StrEnum):
    """Where one order stands. The venue's answers, plus our own states before and after it answered."""
    SIGNED = "SIGNED"               # persisted before the first POST; maybe on the wire
    POSTING = "POSTING"             # a request carrying it was written
    UNKNOWN = "UNKNOWN"             # no usable answer yet: reserved, asked again with backoff
    LIVE = "LIVE"                   # resting at the venue
    DELAYED = "DELAYED"             # accepted, matching delayed by the venue
    MATCHED = "MATCHED"             # executed (in part, for FAK: filled_size says how much)
    UNMATCHED = "UNMATCHED"         # a delayed order the venue then did not match
    KILLED = "KILLED"               # FAK with nothing to match
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"           # the venue refused it for good
    FAILED = "FAILED"               # the venue has neither the order nor a trade for it past the order's horizon
    ABANDONED = "ABANDONED"         # never sent (a gate refused it, or a restart found it undecided)
    PAPER_FILLED = "PAPER_FILLED"
    PAPER_KILLED = "PAPER_KILLED"

    @property
    def unresolved(self) -> bool:
        """Still reserved against the caps and asked about again: it may yet execute."""
        return self in UNRESOLVED

    @property
    def failed(self) -> bool:
        """An outcome the circuit breaker counts as an error."""
        return self in (OrderStatus.REJECTED, OrderStatus.FAILED, OrderStatus.UNKNOWN)


UNRESOLVED = frozenset({OrderStatus.SIGNED, OrderStatus.POSTING, OrderStatus.UNKNOWN, OrderStatus.LIVE,
                        OrderStatus.DELAYED})
# Resolved, and nothing of it executed (a CANCELED or MATCHED order's filled size says what did).
NOT_EXECUTED = frozenset({OrderStatus.ABANDONED, OrderStatus.REJECTED, OrderStatus.FAILED, OrderStatus.UNMATCHED,
                          OrderStatus.KILLED, OrderStatus.PAPER_KILLED})


class Feed(str, Enum):  # noqa: UP042 -- str() and format() of a member give its qualified name; StrEnum would change that
    """Where a source fill was seen first."""
    RTDS_TRADES = "rtds.trades"
    RTDS_MATCHED = "rtds.orders_matched"
    DATA_API = "data_api"
    CHAIN_LOGS = "chain.logs"
    MEMPOOL = "chain.mempool"
    REPLAY = "replay"


class BadInput(str, Enum):  # noqa: UP042 -- str() and format() of a member give its qualified name; StrEnum would change that
    """Why a peer's message was refused at the edge (counted as `feed.refused.<value>`)."""
    MALFORMED = "malformed"                 # not the documented shape, or a field of the wrong type or range
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"                   # including NaN and Infinity, which JSON does not have
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    FUTURE_TIMESTAMP = "future_timestamp"   # later than any real clock could say (e.g. microseconds read as seconds)
    OLD_TIMESTAMP = "old_timestamp"         # older than anything the copier could still act on or deduplicate


def fmt_num(x: float) -> str:
    """Canonical text of a wire number for identity keys: 2.70 and 2.7 are the same fill."""
    return f"{float(x):.8f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class SourceFill:
    """One fill of the source wallet, normalised from any feed."""
    tx_hash: str            # lowercase 0x…
    asset: str              # CLOB token id (decimal string) or position id
    condition_id: str       # lowercase 0x…
    outcome: str            # "Up", "Down", "Yes", …
    outcome_index: int      # 999 = unlabeled (RTDS sentinel)
    side: Side              # from the source wallet's perspective
    price: float
    size: float
    match_ts: float         # source match (block/RTDS payload) time, epoch s; whole seconds on RTDS
    recv_ns: int            # our receive time, epoch ns
    feed: str               # Feed value
    wallet: str = ""        # lowercase proxy wallet
    event_slug: str = ""
    slug: str = ""
    occurrence: int = 0     # ordinal among fills with the same content_key (set by dedupe)
    confirmed: bool = True  # False for mempool fills not yet seen in a block
    fee: float = 0.0        # pUSD the source paid (on-chain feeds only; not part of the identity)
    picked_ns: int = 0      # when the pipeline took it off the ingest queue (a backlog shows as picked - recv)

    @property
    def content_key(self) -> str:
        return f"{self.tx_hash}:{self.asset}:{self.side.value}:{fmt_num(self.price)}:{fmt_num(self.size)}"

    @property
    def dedupe_key(self) -> str:
        return f"{self.content_key}:{self.occurrence}"

    @property
    def notional(self) -> float:
        return self.price * self.size


@dataclass(frozen=True, slots=True)
class MarketMeta:
    """Everything needed to size, price and sign an order on one market, known before the trade arrives."""
    condition_id: str
    token_ids: tuple[str, ...]      # index = outcome index
    outcomes: tuple[str, ...]
    tick_size: float
    min_size: float                 # shares
    neg_risk: bool
    end_ts: float                   # market end, epoch s
    start_ts: float = 0.0           # window start (eventStartTime), epoch s
    exchange_version: int = 2       # 2 = CTF Exchange V2 (Gamma "v1"), 3 = ExchangeV3 (Gamma "v2")
    slug: str = ""
    event_slug: str = ""
    fee_rate: float = 0.0
    fee_exponent: float = 1.0
    accepting_orders: bool = True

    def outcome_of(self, asset: str) -> str | None:
        try:
            return self.outcomes[self.token_ids.index(asset)]
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class BookTop:
    """Best levels of one token's book; levels sorted best first."""
    asset: str
    bids: tuple[tuple[float, float], ...]   # (price, size), highest price first
    asks: tuple[tuple[float, float], ...]   # (price, size), lowest price first
    ts: float = 0.0                         # the venue's timestamp
    received_at: float = 0.0                # when we last heard of this book (epoch s): its age is judged from it


@dataclass(frozen=True, slots=True)
class Batch:
    """Source fills on one (market, outcome) released together by the coalescer."""
    condition_id: str
    outcome: str
    asset: str
    fills: tuple[SourceFill, ...]
    kind: str                       # "leading" | "trailing" | "single"
    released_at: float              # epoch s (virtual in replay)

    @property
    def net_size(self) -> float:
        """Signed shares: + for net BUY, - for net SELL."""
        return sum(f.side.sign * f.size for f in self.fills)

    @property
    def vwap(self) -> float:
        total = sum(f.size for f in self.fills)
        return sum(f.price * f.size for f in self.fills) / total if total else 0.0


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A decided order, not yet signed. intent_id is deterministic from the batch's fills."""
    intent_id: str
    condition_id: str
    asset: str
    outcome: str
    side: Side
    size: float                     # shares, rounded to the venue's size precision
    price_cap: float                # the order's limit: the book's price for the size, inside the budget, on a tick
    notional: float                 # size * price_cap + the worst taker fee (the reservation), pUSD
    source_price: float             # VWAP of the source fills, for slippage
    fill_keys: tuple[str, ...]
    kind: str                       # batch kind
    decided_at: float
    opening: bool                   # True when it increases our exposure
    capped_by: str = ""             # which cap shrank it, if any
    source_ts: float = 0.0          # the oldest source fill's match time: the signal's age is judged from it
    market_end_ts: float = 0.0      # the market's end: its window for the per-window cap, and the expiry gate
    fee_rate: float = 0.0           # the market's taker fee schedule (notional already includes the worst fee)
    fee_exponent: float = 1.0
    book: BookTop | None = None     # the book it was priced on (None: priced at the budget's edge)
    parent_id: str = ""             # for a remainder order: the intent whose unfilled part it is


@dataclass(frozen=True, slots=True)
class Skip:
    """A recorded refusal: the batch produced no order, and why."""
    intent_id: str
    condition_id: str
    asset: str
    outcome: str
    side: Side
    reason: str                     # a short machine-readable code, e.g. "near_expiry_cutoff"
    detail: str
    fill_keys: tuple[str, ...]
    kind: str
    decided_at: float
    size: float = 0.0               # what the order would have been (no_liquidity_within_budget: still intended)
    notional: float = 0.0
    source_price: float = 0.0
    book: BookTop | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A reducing batch that must wait: what it would sell is still being bought by orders in flight."""
    intent_id: str
    asset: str
    detail: str


Decision = OrderIntent | Skip | Hold


@dataclass(frozen=True, slots=True)
class Funds:
    """The account's pUSD at the venue (GET /balance-allowance, COLLATERAL), in dollars."""
    balance_usd: float
    allowances_usd: tuple[tuple[str, float], ...]   # (exchange address, allowance); empty if the venue lists none


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What the venue (or the paper book) did with one order."""
    intent_id: str
    order_hash: str
    status: OrderStatus
    filled_size: float = 0.0
    avg_price: float = 0.0
    error: str = ""
    submit_ns: int = 0
    ack_ns: int = 0
    attempts: int = 1
    trade_ids: tuple[str, ...] = field(default_factory=tuple)


# ---- the CLOB market websocket, typed (schemas.parse_market_message) --------------------------------------------
@dataclass(frozen=True, slots=True)
class LevelChange:
    """One `price_change` entry: the new size of one price level (0 removes it)."""
    asset: str
    side: Side                      # BUY = a bid level, SELL = an ask level
    price: float
    size: float


@dataclass(frozen=True, slots=True)
class PriceChange:
    market: str
    changes: tuple[LevelChange, ...]
    ts: float


@dataclass(frozen=True, slots=True)
class TickSizeChange:
    asset: str
    market: str
    old_tick: float
    new_tick: float
    ts: float


@dataclass(frozen=True, slots=True)
class BestBidAsk:
    asset: str
    market: str
    best_bid: float
    best_ask: float
    ts: float


@dataclass(frozen=True, slots=True)
class LastTradePrice:
    asset: str
    market: str
    side: Side                      # the taker's
    price: float
    size: float
    ts: float
    tx_hash: str = ""


@dataclass(frozen=True, slots=True)
class MarketResolved:
    market: str
    assets: tuple[str, ...]
    winning_asset: str
    ts: float


MarketEvent = BookTop | PriceChange | TickSizeChange | BestBidAsk | LastTradePrice | MarketResolved


@dataclass(frozen=True, slots=True)
class Refused:
    """A part of a message that was skipped while the rest was used (a bad row in a page, a bad book in a dump)."""
    reason: str                     # a BadInput value
    detail: str


@dataclass(frozen=True, slots=True)
class MarketMessage:
    events: tuple[MarketEvent, ...]
    refused: tuple[Refused, ...] = ()


# ---- REST answers, typed ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TradesPage:
    """One Data API /v2/trades page: the rows that parsed, the ones refused, and where the next page starts."""
    fills: tuple[SourceFill, ...]
    refused: tuple[Refused, ...]
    has_more: bool
    next_cursor: str


@dataclass(frozen=True, slots=True)
class GammaAnswer:
    """The markets of a Gamma document (event, market, or a list of either), and the ones refused."""
    markets: tuple[MarketMeta, ...]
    refused: tuple[Refused, ...]


@dataclass(frozen=True, slots=True)
class PostOrderAnswer:
    """A POST /order answer. accepted: success with a known status; otherwise `error` says why."""
    accepted: bool
    status: str                     # LIVE | MATCHED | DELAYED | UNMATCHED when accepted, else ""
    order_id: str
    filled_size: float              # shares, from makingAmount/takingAmount (6-decimal units)
    avg_price: float                # pUSD per share; 0 when nothing filled
    trade_ids: tuple[str, ...]
    tx_hashes: tuple[str, ...]
    error: str


@dataclass(frozen=True, slots=True)
class TradesOfOrder:
    """What one of our orders executed in a page of GET /data/trades, and the next page's cursor."""
    shares: float
    avg_price: float
    next_cursor: str


@dataclass(frozen=True, slots=True)
class OrderLookup:
    """GET /data/order/{hash}: the venue's record of one order."""
    order_id: str
    status: str                     # upper case, without the ORDER_STATUS_ prefix
    matched_size: float             # shares
    price: float
    original_size: float


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """One row of the Data API positions endpoint: what the venue's index says a wallet holds."""
    asset: str
    condition_id: str
    size: float                     # shares
    avg_price: float
    cur_price: float                # the index's mark: 1 or 0 once it has seen the resolution
    redeemable: bool
    outcome: str
    outcome_index: int


@dataclass(frozen=True, slots=True)
class PositionsAnswer:
    positions: tuple[VenuePosition, ...]
    refused: tuple[Refused, ...]
