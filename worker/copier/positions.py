"""Positions and PnL from fills: a pure fold, `apply(ledger, event) -> ledger`, shared by the runtime, `copier
positions` and `copier report`.

Events are trades (one settled order of ours: its filled shares at its average price and the taker fee it paid; or
a source fill) and resolutions (a market's winning token). The cost basis of a position includes the fees paid to
open it; a SELL realises its proceeds (after its fee) minus the average cost of the shares it sold; a resolution
realises `size x payout - cost` (payout 1 for the winning token, 0 for the losing one) at the resolution instant,
whether or not the winning tokens were redeemed yet: redemption turns tokens into pUSD at the value already counted,
so it moves cash, not PnL. Realised PnL is kept per market and per UTC day of the event that realised it.

Unrealised PnL is `size x mark - cost` for an open position; the mark is the book's mid (the caller's), and 1 or 0
once the market resolved.

A confirmed redemption (redeem.py's record) is an event too: it burns the resolved market's tokens, so their size
goes to zero, and it leaves PnL alone (realised at the resolution). Merges of full sets (off by default) are not
folded in.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from copier.exposure import DAY_S, bucket
from copier.fees import taker_fee_per_share
from copier.types import BookTop, Side, SourceFill

DUST = 1e-6                 # shares: below the venue's 6-decimal precision


class ResolutionOrigin(StrEnum):
    """Where the copier learned a market's winner."""
    MARKET_WS = "market_ws"         # `market_resolved` on the market channel
    GAMMA = "gamma"                 # Gamma `closed` with `outcomePrices` of 1 and 0
    POSITIONS = "positions"         # the Data API positions endpoint: `redeemable` with curPrice 1


@dataclass(frozen=True, slots=True)
class Trade:
    """Shares that changed hands at an average price, and the fee paid on them (pUSD)."""
    condition_id: str
    asset: str
    outcome: str
    side: Side
    size: float
    price: float
    fee: float
    at: float                       # epoch s

    @property
    def cash(self) -> float:
        """What the trade moved in pUSD: a BUY pays notional + fee, a SELL receives notional - fee."""
        notional = self.size * self.price
        return -(notional + self.fee) if self.side is Side.BUY else notional - self.fee


@dataclass(frozen=True, slots=True)
class Resolution:
    condition_id: str
    winning_asset: str
    at: float                       # epoch s: when it became known
    origin: ResolutionOrigin = ResolutionOrigin.MARKET_WS


@dataclass(frozen=True, slots=True)
class Redemption:
    """A market's tokens redeemed on chain (a confirmed transaction or relayer batch)."""
    condition_id: str
    at: float                       # epoch s: when its confirmation was recorded


Event = Trade | Resolution | Redemption


@dataclass(frozen=True, slots=True)
class Position:
    condition_id: str
    asset: str
    outcome: str
    size: float = 0.0               # shares held (tokens, redeemed or not after resolution)
    cost: float = 0.0               # what the shares held cost, fees included (0 once resolved: realised)
    bought: float = 0.0             # pUSD spent on BUYs in all, fees included (the notional the return is on)
    payout: float | None = None     # 1.0 or 0.0 once the market resolved

    @property
    def resolved(self) -> bool:
        return self.payout is not None

    @property
    def redeemable(self) -> bool:
        """Winning tokens still held (a redemption turns them into pUSD)."""
        return self.payout == 1.0 and self.size > DUST

    @property
    def avg_cost(self) -> float:
        return self.cost / self.size if self.size > DUST else 0.0

    def mark(self, book_mark: float | None) -> float | None:
        """The price the position is valued at: 1 or 0 once resolved, else the book's mark (None: unknown)."""
        return self.payout if self.payout is not None else book_mark

    def unrealized(self, book_mark: float | None) -> float:
        """Open positions only; 0 without a mark (valued at cost) and once resolved (realised)."""
        if self.resolved or book_mark is None:
            return 0.0
        return self.size * book_mark - self.cost


