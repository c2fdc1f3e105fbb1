"""The exposure book over a long run: what it keeps stays bounded by days of markets, and the caps' accounting
stays exact while it forgets."""
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.exposure import DAY_S, ExposureBook, bucket
from copier.types import OrderIntent, Side

START = 1_800_000_000 - 1_800_000_000 % DAY_S


def _intent(n: int, w: int, outcome: int, side: Side, at: float, window_s: int, notional: float = 5.0,
            size: float = 10.0) -> OrderIntent:
    return OrderIntent(intent_id=f"i{n}", condition_id=f"m{w}", asset=f"m{w}-{outcome}", outcome="Up", side=side,
                       size=size, price_cap=0.5, notional=notional if side is Side.BUY else 0.0, source_price=0.5,
                       fill_keys=(), kind="leading", decided_at=at, opening=side is Side.BUY,
                       market_end_ts=START + (w + 1) * window_s)


def _run(book: ExposureBook, window_s: int, windows: int, per_window: int) -> tuple[dict[int, float], int]:
    """Each window a new market with two tokens: BUYs on both, a SELL of part of one, all settled, one BUY left in
    flight for good. Returns (BUY cost decided per day of markets, most orders the book held at once)."""
    n, most = 0, 0
    spent: dict[int, float] = {}
    for w in range(windows):
        for i in range(per_window):
            at = START + w * window_s + i * window_s / (per_window + 1)
            side = Side.SELL if i == per_window - 1 else Side.BUY
            intent = _intent(n, w, i % 2, side, at, window_s)
            book.rolling_notional(at)           # the risk check before every decision
            book.reserve(intent)
            day = bucket(at, 96 * window_s)
            if not (w == 0 and i == 0):         # the first order stays in flight forever
                book.settle(intent.intent_id, 4.0 if side is Side.BUY else 2.0, 0.5)
                spent[day] = spent.get(day, 0.0) + (2.0 if side is Side.BUY else 0.0)
            else:
                spent[day] = spent.get(day, 0.0) + intent.notional
            n += 1
        most = max(most, len(book._orders))
    return spent, most


def test_exposure_book_stays_bounded_over_a_week_of_markets_and_counts_the_day_exactly():
    """A simulated week at 225x (4-second windows) lies within one UTC day, and the daily cap counts a day of
    markets there (not the whole week at once), while the orders, tokens and markets kept span two days of
    markets."""
    window_s, per_window = 4, 5
    book = ExposureBook(window_s)
    spent, most = _run(book, window_s, 7 * 96, per_window)
    assert len(spent) == 7 and len(set(spent.values())) == 2      # day 0 holds the order still in flight
    last = START + 7 * 96 * window_s - 1
    assert book.day_notional(last) == spent[bucket(last, 96 * window_s)] == 96 * 2.0 * (per_window - 1)
    day_of_markets = 96 * per_window
    assert most <= 2 * day_of_markets + 4 * per_window + 1
    assert len(book._position) <= 2 * (2 * 96 + 4) + 1 and len(book._market_cost) <= 2 * 96 + 4 + 1
    assert len(book._market_window) <= 2 * 96 + 4 + 1
    assert book.in_flight() == 1 and book.buying("m0-0")       # an order in flight is never forgotten


def test_exposure_book_forgets_a_market_only_after_two_days_of_markets():
    window_s = 4
    book = ExposureBook(window_s)
    book.reserve(_intent(1, 0, 0, Side.BUY, START, window_s))
    book.settle("i1", 10.0, 0.5)
    book.rolling_notional(START + 2 * 96 * window_s - 1)
    assert book.position("m0-0") == 10.0 and book.market_notional("m0") > 0
    book.rolling_notional(START + 2 * 96 * window_s + 8 * window_s)
    assert "m0-0" not in book._position and "m0" not in book._market_cost


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3 * DAY_S), st.floats(0.5, 20), st.booleans()), min_size=1, max_size=60))
def test_exposure_book_day_notional_is_every_buy_of_the_utc_day(orders):
    """Live windows over three days, orders in any spacing: each UTC day's cost is the sum of its BUYs, for today
    and yesterday, whatever the book forgot meanwhile."""
    book = ExposureBook(900)
    by_day: dict[int, float] = {}
    for n, (offset, notional, fills) in enumerate(sorted(orders)):
        at = START + offset
        book.rolling_notional(at)
        intent = _intent(n, int(offset // 900), 0, Side.BUY, at, 900, notional=notional, size=notional * 2)
        book.reserve(intent)
        cost = notional
        if fills:
            book.settle(intent.intent_id, notional, 0.5)
            cost = notional * 0.5
        by_day[bucket(at, DAY_S)] = by_day.get(bucket(at, DAY_S), 0.0) + cost
        for day in (bucket(at, DAY_S), bucket(at, DAY_S) - DAY_S):
            assert abs(book.day_notional(day) - by_day.get(day, 0.0)) < 1e-9


def test_exposure_book_an_old_order_recorded_out_of_order_is_forgotten_without_breaking_the_window():
    window_s = 4
    book = ExposureBook(window_s)
    now = START + 3 * 96 * window_s
    book.reserve(_intent(1, 3 * 96, 0, Side.BUY, now, window_s))
    book.reserve(_intent(2, 0, 0, Side.BUY, START, window_s))          # restored late, decided days of markets ago
    book.settle("i2", 10.0, 0.5)
    assert book.rolling_notional(now + 1) == 5.0
    assert book.rolling_notional(now + 4 * window_s + 1) == 0.0
