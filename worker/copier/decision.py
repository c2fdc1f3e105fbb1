"""Decision: (exposure, batch, market, book, now, config) -> OrderIntent | Skip | Hold. Pure: no I/O, no clock reads.

Sizing turns the source's net size into ours; the checks in risk.py refuse the batch or shrink the order (capped
modes). Pricing reads the book the copier already follows: the order's limit is the price that fills its size on
the current book, never beyond the budget around the source's price (`execution.max_slippage_bps`, or
`max_slippage_ticks` when larger); when the book cannot fill the minimum within the budget the batch is refused
(`no_liquidity_within_budget`) instead of sending a FAK that would be killed; a book older than
`execution.max_book_age_s` is not trusted and the order is priced at the budget's edge. Every refusal is a Skip with
a machine-readable reason, never an exception. A reducing batch whose shares are still being bought by our own
orders in flight is a Hold: decided again once they settle. `remainder` prices one more order for what a killed or
partly filled FAK left, by the same rules.

Exits (`sizing.exit_rule`): with `fraction` (the default) a net SELL of the source sells the same fraction of our
position as it sold of its own (its shares before the batch, `source_held`, tracked by the pipeline), floored to the
venue's size precision and still subject to the per-order cap and the minimum order; our sizes are capped and the
source's are not, so its share count says nothing about ours. With `size` the SELL is sized from the source's shares
like a BUY and capped by what we hold.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import replace

from copier.config import Config
from copier.exposure import ExposureBook
from copier.fees import worst_fee_per_share
from copier.risk import EPS, cap_rooms, signal_refusal, size_refusal, timing_refusal
from copier.types import Batch, BookTop, Hold, MarketMeta, OrderIntent, Side, Skip

SIZE_DECIMALS = 2


def intent_id_for(fill_keys: tuple[str, ...]) -> str:
    """Deterministic from the batch's fills: the same fills can never become two intents."""
    return hashlib.sha256("|".join(sorted(fill_keys)).encode()).hexdigest()[:24]


def round_to_tick(price: float, tick: float, up: bool) -> float:
    steps = price / tick
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    decimals = max(0, -int(math.floor(math.log10(tick))) + 1)
    return round(steps * tick, decimals)


def floor_size(size: float) -> float:
    q: int = 10 ** SIZE_DECIMALS
    return math.floor(size * q + 1e-9) / q


def price_cap(side: Side, source_price: float, tick: float, slippage_bps: int, slippage_ticks: int = 0) -> float | None:
    """Worst price we accept: through the source's price by at most the budget (the larger of `slippage_bps` and
    `slippage_ticks` ticks), aligned to the tick inward, inside the venue's range [tick, 1 - tick]. None when no tick
    price lies within the budget (a tick coarser than the budget near 0 or 1): refused, never priced beyond it."""
    lowest, highest = tick, round(1 - tick, 6)
    room = max(source_price * slippage_bps / 10_000, slippage_ticks * tick)
    if side is Side.BUY:
        cap = min(round_to_tick(source_price + room, tick, up=False), highest)
        return cap if cap >= lowest - EPS else None
    cap = max(round_to_tick(source_price - room, tick, up=True), lowest)
    return cap if cap <= highest + EPS else None


def book_price(side: Side, size: float, cap: float, book: BookTop | None, now: float,
               max_age_s: float) -> tuple[float, float] | None:
    """(limit, shares on offer inside the cap) from a book fresh enough to trust, or None (none, or too old). The
    limit is the level at which the book fills `size`; when the levels inside the cap hold less, it is the cap (the
    order takes what is there, and the book may refill inside it before the order arrives)."""
    if book is None or now - book.received_at > max_age_s:
        return None
    levels = book.asks if side is Side.BUY else book.bids
    offered = 0.0
    for price, shares in levels:
        if (side is Side.BUY and price > cap + EPS) or (side is Side.SELL and price < cap - EPS):
            break
        offered += shares
        if offered >= size - EPS:
            return price, offered
    return cap, offered


def refuse(batch: Batch, refusal: tuple[str, str], now: float, size: float = 0.0, notional: float = 0.0,
           source_price: float = 0.0, book: BookTop | None = None) -> Skip:
    """The batch's recorded refusal: a reason code and a line saying why (and what it would have been)."""
    keys = tuple(sorted(f.dedupe_key for f in batch.fills))
    reason, detail = refusal
    return Skip(intent_id=intent_id_for(keys), condition_id=batch.condition_id, asset=batch.asset,
                outcome=batch.outcome, side=Side.BUY if batch.net_size > 0 else Side.SELL, reason=reason,
                detail=detail, fill_keys=keys, kind=batch.kind, decided_at=now, size=size, notional=notional,
                source_price=source_price, book=book)


