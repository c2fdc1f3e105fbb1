"""Risk checks: pure functions that return a refusal (reason code, detail) or None, never raise.

`decision.decide` calls them in order; every refusal becomes a recorded Skip. The caps count in-flight orders at
their worst-case cost, taker fee included (see exposure.py), so a burst of decisions cannot overshoot a cap before
the venue answers. `post_refusal` is the last gate before every POST: what was true at the decision may not be true
when the order is about to leave.
"""
from __future__ import annotations

from copier.config import Config
from copier.exposure import ExposureBook
from copier.types import Batch, Funds, MarketMeta, OrderIntent

EPS = 1e-9
Refusal = tuple[str, str]


def signal_refusal(batch: Batch, market: MarketMeta | None, now: float, cfg: Config, halted: bool,
                   opening: bool) -> Refusal | None:
    """Reasons to refuse a batch whatever its size: halt, unknown or closed market, stale signal, near expiry."""
    if halted:
        return "halted", "trading is halted"
    if market is None:
        return "unknown_market", f"no metadata for asset {batch.asset}"
    return timing_refusal(min(f.match_ts for f in batch.fills), market, now, cfg, opening)


def timing_refusal(source_ts: float, market: MarketMeta, now: float, cfg: Config, opening: bool) -> Refusal | None:
    """Stale signal, closed market or near expiry, judged at `now`."""
    age = now - source_ts
    if age > cfg.copy.max_signal_age_s:
        return "stale_signal", f"source fill {age:.1f}s old > copy.max_signal_age_s {cfg.copy.max_signal_age_s:g}s"
    if not market.accepting_orders or now >= market.end_ts:
        return "market_closed", f"market {market.slug or market.condition_id} is not accepting orders"
    to_end = market.end_ts - now
    cutoff = cfg.execution.near_expiry_cutoff_seconds
    if opening and to_end < cutoff:
        # Reducing a position stays allowed: only new exposure is refused this close to resolution.
        return ("near_expiry_cutoff",
                f"{to_end:.1f}s before market end < execution.near_expiry_cutoff_seconds {cutoff:g}s")
    return None


def post_refusal(intent: OrderIntent, market: MarketMeta | None, now: float, cfg: Config, *, halted: bool,
                 stopping: bool, blocked: str | None = None) -> Refusal | None:
    """The last gate, immediately before an order (or a repost) goes on the wire. `market` is the catalog's view now;
    `blocked` is any other reason trading must not go on (an unsynchronised clock)."""
    if stopping:
        return "stopping", "the copier is shutting down"
    if halted:
        return "halted", "trading is halted"
    if blocked:
        return "blocked", blocked
    if market is None:
        return "unknown_market", f"no metadata for asset {intent.asset}"
    return timing_refusal(intent.source_ts, market, now, cfg, intent.opening)


def cap_rooms(exposure: ExposureBook, market: MarketMeta, now: float, cfg: Config,
              opening: bool) -> list[tuple[str, float]]:
    """(cap name, cost still allowed, fees included) for every cap that applies; opening orders face the exposure
    caps. The window cap holds twice: over any 15 minutes of wall time, and over one market window."""
    s = cfg.sizing
    rooms = [("max_notional_per_order", s.max_notional_per_order_usd)]
    if opening:
        window = s.max_total_notional_per_15m_window_usd
        rooms += [
            ("max_notional_per_market", s.max_notional_per_market_usd - exposure.market_notional(market.condition_id)),
            ("max_total_notional_per_15m_window", window - exposure.rolling_notional(now)),
            ("max_total_notional_per_market_window", window - exposure.market_window_notional(market.end_ts)),
            ("max_daily_notional", cfg.risk.max_daily_notional_usd - exposure.day_notional(now)),
        ]
    return rooms


def size_refusal(size: float, notional: float, capped_by: str, market: MarketMeta, cfg: Config) -> Refusal | None:
    """Orders too small to send are dropped, never bumped up to the minimum."""
    floor = cfg.sizing.min_order_notional_usd
    if capped_by and capped_by != "position" and notional < floor:
        return capped_by, f"cap {capped_by} leaves {notional:.2f} < sizing.min_order_notional_usd {floor:g}"
    if notional < floor - EPS:
        return "below_min_notional", f"{notional:.2f} < sizing.min_order_notional_usd {floor:g}"
    if size < market.min_size - EPS:
        return "below_min_size", f"size {size:g} < market min size {market.min_size:g}"
    return None


def funding_refusals(funds: Funds, cfg: Config, redeemable_usd: float = 0.0) -> list[Refusal]:
    """Funding that cannot cover one order of `max_notional_per_order_usd`: the venue rejects such a BUY with
    `not enough balance / allowance`. Reported (alerted), not a halt: smaller orders and SELLs still go. Resolved
    winnings not yet redeemed count: the redeemer turns them into pUSD within a pass."""
    need = cfg.sizing.max_notional_per_order_usd
    out = []
    if funds.balance_usd + redeemable_usd < need:
        more = f" + {redeemable_usd:.2f} redeemable" if redeemable_usd else ""
        out.append(("low_balance",
                    f"pUSD balance {funds.balance_usd:.2f}{more} < sizing.max_notional_per_order_usd {need:g}"))
    short = [addr for addr, usd in funds.allowances_usd if usd < need]
    if short:
        out.append(("low_allowance", f"pUSD allowance below {need:g} for exchange(s) {', '.join(short)}"))
    return out