@dataclass(frozen=True)
class Ledger:
    positions: Mapping[str, Position] = field(default_factory=dict)             # asset -> position
    realized: Mapping[tuple[str, int], float] = field(default_factory=dict)     # (condition id, UTC day) -> pUSD
    winners: Mapping[str, str] = field(default_factory=dict)                    # condition id -> winning asset
    fees: float = 0.0                                                           # pUSD paid in taker fees

    def realized_by_market(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (cid, _), amount in self.realized.items():
            out[cid] = out.get(cid, 0.0) + amount
        return out

    def realized_by_day(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for (_, day), amount in self.realized.items():
            out[day] = out.get(day, 0.0) + amount
        return out

    def realized_total(self) -> float:
        return sum(self.realized.values())

    def bought_by_market(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.positions.values():
            out[p.condition_id] = out.get(p.condition_id, 0.0) + p.bought
        return out


def apply(ledger: Ledger, event: Event) -> Ledger:
    """The ledger after one event; `ledger` is left as it was."""
    acc = _Fold(ledger)
    acc.add(event)
    return acc.ledger()


def fold(events: Iterable[Event], ledger: Ledger | None = None) -> Ledger:
    """Events in time order (a resolution learned before a late fill of the same market is applied first: the fill
    is realised at once). The same ledger as `apply` event by event, built in one pass (a week of history at once:
    copying the position map per event was most of `copier report`)."""
    return fold_realizations(events, ledger)[0]


def fold_realizations(events: Iterable[Event], ledger: Ledger | None = None) \
        -> tuple[Ledger, list[tuple[float, float]]]:
    """`fold`, and every amount it realised as (instant of the event, pUSD), in event order: realised PnL over
    time."""
    acc = _Fold(ledger or Ledger())
    acc.realizations = []
    for event in events:
        acc.add(event)
    return acc.ledger(), acc.realizations


class _Fold:
    """The fold's private accumulator: copies of one ledger's maps, changed in place event by event, handed to a
    new Ledger at the end and never touched again. Positions stay immutable: a changed one is a new Position."""

    __slots__ = ("positions", "realized", "winners", "fees", "realizations", "_assets_of")

    def __init__(self, ledger: Ledger) -> None:
        self.positions = dict(ledger.positions)
        self.realized = dict(ledger.realized)
        self.winners = dict(ledger.winners)
        self.fees = ledger.fees
        self.realizations: list[tuple[float, float]] | None = None     # (at, pUSD) of each realisation, if asked
        # condition id -> its assets in the order the positions map holds them: built at the first resolution or
        # redemption (a trade alone never needs it), so that neither scans every position.
        self._assets_of: dict[str, list[str]] | None = None

    def ledger(self) -> Ledger:
        return Ledger(positions=self.positions, realized=self.realized, winners=self.winners, fees=self.fees)

    def add(self, event: Event) -> None:
        if isinstance(event, Resolution):
            self._resolve(event)
        elif isinstance(event, Redemption):
            self._redeem(event)
        else:
            self._trade(event)

    def _market(self, condition_id: str) -> list[str]:
        if self._assets_of is None:
            self._assets_of = {}
            for asset, p in self.positions.items():
                self._assets_of.setdefault(p.condition_id, []).append(asset)
        return self._assets_of.get(condition_id, [])

    def _realize(self, condition_id: str, at: float, amount: float) -> None:
        key = (condition_id, bucket(at, DAY_S))
        self.realized[key] = self.realized.get(key, 0.0) + amount
        if self.realizations is not None:
            self.realizations.append((at, amount))

    def _trade(self, t: Trade) -> None:
        p = self.positions.get(t.asset)
        if p is None:
            winner = self.winners.get(t.condition_id)
            condition_id, outcome, size, cost, bought = t.condition_id, t.outcome, 0.0, 0.0, 0.0
            payout = None if winner is None else float(winner == t.asset)
            if self._assets_of is not None:
                self._assets_of.setdefault(t.condition_id, []).append(t.asset)
        else:
            condition_id, outcome, size, cost, bought, payout = (p.condition_id, p.outcome, p.size, p.cost, p.bought,
                                                                 p.payout)
        if t.side is Side.BUY:
            paid = -t.cash
            size, cost, bought = size + t.size, cost + paid, bought + paid
            if payout is not None:      # a fill settled after the resolution was known: worth its payout already
                self._realize(t.condition_id, t.at, t.size * payout - paid)
                cost = 0.0
        else:
            sold = min(t.size, size)    # never below zero: a SELL of shares the ledger never saw is counted as held
            avg_cost = cost / size if size > DUST else 0.0
            basis = payout * sold if payout is not None else (avg_cost * sold if size > DUST else 0.0)
            self._realize(t.condition_id, t.at, t.cash - basis)
            left = size - sold
            cost = (cost - avg_cost * sold) if left > DUST and payout is None else 0.0
            size = left if left > DUST else 0.0
        self.positions[t.asset] = Position(condition_id, t.asset, outcome, size, cost, bought, payout)
        self.fees += t.fee

    def _resolve(self, r: Resolution) -> None:
        if r.condition_id in self.winners:
            return                  # learned again (websocket, then Gamma): the first is the one
        self.winners[r.condition_id] = r.winning_asset
        for asset in self._market(r.condition_id):
            p = self.positions[asset]
            payout = 1.0 if asset == r.winning_asset else 0.0
            self._realize(r.condition_id, r.at, p.size * payout - p.cost)
            self.positions[asset] = replace(p, cost=0.0, payout=payout)

    def _redeem(self, r: Redemption) -> None:
        """The market's resolved tokens leave the wallet; a market whose winner the ledger has not learned yet
        keeps them (its PnL is realised when it does, and the tokens stay counted until then)."""
        if r.condition_id not in self.winners:
            return
        for asset in self._market(r.condition_id):
            self.positions[asset] = replace(self.positions[asset], size=0.0)


def book_mark(book: BookTop | None) -> float | None:
    """The mid of the best bid and ask; one side alone when the other is empty; None without a book."""
    if book is None:
        return None
    bid = book.bids[0][0] if book.bids else None
    ask = book.asks[0][0] if book.asks else None
    if bid is not None and ask is not None:
        return (bid + ask) / 2
    return bid if bid is not None else ask


def own_trade(condition_id: str, asset: str, outcome: str, side: Side, filled_size: float, avg_price: float,
              fee_rate: float, fee_exponent: float, at: float) -> Trade:
    """One settled order of ours as a trade: the taker fee at its average price (as the exposure book counts it)."""
    fee = filled_size * taker_fee_per_share(avg_price, fee_rate, fee_exponent)
    return Trade(condition_id, asset, outcome, side, filled_size, avg_price, fee, at)


class SourceHoldings:
    """The source's shares per token, for the exit rule: seeded at start (the positions endpoint for its address,
    or else its fills in the store), then moved by every source fill the pipeline decides on. A fill matched before
    the seed's instant is taken as already counted in the seed. Owned by the pipeline greenlet."""

    def __init__(self) -> None:
        self._held: dict[str, float] = {}
        self._seed_at = 0.0

    def seed(self, held: Mapping[str, float], at: float) -> None:
        self._held = {asset: size for asset, size in held.items() if size > DUST}
        self._seed_at = at

    def held(self, asset: str) -> float:
        return self._held.get(asset, 0.0)

    def apply(self, fills: Iterable[SourceFill]) -> None:
        for f in fills:
            if f.match_ts < self._seed_at:
                continue
            size = self._held.get(f.asset, 0.0) + f.side.sign * f.size
            if size > DUST:
                self._held[f.asset] = size
            else:
                self._held.pop(f.asset, None)


def holdings_from_fills(rows: Iterable[Mapping[str, object]]) -> dict[str, float]:
    """Shares per token from fill rows (asset, side, size), never below zero: what a wallet holds of what it was
    seen trading."""
    held: dict[str, float] = {}
    for r in rows:
        sign = 1.0 if r["side"] == Side.BUY.value else -1.0
        size = float(r["size"])  # type: ignore[arg-type]
        held[str(r["asset"])] = max(0.0, held.get(str(r["asset"]), 0.0) + sign * size)
    return held


def own_events(fills: Iterable[Mapping[str, object]], resolutions: Iterable[Mapping[str, object]],
               redemptions: Iterable[tuple[str, float]] = ()) -> list[Event]:
    """Our settled orders (store.own_fills rows), the known winners (store.resolutions rows) and the markets
    redeemed ((condition id, at): store.redeemed_markets), in time order."""
    events: list[Event] = [
        own_trade(str(r["condition_id"]), str(r["asset"]), str(r["outcome"]), Side(r["side"]),
                  float(r["filled_size"]), float(r["avg_price"]), float(r["fee_rate"]),  # type: ignore[arg-type]
                  float(r["fee_exponent"]), float(r["at"]))  # type: ignore[arg-type]
        for r in fills]
    events += [Resolution(str(r["condition_id"]), str(r["winning_asset"]),
                          float(r["resolved_at"]), ResolutionOrigin(r["origin"]))  # type: ignore[arg-type]
               for r in resolutions]
    events += [Redemption(condition_id, at) for condition_id, at in redemptions]
    return sorted(events, key=lambda e: e.at)
