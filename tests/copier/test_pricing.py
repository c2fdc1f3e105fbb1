"""Book-aware pricing: the order's limit fills its size on the book, never beyond the budget around the source's
price; no liquidity inside the budget is a refusal, not a FAK that the venue kills."""
from dataclasses import replace

from helpers import T0, UP, fill, market
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.clock import FakeClock
from copier.config import Config, ExecutionConfig
from copier.decision import book_price, decide, price_cap, remainder
from copier.executor import PaperExecutor
from copier.exposure import ExposureBook
from copier.metrics import NullMetrics
from copier.pipeline import Pipeline
from copier.store import Store
from copier.types import Batch, BookTop, OrderIntent, Side, Skip

CFG = Config(execution=ExecutionConfig(max_slippage_bps=300))


def _batch(*fills):
    f = fills[0]
    return Batch(f.condition_id, f.outcome, f.asset, tuple(fills), "leading", T0)


def _book(asks=(), bids=(), age=0.1):
    return BookTop(UP, tuple(bids), tuple(asks), received_at=T0 - age)


class Books:
    def __init__(self, book):
        self.book = book

    def top(self, asset):
        return self.book


class Markets:
    def by_asset(self, asset):
        return market()

    def lookup(self, condition_id, asset):
        return market()

    def listed(self, slug):
        return True

    def fresh_tick(self, asset):
        return 0.01


def test_the_sources_level_gone_the_next_level_inside_the_budget_is_where_the_order_fills(tmp_path):
    # The source bought 20 at 0.50; by the time we see it the 0.50 level is gone. 300 bps of 0.50 is 0.515: one tick.
    book = _book(asks=[(0.51, 12.0), (0.52, 500.0)])
    d = decide(ExposureBook(), _batch(fill(1, size=20, price=0.50)), market(), T0, CFG, book=book)
    assert isinstance(d, OrderIntent) and d.price_cap == 0.51 and d.size == 20
    # On paper (the same book), it fills what 0.51 holds; the rest is left for a remainder order.
    store = Store.open(str(tmp_path / "c.sqlite"))
    paper = PaperExecutor(CFG, store=store, clock=FakeClock(T0), metrics=NullMetrics(), books=Books(book))
    store.record_decision([fill(1, size=20, price=0.50)], d, 1)
    r = paper.submit(d, market())
    assert (r.filled_size, r.avg_price) == (12.0, 0.51)
    store.close()


def test_no_level_inside_the_budget_refuses_the_batch_and_no_order_is_sent(tmp_path):
    store = Store.open(str(tmp_path / "c.sqlite"))
    sent = []
    pipeline = Pipeline(CFG, exposure=ExposureBook(), markets=Markets(), books=Books(_book(asks=[(0.53, 500.0)])),
                        store=store, metrics=NullMetrics(), clock=FakeClock(T0),
                        dispatch=lambda *order: sent.append(order))
    f = fill(1, size=20, price=0.50)
    pipeline.add(f, T0)
    assert sent == []
    [row] = list(store.intents_since(0))
    assert (row["decision"], row["reason"], row["size"]) == ("skip", "no_liquidity_within_budget", 20.0)
    assert row["source_price"] == 0.50 and '"a":[[0.53,500.0]]' in row["book"]     # what it saw, for the record
    store.close()


def test_a_book_older_than_the_limit_is_not_trusted_and_the_order_is_priced_at_the_budgets_edge():
    stale = _book(asks=[(0.53, 500.0)], age=CFG.execution.max_book_age_s + 1)
    d = decide(ExposureBook(), _batch(fill(1, size=20, price=0.50)), market(), T0, CFG, book=stale)
    assert isinstance(d, OrderIntent) and d.price_cap == 0.51


def test_a_thin_book_inside_the_budget_below_the_minimum_size_is_refused():
    d = decide(ExposureBook(), _batch(fill(1, size=20, price=0.50)), market(min_size=5), T0, CFG,
               book=_book(asks=[(0.50, 3.0), (0.51, 1.0), (0.60, 900.0)]))
    assert isinstance(d, Skip) and d.reason == "no_liquidity_within_budget" and d.size == 20


def test_a_sell_walks_the_bids_down_to_its_floor():
    cfg = replace(CFG, execution=replace(CFG.execution, max_slippage_bps=500))
    book = ExposureBook()
    buy = decide(book, _batch(fill(1, size=40, price=0.5)), market(), T0 - 60, cfg)
    book.reserve(buy)
    book.settle(buy.intent_id, 40, 0.5)
    d = decide(book, _batch(fill(2, side=Side.SELL, size=30, price=0.50)), market(), T0, cfg,
               book=_book(bids=[(0.49, 10.0), (0.48, 100.0), (0.40, 1000.0)]))
    assert isinstance(d, OrderIntent) and d.side is Side.SELL and d.price_cap == 0.48


