from dataclasses import replace

from helpers import CID, T0, fill, market
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.config import Config, CopyConfig, ExecutionConfig, RiskConfig, SizingConfig
from copier.decision import decide, intent_id_for, price_cap
from copier.exposure import ExposureBook
from copier.risk import funding_refusals
from copier.types import Batch, Funds, OrderIntent, Side, Skip


def batch(*fills, kind="leading", at=T0):
    f = fills[0]
    return Batch(f.condition_id, f.outcome, f.asset, tuple(fills), kind, at)


def cfg(**sizing):
    return Config(sizing=SizingConfig(**sizing))


def test_proportional_order_is_tick_aligned_with_slippage_cap():
    d = decide(ExposureBook(), batch(fill(1, size=20, price=0.5)), market(), T0, cfg(max_notional_per_order_usd=25))
    assert isinstance(d, OrderIntent)
    assert d.side is Side.BUY and d.price_cap == 0.5 and d.size == 20.0  # 0.5 * 1.012 = 0.506 -> floor to 0.50
    assert d.notional == 10.0 and d.intent_id == intent_id_for(d.fill_keys)


def test_sell_cap_rounds_up_and_buy_cap_rounds_down():
    assert price_cap(Side.BUY, 0.55, 0.01, 200) == 0.56
    assert price_cap(Side.SELL, 0.55, 0.01, 200) == 0.54
    assert price_cap(Side.BUY, 0.995, 0.01, 500) == 0.99


def test_capped_proportional_clamps_to_the_per_order_cap():
    d = decide(ExposureBook(), batch(fill(1, size=200, price=0.5)), market(), T0, cfg(max_notional_per_order_usd=25))
    assert isinstance(d, OrderIntent) and d.notional <= 25 and d.capped_by == "max_notional_per_order"


def test_proportional_refuses_what_the_per_order_cap_would_shrink():
    d = decide(ExposureBook(), batch(fill(1, size=200, price=0.5)), market(), T0,
               cfg(mode="proportional", max_notional_per_order_usd=25))
    assert isinstance(d, Skip) and d.reason == "max_notional_per_order"


def test_near_expiry_cutoff_skips_opening_but_not_reducing():
    c = Config(execution=ExecutionConfig(near_expiry_cutoff_seconds=25))
    m = market(end_ts=T0 + 10)
    d = decide(ExposureBook(), batch(fill(1)), m, T0, c)
    assert isinstance(d, Skip) and d.reason == "near_expiry_cutoff" and "near_expiry_cutoff_seconds" in d.detail
    book = ExposureBook()
    held = decide(book, batch(fill(2, size=40)), market(), T0 - 100, c)
    book.reserve(held)
    book.settle(held.intent_id, held.size, held.price_cap)
    d = decide(book, batch(fill(3, side=Side.SELL, size=10)), m, T0, c)
    assert isinstance(d, OrderIntent) and d.side is Side.SELL and not d.opening


def test_sell_is_reduce_only():
    d = decide(ExposureBook(), batch(fill(1, side=Side.SELL)), market(), T0, Config())
    assert isinstance(d, Skip) and d.reason == "no_position"


def test_below_min_notional_and_min_size_are_skipped_not_bumped():
    d = decide(ExposureBook(), batch(fill(1, size=1, price=0.5)), market(), T0, cfg(min_order_notional_usd=1))
    assert isinstance(d, Skip) and d.reason == "below_min_notional"
    d = decide(ExposureBook(), batch(fill(1, size=4, price=0.5)), market(min_size=5), T0, cfg(min_order_notional_usd=1))
    assert isinstance(d, Skip) and d.reason == "below_min_size"


def test_stale_unknown_halted_and_netted_batches_are_recorded_refusals():
    c = Config(copy=CopyConfig(max_signal_age_s=30))
    assert decide(ExposureBook(), batch(fill(1, t=T0 - 60)), market(), T0, c).reason == "stale_signal"
    assert decide(ExposureBook(), batch(fill(1)), None, T0, c).reason == "unknown_market"
    assert decide(ExposureBook(), batch(fill(1)), market(), T0, c, halted=True).reason == "halted"
    netted = batch(fill(1), fill(2, side=Side.SELL))
    assert decide(ExposureBook(), netted, market(), T0, c).reason == "netted_out"


def test_in_flight_orders_count_against_the_market_cap():
    c = cfg(max_notional_per_order_usd=25, max_notional_per_market_usd=40)
    book = ExposureBook()
    first = decide(book, batch(fill(1, size=100)), market(), T0, c)
    book.reserve(first)                       # not answered yet
    second = decide(book, batch(fill(2, size=100)), market(), T0 + 1, c)
    assert isinstance(second, OrderIntent) and second.capped_by == "max_notional_per_market"
    assert first.notional + second.notional <= 40 + 1e-9
    book.reserve(second)
    third = decide(book, batch(fill(3, size=100)), market(), T0 + 2, c)
    assert isinstance(third, Skip) and third.reason == "max_notional_per_market"


def test_fixed_mode_spends_the_fixed_notional():
    d = decide(ExposureBook(), batch(fill(1, size=1000, price=0.4)), market(), T0,
               cfg(mode="fixed", fixed_notional_usd=5))
    assert isinstance(d, OrderIntent) and abs(d.notional - 5.0) < 0.01


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.floats(1, 500), st.floats(0.02, 0.98),
                          st.sampled_from([0, 1]), st.floats(0, 2000), st.booleans()), min_size=1, max_size=60))
def test_caps_are_never_exceeded_whatever_the_sequence(events):
    c = Config(sizing=SizingConfig(max_notional_per_order_usd=25, max_notional_per_market_usd=60,
                                   max_total_notional_per_15m_window_usd=100, min_order_notional_usd=1),
               risk=RiskConfig(max_daily_notional_usd=150))
    markets = [market(cid=CID, end_ts=T0 + 5000), market(cid="0x" + "cd" * 32, tokens=("3", "4"), end_ts=T0 + 5000)]
    book = ExposureBook()
    for n, (side, size, price, mi, dt, fills_now) in enumerate(events):
        m = markets[mi]
        f = replace(fill(n, side=side, size=size, price=price, t=T0 + dt, cid=m.condition_id, asset=m.token_ids[0]))
        d = decide(book, batch(f), m, T0 + dt, c)
        if isinstance(d, OrderIntent):
            assert d.notional <= 25 + 1e-6
            book.reserve(d)
            if fills_now:
                book.settle(d.intent_id, d.size, d.price_cap)
        for mm in markets:
            assert book.market_notional(mm.condition_id) <= 60 + 1e-6
        assert book.rolling_notional(T0 + dt) <= 100 + 1e-6
        assert all(book.market_window_notional(mm.end_ts) <= 100 + 1e-6 for mm in markets)
        assert book.day_notional(T0 + dt) <= 150 + 1e-6


def test_funding_that_cannot_pay_one_full_order_is_reported_by_reason():
    cfg = Config(sizing=SizingConfig(max_notional_per_order_usd=25))
    assert funding_refusals(Funds(25.0, (("0xe111", 1e70),)), cfg) == []
    [(reason, detail)] = funding_refusals(Funds(24.99, (("0xe111", 1e70),)), cfg)
    assert reason == "low_balance" and "24.99" in detail and "max_notional_per_order_usd 25" in detail
    refusals = dict(funding_refusals(Funds(100.0, (("0xe111", 1e70), ("0xe222", 0.0))), cfg))
    assert list(refusals) == ["low_allowance"] and "0xe222" in refusals["low_allowance"] \
        and "0xe111" not in refusals["low_allowance"]
