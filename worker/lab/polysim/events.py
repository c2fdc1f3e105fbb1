"""The simulator's internal contract: markets, matches and the hub that fans them out to the feed surfaces.

The exchange core (markets, matching engine, CLOB REST, Gamma, scenario) publishes; the feed surfaces (RTDS,
market/user websockets, Data API, Polygon JSON-RPC) subscribe and apply their own delivery delays.
Nothing here imports the copier.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("polysim.hub")


@dataclass
class SimMarket:
    condition_id: str            # 0x + 64 hex
    question_id: str
    slug: str                    # e.g. btc-updown-15m-1774278900 (window start, unix s)
    event_slug: str
    event_id: str
    market_id: str
    title: str
    asset_symbol: str            # btc | eth | sol | xrp
    window_start: float          # epoch s (simulated clock)
    window_end: float
    created_at: float
    token_ids: list[str]         # [Up, Down]; decimal strings (CTF token ids, or position ids when version == "v2")
    outcomes: list[str] = field(default_factory=lambda: ["Up", "Down"])
    tick_size: float = 0.01
    min_size: float = 5.0
    neg_risk: bool = False
    version: str = "v1"          # Gamma "version": "v1" = CTF / CLOB V2 exchange, "v2" = Protocol V2 / ExchangeV3
    fee_rate: float = 0.07
    fee_exponent: float = 1.0
    state: str = "created"       # created | trading | closed | resolved
    winner: int | None = None    # outcome index once resolved
    base_fee_bps: int = 1000     # legacy CLOB /fee-rate, Gamma makerBaseFee/takerBaseFee
    taker_delay_ms: float = 50.0  # itode: marketable orders wait this long before matching
    seconds_delay: float = 0.0   # sd: marketable orders answer `delayed` and match after this long
    resolved_at: float = 0.0
    start_price: float | None = None     # the oracle's price to beat (TWAP at the window start)
    end_price: float | None = None       # the settlement price (TWAP at the window end)


@dataclass
class WalletFill:
    """One wallet's side of a match, from that wallet's perspective (what RTDS `trades` and the Data API show)."""
    wallet: str                  # lowercase proxy wallet / funder
    role: str                    # "taker" | "maker"
    order_hash: str
    side: str                    # "BUY" | "SELL"
    token_id: str
    outcome: str
    outcome_index: int
    price: float
    size: float                  # shares
    fee: float = 0.0             # pUSD, takers only
    owner: str = ""              # API key of the order's owner, if it came through the CLOB REST


@dataclass
class Match:
    """One settlement transaction: a taker order against one or more maker orders."""
    tx_hash: str
    match_time: float            # epoch s (simulated clock), ms resolution
    market: SimMarket
    taker: WalletFill
    makers: list[WalletFill]
    trade_id: str = ""
    block_number: int = 0        # set by the chain surface when the tx is mined
    will_fail: bool = False      # the settlement tx reverts (trade goes RETRYING -> FAILED, balances restored)
    moves: list = field(default_factory=list)    # exchange.Moved of each accounted wallet, to undo a failure exactly

    def fills(self) -> list[WalletFill]:
        return [self.taker, *self.makers]


@dataclass
class BookUpdate:
    market: SimMarket
    token_id: str
    bids: list[tuple[float, float]]   # best first
    asks: list[tuple[float, float]]   # best first
    changes: list[dict] = field(default_factory=list)   # price_change entries
    ts: float = 0.0


@dataclass
class OrderUpdate:
    """Lifecycle of an order placed through the CLOB REST, for the user websocket."""
    owner: str                   # API key
    order: dict                  # the /data/order/{hash} JSON shape
    kind: str                    # PLACEMENT | UPDATE | CANCELLATION
    ts: float = 0.0


@dataclass
class TradeStatus:
    """Trade status transitions of our own trades: MATCHED -> MINED -> CONFIRMED (or FAILED)."""
    owner: str
    trade: dict                  # the user-channel `trade` JSON shape
    ts: float = 0.0


# Hub topics
MARKET_CREATED = "market.created"     # SimMarket
MARKET_STATE = "market.state"         # SimMarket (trading / closed / resolved)
MATCH = "match"                       # Match
BOOK = "book"                         # BookUpdate
ORDER = "order"                       # OrderUpdate
TRADE = "trade"                       # TradeStatus
TICK_SIZE = "tick_size"               # (SimMarket, token_id, old, new)
WALLET_CREATED = "wallet.created"     # exchange Wallet: a wallet we account for (an API wallet) appears


class Hub:
    """In-process pub/sub on the asyncio loop. Subscribers must not block; they schedule their own sends.

    A subscriber that raises is logged and counted, never allowed to break the publisher (the matching engine)
    or the other subscribers.
    """

    def __init__(self) -> None:
        self._subs: dict[str, list[Callable[[Any], None]]] = {}
        self.errors: dict[str, int] = {}

    def subscribe(self, topic: str, fn: Callable[[Any], None]) -> None:
        self._subs.setdefault(topic, []).append(fn)

    def publish(self, topic: str, msg: Any) -> None:
        for fn in self._subs.get(topic, ()):
            try:
                fn(msg)
            except Exception:  # one broken surface must not stop the venue
                name = f"{topic}:{getattr(fn, '__qualname__', fn)}"
                self.errors[name] = self.errors.get(name, 0) + 1
                if self.errors[name] == 1:
                    log.exception("hub subscriber %s failed (further failures are only counted)", name)

    @staticmethod
    def later(delay_s: float, fn: Callable[[], Any]) -> None:
        """Run fn after delay_s seconds of wall time on the running loop (feed delivery delays)."""
        asyncio.get_running_loop().call_later(max(0.0, delay_s), fn)