@settings(max_examples=300, deadline=None)
@given(held=st.floats(1, 400), source=st.integers(5, 95), bids=st.lists(st.tuples(st.integers(1, 99),
       st.floats(0.01, 800)), min_size=1, max_size=6))
def test_a_sell_priced_up_the_bids_stays_inside_the_per_order_cap(held, source, bids):
    book = ExposureBook()
    buy = decide(book, _batch(fill(1, size=40, price=0.5)), market(), T0 - 60, CFG)
    book.reserve(buy)
    book.settle(buy.intent_id, held, 0.5)
    ordered = tuple(sorted(((p / 100, s) for p, s in bids), reverse=True))
    d = decide(book, _batch(fill(2, side=Side.SELL, size=held, price=source / 100)), market(), T0, CFG,
               book=BookTop(UP, ordered, (), received_at=T0))
    if isinstance(d, OrderIntent):
        assert d.size * d.price_cap <= CFG.sizing.max_notional_per_order_usd + 1e-6
        assert d.notional <= CFG.sizing.max_notional_per_order_usd + 1e-6


@settings(max_examples=300, deadline=None)
@given(side=st.sampled_from([Side.BUY, Side.SELL]), source=st.integers(2, 98), bps=st.integers(0, 1000),
       ticks=st.integers(0, 3), size=st.floats(1, 500),
       levels=st.lists(st.tuples(st.integers(1, 99), st.floats(0.01, 800)), max_size=8))
def test_the_limit_never_passes_the_budget_whatever_the_book(side, source, bps, ticks, size, levels):
    price = source / 100
    cap = price_cap(side, price, 0.01, bps, ticks)
    if cap is None:
        return
    room = max(price * bps / 10_000, ticks * 0.01) + 1e-9
    assert (cap <= price + room) if side is Side.BUY else (cap >= price - room)
    ordered = sorted(((p / 100, s) for p, s in levels), reverse=side is Side.SELL)
    book = BookTop(UP, tuple(ordered) if side is Side.SELL else (), tuple(ordered) if side is Side.BUY else (),
                   received_at=T0)
    limit, offered = book_price(side, size, cap, book, T0, 5.0)
    assert (limit <= cap + 1e-9) if side is Side.BUY else (limit >= cap - 1e-9)
    inside = sum(s for p, s in ordered if (p <= cap + 1e-9 if side is Side.BUY else p >= cap - 1e-9))
    assert offered <= inside + 1e-6


@settings(max_examples=200, deadline=None)
@given(size=st.floats(5, 200), first=st.floats(0, 1), second=st.floats(0, 1))
def test_remainders_never_ask_for_more_than_the_intent_left(size, first, second):
    exposure = ExposureBook()
    parent = decide(exposure, _batch(fill(1, size=round(size, 2), price=0.5)), market(min_size=1), T0, CFG)
    if not isinstance(parent, OrderIntent):
        return
    exposure.reserve(parent)
    filled = round(parent.size * first, 2)
    exposure.settle(parent.intent_id, filled, 0.5)
    asked = filled
    for n, frac in ((1, second), (2, 1.0)):
        child = remainder(parent, asked, n, market(min_size=1), None, exposure, T0 + 0.5, CFG)
        if not isinstance(child, OrderIntent):
            break
        assert child.intent_id == f"{parent.intent_id}-r{n}" and child.parent_id == parent.intent_id
        assert asked + child.size <= parent.size + 1e-9
        exposure.reserve(child)
        got = round(child.size * frac, 2)
        exposure.settle(child.intent_id, got, child.price_cap)
        asked += got
    assert asked <= parent.size + 1e-9


def test_no_remainder_once_the_signal_is_stale():
    parent = decide(ExposureBook(), _batch(fill(1, size=20, price=0.5)), market(), T0, CFG)
    late = T0 + CFG.copy.max_signal_age_s + 1
    assert remainder(parent, 5.0, 1, market(), None, ExposureBook(), late, CFG)[0] == "stale_signal"


def test_paper_orders_never_fill_twice_on_what_they_took():
    store = Store.open(":memory:")
    book = _book(asks=[(0.50, 10.0), (0.51, 10.0)])
    paper = PaperExecutor(CFG, store=store, clock=FakeClock(T0), metrics=NullMetrics(), books=Books(book))
    d = decide(ExposureBook(), _batch(fill(1, size=15, price=0.5)), market(), T0, CFG, book=book)
    store.record_decision([fill(1, size=15, price=0.5)], d, 1)
    assert paper.submit(d, market()).filled_size == 15
    more = replace(d, intent_id="other", size=15)
    assert paper.submit(more, market()).filled_size == 5                  # only what it did not take is left

