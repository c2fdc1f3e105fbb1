"""The exit rule: a source SELL of a fraction of its position sells the same fraction of ours (sizing.exit_rule
fraction, the default), or the source's shares capped by ours (size, the behaviour before)."""
from dataclasses import replace

from helpers import CID, T0, UP, fill, market
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.config import Config, SizingConfig
from copier.decision import decide, exit_fraction, floor_size
from copier.exposure import ExposureBook
from copier.positions import SourceHoldings
from copier.types import Batch, BookTop, Hold, OrderIntent, Side, Skip


def batch(*fills, at=T0):
    f = fills[0]
    return Batch(f.condition_id, f.outcome, f.asset, tuple(fills), "leading", at)


def holding(shares: float, price: float = 0.5) -> ExposureBook:
    """A book holding `shares` of UP, bought and settled."""
    book = ExposureBook()
    buy = OrderIntent(intent_id="held", condition_id=CID, asset=UP, outcome="Up", side=Side.BUY, size=shares,
                      price_cap=price, notional=shares * price, source_price=price, fill_keys=("k",), kind="single",
                      decided_at=T0 - 60, opening=True, market_end_ts=T0 + 900)
    book.reserve(buy)
    book.settle(buy.intent_id, shares, price)
    return book


def test_exit_fraction_source_sells_part_fraction_of_what_it_held():
    assert exit_fraction(100.0, 25.0) == 0.25
    assert exit_fraction(100.0, 100.0) == 1.0
    assert exit_fraction(100.0, 150.0) == 1.0      # more than we saw it hold: all of it
    assert exit_fraction(0.0, 10.0) == 1.0         # held before we tracked it: all of it
    assert exit_fraction(None, 10.0) == 1.0


def test_fraction_rule_source_sells_a_quarter_we_sell_a_quarter_of_ours():
    book = holding(40.0)
    d = decide(book, batch(fill(1, side=Side.SELL, size=250.0)), market(), T0, Config(), source_held=1000.0)
    assert isinstance(d, OrderIntent) and d.side is Side.SELL and d.size == 10.0 and d.capped_by == ""


def test_size_rule_keeps_the_source_shares_capped_by_our_position():
    book = holding(40.0)
    cfg = Config(sizing=SizingConfig(exit_rule="size"))
    d = decide(book, batch(fill(1, side=Side.SELL, size=25.0)), market(), T0, cfg, source_held=1000.0)
    assert isinstance(d, OrderIntent) and d.size == 25.0
    d = decide(book, batch(fill(2, side=Side.SELL, size=250.0)), market(), T0, cfg, source_held=1000.0)
    assert isinstance(d, OrderIntent) and d.size == 40.0 and d.capped_by == "position"


def test_fraction_rule_waits_for_our_buys_in_flight():
    book = holding(40.0)
    buy = decide(book, batch(fill(5, size=10.0)), market(), T0, Config())
    assert isinstance(buy, OrderIntent)
    book.reserve(buy)
    d = decide(book, batch(fill(6, side=Side.SELL, size=5.0)), market(), T0, Config(), source_held=10.0)
    assert isinstance(d, Hold)


def test_fraction_rule_with_nothing_held_is_refused_reduce_only():
    d = decide(ExposureBook(), batch(fill(1, side=Side.SELL, size=5.0)), market(), T0, Config(), source_held=10.0)
    assert isinstance(d, Skip) and d.reason == "no_position"


@settings(max_examples=300, deadline=None)
@given(held=st.floats(0.01, 2000.0).map(floor_size), source_held=st.floats(0.01, 1e6),
       sold_share=st.floats(0.001, 1.5), price=st.sampled_from([0.05, 0.2, 0.5, 0.77, 0.95]),
       per_order=st.sampled_from([5.0, 25.0, 1e4]), min_notional=st.sampled_from([0.0, 1.0]),
       min_size=st.sampled_from([0.0, 5.0]), mode=st.sampled_from(["capped_proportional", "proportional", "fixed"]),
       bids=st.none() | st.lists(st.tuples(st.integers(-5, 8), st.floats(1.0, 500.0)), min_size=1, max_size=6))
