"""Decision and risk: (exposure, batch, market, now, config) -> OrderIntent | Skip. Pure: no I/O, no clock reads.

Every refusal is a Skip with a machine-readable reason. Sizing turns the source's net size into ours; the caps
then shrink the order (capped modes) or refuse it, always counting in-flight orders at worst-case notional.
"""
from __future__ import annotations

import hashlib
import math

from copier.config import Config
from copier.exposure import ExposureBook
from copier.types import Batch, MarketMeta, OrderIntent, Side, Skip

EPS = 1e-9
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
    q = 10 ** SIZE_DECIMALS
    return math.floor(size * q + 1e-9) / q


def price_cap(side: Side, source_price: float, tick: float, slippage_bps: int) -> float:
    """Worst price we accept: through the source's price by the slippage budget, aligned to the tick inward."""
    if side is Side.BUY:
        cap = round_to_tick(source_price * (1 + slippage_bps / 10_000), tick, up=False)
        return min(max(cap, tick), round(1 - tick, 6))
    cap = round_to_tick(source_price * (1 - slippage_bps / 10_000), tick, up=True)
    return max(min(cap, round(1 - tick, 6)), tick)


def decide(exposure: ExposureBook, batch: Batch, market: MarketMeta | None, now: float, cfg: Config,
           halted: bool = False) -> OrderIntent | Skip:
    keys = tuple(sorted(f.dedupe_key for f in batch.fills))
    iid = intent_id_for(keys)
    net = batch.net_size
    side = Side.BUY if net > 0 else Side.SELL

    def skip(reason: str, detail: str, size: float = 0.0, notional: float = 0.0) -> Skip:
        return Skip(intent_id=iid, condition_id=batch.condition_id, asset=batch.asset, outcome=batch.outcome,
                    side=side, reason=reason, detail=detail, fill_keys=keys, kind=batch.kind, decided_at=now,
                    size=size, notional=notional)

    if abs(net) < EPS:
        return skip("netted_out", f"{len(batch.fills)} fills net to zero")
    if halted:
        return skip("halted", "trading is halted")
    if market is None:
        return skip("unknown_market", f"no metadata for asset {batch.asset}")
    oldest = min(f.match_ts for f in batch.fills)
    if now - oldest > cfg.copy.max_signal_age_s:
        return skip("stale_signal", f"source fill {now - oldest:.1f}s old > copy.max_signal_age_s "
                                    f"{cfg.copy.max_signal_age_s:g}s")
    if not market.accepting_orders or now >= market.end_ts:
        return skip("market_closed", f"market {market.slug or market.condition_id} is not accepting orders")

    opening = side is Side.BUY
    to_end = market.end_ts - now
    if opening and to_end < cfg.execution.near_expiry_cutoff_seconds:
        return skip("near_expiry_cutoff", f"{to_end:.1f}s before market end < execution.near_expiry_cutoff_seconds "
                                          f"{cfg.execution.near_expiry_cutoff_seconds:g}s")

    source_price = _side_vwap(batch, side)
    cap = price_cap(side, source_price, market.tick_size, cfg.execution.max_slippage_bps)
    s = cfg.sizing
    if s.mode == "fixed":
        want_notional = s.fixed_notional_usd
    else:
        want_notional = abs(net) * s.size_multiplier * cap
    capped_by = ""

    if s.mode == "proportional" and want_notional > s.max_notional_per_order_usd + EPS:
        return skip("max_notional_per_order", f"{want_notional:.2f} > sizing.max_notional_per_order_usd "
                                              f"{s.max_notional_per_order_usd:g}", notional=want_notional)
    limits = [("max_notional_per_order", s.max_notional_per_order_usd)]
    if opening:
        limits += [
            ("max_notional_per_market", s.max_notional_per_market_usd - exposure.market_notional(market.condition_id)),
            ("max_total_notional_per_15m_window",
             s.max_total_notional_per_15m_window_usd - exposure.window_notional(now)),
            ("max_daily_notional", cfg.risk.max_daily_notional_usd - exposure.day_notional(now)),
        ]
    notional = want_notional
    for name, room in limits:
        if notional > room + EPS:
            notional, capped_by = max(0.0, room), name
    size = floor_size(notional / cap)
    if not opening:
        held = exposure.position(batch.asset)
        if held < EPS:
            return skip("no_position", "SELL is reduce-only and we hold none of this outcome")
        if size > held:
            size, capped_by = floor_size(held), "position"
    notional = size * cap
    if capped_by and capped_by != "position" and notional < s.min_order_notional_usd:
        return skip(capped_by, f"cap {capped_by} leaves {notional:.2f} < sizing.min_order_notional_usd "
                               f"{s.min_order_notional_usd:g}", size=size, notional=notional)
    if notional < s.min_order_notional_usd - EPS:
        return skip("below_min_notional", f"{notional:.2f} < sizing.min_order_notional_usd "
                                          f"{s.min_order_notional_usd:g}", size=size, notional=notional)
    if size < market.min_size - EPS:
        return skip("below_min_size", f"size {size:g} < market min size {market.min_size:g}",
                    size=size, notional=notional)
    return OrderIntent(intent_id=iid, condition_id=market.condition_id, asset=batch.asset, outcome=batch.outcome,
                       side=side, size=size, price_cap=cap, notional=round(notional, 6),
                       source_price=source_price, fill_keys=keys, kind=batch.kind, decided_at=now,
                       opening=opening, capped_by=capped_by)


def _side_vwap(batch: Batch, side: Side) -> float:
    """Price of the fills on the net side: the price level the source actually paid in that direction."""
    same = [f for f in batch.fills if f.side is side] or list(batch.fills)
    total = sum(f.size for f in same)
    return sum(f.price * f.size for f in same) / total