def exit_fraction(source_held: float | None, sold: float) -> float:
    """The fraction of its position the source sold: 1 when it sold at least what we saw it hold (or we saw none)."""
    if source_held is None or source_held <= sold + EPS:
        return 1.0
    return sold / source_held


def decide(exposure: ExposureBook, batch: Batch, market: MarketMeta | None, now: float, cfg: Config,
           halted: bool = False, book: BookTop | None = None,
           source_held: float | None = None) -> OrderIntent | Skip | Hold:
    """source_held: the source's shares of the batch's token before the batch (None: not known)."""
    keys = tuple(sorted(f.dedupe_key for f in batch.fills))
    iid = intent_id_for(keys)
    net = batch.net_size
    side = Side.BUY if net > 0 else Side.SELL
    opening = side is Side.BUY

    def skip(refusal: tuple[str, str], size: float = 0.0, notional: float = 0.0) -> Skip:
        return refuse(batch, refusal, now, size, notional, source_price=_side_vwap(batch, side), book=book)

    if abs(net) < EPS:
        return skip(("netted_out", f"{len(batch.fills)} fills net to zero"))
    refusal = signal_refusal(batch, market, now, cfg, halted, opening)
    if refusal:
        return skip(refusal)
    assert market is not None          # signal_refusal refuses an unknown market

    source_price = _side_vwap(batch, side)
    e = cfg.execution
    cap = price_cap(side, source_price, market.tick_size, e.max_slippage_bps, e.max_slippage_ticks)
    if cap is None:
        return skip(("no_price_within_budget", f"no {market.tick_size:g} tick within execution.max_slippage_bps "
                                               f"{e.max_slippage_bps} of the source price {source_price:g}"))
    # Every cap counts cost: shares x price cap + the largest taker fee a fill inside the cap can pay.
    fee = worst_fee_per_share(cap, market.fee_rate, market.fee_exponent) if opening else 0.0
    # Caps are judged on the highest price the order can carry (a SELL priced on the book may sell above its cap);
    # minimums on the lowest (the cap), so nothing below them is sent.
    unit, least_unit = max(cap + fee, _highest_sell_limit(side, book, now, cfg)), cap + fee
    s = cfg.sizing
    fraction = exit_fraction(source_held, -net) if not opening and s.exit_rule == "fraction" else None
    if fraction is not None:
        held = exposure.position(batch.asset)
        if exposure.buying(batch.asset):
            return Hold(iid, batch.asset, f"SELL of {fraction:.1%} waits for in-flight BUYs (holding {held:g})")
        if held < EPS:
            return skip(("no_position", "SELL is reduce-only and we hold none of this outcome"))
        want = held * fraction * unit
    else:
        want = s.fixed_notional_usd if s.mode == "fixed" else abs(net) * s.size_multiplier * unit
    if s.mode == "proportional" and fraction is None and want > s.max_notional_per_order_usd + EPS:
        # Plain proportional copies the source's size or nothing: a cap that would shrink it refuses it.
        return skip(("max_notional_per_order", f"{want:.2f} > sizing.max_notional_per_order_usd "
                                               f"{s.max_notional_per_order_usd:g}"), notional=want)
    cost, capped_by = want, ""
    for name, room in cap_rooms(exposure, market, now, cfg, opening):
        if cost > room + EPS:
            cost, capped_by = max(0.0, room), name
    size = floor_size(cost / unit)
    if fraction is not None:
        # The same fraction of ours, never more than we hold (floor_size of a product can round up by a hair).
        size = min(size, floor_size(exposure.position(batch.asset)))
    elif not opening:
        held = exposure.position(batch.asset)
        if size > held + EPS and exposure.buying(batch.asset):
            return Hold(iid, batch.asset, f"SELL of {size:g} waits for in-flight BUYs (holding {held:g})")
        if held < EPS:
            return skip(("no_position", "SELL is reduce-only and we hold none of this outcome"))
        if size > held:
            size, capped_by = floor_size(held), "position"
    refusal = size_refusal(size, size * least_unit, capped_by, market, cfg)
    if refusal:
        return skip(refusal, size=size, notional=size * least_unit)
    priced = _priced(side, size, cap, book, market, now, cfg)
    if isinstance(priced, tuple):
        return skip(priced, size=size, notional=size * least_unit)
    return OrderIntent(intent_id=iid, condition_id=market.condition_id, asset=batch.asset, outcome=batch.outcome,
                       side=side, size=size, price_cap=priced, notional=round(size * _unit(side, priced, market), 6),
                       source_price=source_price, fill_keys=keys, kind=batch.kind, decided_at=now,
                       opening=opening, capped_by=capped_by, source_ts=min(f.match_ts for f in batch.fills),
                       market_end_ts=market.end_ts, fee_rate=market.fee_rate, fee_exponent=market.fee_exponent,
                       book=book)


