"""The venue's taker fee (Fee Structure V2): rate x (p(1-p))^exponent per share, paid in pUSD on top of a BUY and out
of a SELL's proceeds; makers pay nothing. Our orders are marketable, so every fill of ours pays it."""
from __future__ import annotations


def taker_fee_per_share(price: float, rate: float, exponent: float) -> float:
    if rate <= 0:
        return 0.0
    p = min(max(price, 0.0), 1.0)
    fee: float = rate * (p * (1.0 - p)) ** exponent      # a float: the base is never negative
    return fee


def worst_fee_per_share(cap: float, rate: float, exponent: float) -> float:
    """The largest fee per share a fill at or inside a BUY cap can cost (p(1-p) peaks at 0.5)."""
    return taker_fee_per_share(min(cap, 0.5), rate, exponent)