def test_fraction_rule_sells_the_source_fraction_after_caps_and_minimums_never_more_than_held(
        held, source_held, sold_share, price, per_order, min_notional, min_size, mode, bids):
    book = holding(held, price)
    sold = source_held * sold_share
    cfg = Config(sizing=SizingConfig(max_notional_per_order_usd=per_order, min_order_notional_usd=min(1.0, per_order),
                                     max_notional_per_market_usd=1e6, max_total_notional_per_15m_window_usd=1e6))
    cfg = replace(cfg, sizing=replace(cfg.sizing, min_order_notional_usd=min_notional, mode=mode))
    m = market(min_size=min_size)
    top = None if bids is None else BookTop(UP, tuple(sorted({(round(min(0.99, max(0.01, price + 0.01 * k)), 2), n)
                                                              for k, n in bids}, reverse=True)), (), received_at=T0)
    d = decide(book, batch(fill(1, side=Side.SELL, size=sold, price=price)), m, T0, cfg, source_held=source_held,
               book=top)
    fraction = min(1.0, sold / source_held)
    wanted = floor_size(held * fraction)
    if isinstance(d, OrderIntent):
        assert d.side is Side.SELL and d.size <= held + 1e-9            # never more than we hold
        assert d.notional <= per_order + 1e-6                           # the per-order cap, at the order's limit
        if d.capped_by == "":
            assert d.size == wanted                                     # the same fraction, to the size precision
            assert abs(d.size / held - fraction) <= 0.01 / held + 1e-9
        else:
            assert d.capped_by == "max_notional_per_order"
            assert d.size < wanted and d.size * d.price_cap <= per_order + 1e-6
    else:
        assert isinstance(d, Skip)
        assert d.reason in ("below_min_notional", "below_min_size", "max_notional_per_order",
                            "no_liquidity_within_budget"), d
        if d.reason == "below_min_size":
            assert d.size < min_size
        elif d.reason == "below_min_notional":
            assert d.notional < min_notional
    # and the book never lets a SELL take more than is left after it
    if isinstance(d, OrderIntent):
        book.reserve(d)
        assert book.position(fill(0).asset) >= -1e-9


@settings(max_examples=100, deadline=None)
@given(shares=st.lists(st.floats(0.05, 0.95), min_size=1, max_size=6))
def test_fraction_rule_over_successive_sells_tracks_what_the_source_has_left(shares):
    """Source sells successive fractions of what it has left; ours left stays in proportion (within the size
    precision per step), and never goes below zero."""
    held, source_left = 1000.0, 5000.0
    book = holding(held)
    ours_left = held
    for n, share in enumerate(shares):
        sold = source_left * share
        d = decide(book, batch(fill(10 + n, side=Side.SELL, size=sold)), market(min_size=0.0),
                   T0, Config(sizing=SizingConfig(max_notional_per_order_usd=1e4, max_notional_per_market_usd=1e4,
                                                  max_total_notional_per_15m_window_usd=1e4, min_order_notional_usd=0)),
                   source_held=source_left)
        source_left -= sold
        if isinstance(d, OrderIntent):
            book.reserve(d)
            book.settle(d.intent_id, d.size, d.price_cap)
            ours_left -= d.size
        assert ours_left >= -1e-9
        assert abs(ours_left / held - source_left / 5000.0) <= 0.01 * (n + 1) / held + 1e-9


def test_source_holdings_follow_fills_after_the_seed_and_ignore_older_ones():
    h = SourceHoldings()
    h.seed({"1111": 100.0, "2222": 0.0}, at=T0)
    h.apply([fill(1, size=10, t=T0 - 5)])                    # matched before the snapshot: already in it
    assert h.held("1111") == 100.0
    h.apply([fill(2, size=10, t=T0 + 1), fill(3, side=Side.SELL, size=30, t=T0 + 2)])
    assert h.held("1111") == 80.0
    h.apply([fill(4, side=Side.SELL, size=500, t=T0 + 3)])
    assert h.held("1111") == 0.0 and h.held("2222") == 0.0


def test_replay_of_a_recorded_store_starts_from_the_source_holdings_the_run_started_from(tmp_path):
    from copier.replay import replay_recorded
    from copier.store import Store
    from copier.types import Skip

    store = Store.open(str(tmp_path / "run.sqlite"))
    store.record_source_seed(T0 - 10, {UP: 100.0})        # the source held 100 when the run started
    buy, sell = fill(1, size=100.0, t=T0), fill(2, side=Side.SELL, size=50.0, t=T0 + 5)
    for f in (buy, sell):
        assert store.record_decision([f], Skip(f"run-{f.side.value}", CID, UP, "Up", f.side, "x", "",
                                               (f.dedupe_key,), "single", f.match_ts), f.recv_ns)
    store.record_sightings([dict(dedupe_key=f.dedupe_key, feed="rtds.trades", stream="rtds-a", recv_ns=f.recv_ns,
                                 match_ts=f.match_ts, first=True) for f in (buy, sell)])
    lines = replay_recorded(store, [market()], Config())
    store.close()
    orders = [x for x in lines if x["action"] == "order"]
    assert [x["side"] for x in orders] == ["BUY", "SELL"]
    # 200 held before the SELL of 50: a quarter (without the seed it would be a half)
    assert orders[1]["size"] == floor_size(orders[0]["size"] * 0.25)