def _highest_sell_limit(side: Side, book: BookTop | None, now: float, cfg: Config) -> float:
    """The highest limit pricing can give a SELL: the best bid of a book fresh enough to price on (0 otherwise, and
    for a BUY). A SELL is sized against it, so its notional (size x limit) stays inside the caps whatever level of
    the book it is priced at."""
    if side is Side.BUY or book is None or not book.bids or now - book.received_at > cfg.execution.max_book_age_s:
        return 0.0
    return book.bids[0][0]


def _unit(side: Side, price: float, market: MarketMeta) -> float:
    """What one share commits: its price, plus for a BUY the largest taker fee a fill at or inside it can pay."""
    return price + (worst_fee_per_share(price, market.fee_rate, market.fee_exponent) if side is Side.BUY else 0.0)


def _priced(side: Side, size: float, cap: float, book: BookTop | None, market: MarketMeta, now: float,
            cfg: Config) -> float | tuple[str, str]:
    """The order's limit (the book's price for the size, or the cap), or a refusal when the book within the
    budget cannot fill the minimum order."""
    quote = book_price(side, size, cap, book, now, cfg.execution.max_book_age_s)
    if quote is None:
        return cap
    limit, offered = quote
    least = max(market.min_size, cfg.sizing.min_order_notional_usd / cap)
    if offered < least - EPS:
        return ("no_liquidity_within_budget",
                f"the book offers {offered:g} shares within the budget (to {cap:g}), less than the minimum {least:g}")
    return limit


def remainder(parent: OrderIntent, filled: float, n: int, market: MarketMeta, book: BookTop | None,
              exposure: ExposureBook, now: float, cfg: Config) -> OrderIntent | tuple[str, str]:
    """The n-th order for what `parent` did not fill (`filled` shares so far, over all its orders): priced on the
    book now, inside the parent's budget around the source's price, while the signal is fresh and the caps allow;
    never more than the parent's size in all. Or why not."""
    refusal = timing_refusal(parent.source_ts, market, now, cfg, parent.opening)
    if refusal:
        return refusal
    e = cfg.execution
    cap = price_cap(parent.side, parent.source_price, market.tick_size, e.max_slippage_bps, e.max_slippage_ticks)
    if cap is None:
        return "no_price_within_budget", "the tick moved past the budget"
    least_unit = _unit(parent.side, cap, market)
    unit = max(least_unit, _highest_sell_limit(parent.side, book, now, cfg))
    size = floor_size(parent.size - filled)
    for _, room in cap_rooms(exposure, market, now, cfg, parent.opening):
        if size * unit > room + EPS:
            size = floor_size(max(0.0, room) / unit)
    if not parent.opening:
        size = min(size, floor_size(exposure.position(parent.asset)))
    refusal = size_refusal(size, size * least_unit, "", market, cfg)
    if refusal:
        return refusal
    priced = _priced(parent.side, size, cap, book, market, now, cfg)
    if isinstance(priced, tuple):
        return priced
    return replace(parent, intent_id=f"{parent.intent_id}-r{n}", size=size, price_cap=priced,
                   notional=round(size * _unit(parent.side, priced, market), 6), kind="remainder", decided_at=now,
                   book=book, parent_id=parent.intent_id, capped_by="")


def _side_vwap(batch: Batch, side: Side) -> float:
    """Price of the fills on the net side: the price level the source actually paid in that direction."""
    same = [f for f in batch.fills if f.side is side] or list(batch.fills)
    total = sum(f.size for f in same)
    return sum(f.price * f.size for f in same) / total
