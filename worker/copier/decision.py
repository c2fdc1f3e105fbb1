"""Decision: (exposure, batch, market, now, config) -> OrderIntent | Skip | Hold. Pure: no I/O, no clock reads.

Sizing turns the source's net size into ours and prices it; the checks in risk.py refuse the batch or shrink the
order (capped modes). Every refusal is a Skip with a machine-readable reason, never an exception. A reducing batch
whose shares are still being bought by our own orders in flight is a Hold: decided again once they settle.
"""
from __future__ import annotations

import hashlib
import math

from copier.config import Config
from copier.exposure import ExposureBook
from copier.fees import worst_fee_per_share
from copier.risk import EPS, cap_rooms, signal_refusal, size_refusal
from copier.types import Batch, Hold, MarketMeta, OrderIntent, Side, Skip

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


def price_cap(side: Side, source_price: float, tick: float, slippage_bps: int) -> float | None:
    """Worst price we accept: through the source's price by at most the slippage budget, aligned to the tick inward,
    inside the venue's range [tick, 1 - tick]. None when no tick price lies within the budget (a tick coarser than
    the budget near 0 or 1): the batch is refused, never priced beyond the budget."""
    lowest, highest = tick, round(1 - tick, 6)
    if side is Side.BUY:
        cap = min(round_to_tick(source_price * (1 + slippage_bps / 10_000), tick, up=False), highest)
        return cap if cap >= lowest - EPS else None
    cap = max(round_to_tick(source_price * (1 - slippage_bps / 10_000), tick, up=True), lowest)
    return cap if cap <= highest + EPS else None


def refuse(batch: Batch, refusal: tuple[str, str], now: float, size: float = 0.0, notional: float = 0.0) -> Skip:
    """The batch's recorded refusal: a reason code and a line saying why."""
    keys = tuple(sorted(f.dedupe_key for f in batch.fills))
    reason, detail = refusal
    return Skip(intent_id=intent_id_for(keys), condition_id=batch.condition_id, asset=batch.asset,
                outcome=batch.outcome, side=Side.BUY if batch.net_size > 0 else Side.SELL, reason=reason,
                detail=detail, fill_keys=keys, kind=batch.kind, decided_at=now, size=size, notional=notional)


def decide(exposure: ExposureBook, batch: Batch, market: MarketMeta | None, now: float, cfg: Config,
           halted: bool = False) -> OrderIntent | Skip | Hold:
    keys = tuple(sorted(f.dedupe_key for f in batch.fills))
    iid = intent_id_for(keys)
    net = batch.net_size
    side = Side.BUY if net > 0 else Side.SELL
    opening = side is Side.BUY

    def skip(refusal: tuple[str, str], size: float = 0.0, notional: float = 0.0) -> Skip:
        return refuse(batch, refusal, now, size, notional)

    if abs(net) < EPS:
        return skip(("netted_out", f"{len(batch.fills)} fills net to zero"))
    refusal = signal_refusal(batch, market, now, cfg, halted, opening)
    if refusal:
        return skip(refusal)
    assert market is not None          # signal_refusal refuses an unknown market

    source_price = _side_vwap(batch, side)
    budget = cfg.execution.max_slippage_bps
    cap = price_cap(side, source_price, market.tick_size, budget)
    if cap is None:
        return skip(("no_price_within_budget", f"no {market.tick_size:g} tick within execution.max_slippage_bps "
                                               f"{budget} of the source price {source_price:g}"))
    # Every cap counts cost: shares x price cap + the largest taker fee a fill inside the cap can pay.
    fee = worst_fee_per_share(cap, market.fee_rate, market.fee_exponent) if opening else 0.0
    unit = cap + fee
    s = cfg.sizing
    want = s.fixed_notional_usd if s.mode == "fixed" else abs(net) * s.size_multiplier * unit
    if s.mode == "proportional" and want > s.max_notional_per_order_usd + EPS:
        # Plain proportional copies the source's size or nothing: a cap that would shrink it refuses it.
        return skip(("max_notional_per_order", f"{want:.2f} > sizing.max_notional_per_order_usd "
                                               f"{s.max_notional_per_order_usd:g}"), notional=want)
    cost, capped_by = want, ""
    for name, room in cap_rooms(exposure, market, now, cfg, opening):
        if cost > room + EPS:
            cost, capped_by = max(0.0, room), name
    size = floor_size(cost / unit)
    if not opening:
        held = exposure.position(batch.asset)
        if size > held + EPS and exposure.buying(batch.asset):
            return Hold(iid, batch.asset, f"SELL of {size:g} waits for in-flight BUYs (holding {held:g})")
        if held < EPS:
            return skip(("no_position", "SELL is reduce-only and we hold none of this outcome"))
        if size > held:
            size, capped_by = floor_size(held), "position"
    notional = size * unit
    refusal = size_refusal(size, notional, capped_by, market, cfg)
    if refusal:
        return skip(refusal, size=size, notional=notional)
    return OrderIntent(intent_id=iid, condition_id=market.condition_id, asset=batch.asset, outcome=batch.outcome,
                       side=side, size=size, price_cap=cap, notional=round(notional, 6),
                       source_price=source_price, fill_keys=keys, kind=batch.kind, decided_at=now,
                       opening=opening, capped_by=capped_by, source_ts=min(f.match_ts for f in batch.fills),
                       market_end_ts=market.end_ts, fee_rate=market.fee_rate, fee_exponent=market.fee_exponent)


def _side_vwap(batch: Batch, side: Side) -> float:
    """Price of the fills on the net side: the price level the source actually paid in that direction."""
    same = [f for f in batch.fills if f.side is side] or list(batch.fills)
    total = sum(f.size for f in same)
    return sum(f.price * f.size for f in same) / total
