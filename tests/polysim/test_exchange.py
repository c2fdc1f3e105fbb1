"""The matching engine on its own: no server, explicit times, every consequence read from the hub."""
import random

import pytest

from polysim import scenario
from polysim.events import MARKET_STATE, MATCH, ORDER, TICK_SIZE, Hub
from polysim.exchange import ERR_BALANCE, ERR_FAK, ERR_FOK, ERR_NOT_READY, ERR_POST_ONLY_CROSS, Exchange, Order, Reject
from polysim.truth import GroundTruth

T0 = 1_800_000_000.0 + 10          # 10 s into a window (window starts are multiples of 900 s at speed 1)


@pytest.fixture()
def venue():
    hub = Hub()
    seen = {t: [] for t in (MATCH, ORDER, TICK_SIZE, MARKET_STATE)}
    for t, box in seen.items():
        hub.subscribe(t, (lambda m, box=box: box.append((m.slug, m.state))) if t == MARKET_STATE else box.append)
    ex = Exchange(hub, scenario.from_dict({"markets": {"assets": ["btc"]}, "clob": {"balance": 100}}),
                  rng=random.Random(1), truth=GroundTruth(None, lambda: T0))
    ex.tick(T0)
    return ex, seen


def order(ex, wallet, outcome, side, price, size, kind="GTC", api=False, **kw):
    m = ex.market_for("btc", T0)
    token = m.token_ids[m.outcomes.index(outcome)]
    ex.wallet(wallet, api=api)
    return Order(f"0x{random.getrandbits(256):064x}", f"owner-{wallet}", wallet, m, token, side, price, size, kind, T0,
                 api=api, **kw)


def test_a_buy_of_down_fills_against_a_resting_buy_of_up_as_a_mint(venue):
    ex, seen = venue
    ex.execute(order(ex, "0xa", "Up", "BUY", 0.60, 100), T0)
    match = ex.execute(order(ex, "0xb", "Down", "BUY", 0.45, 10, "FAK"), T0)
    (maker,) = match.makers
    assert (maker.wallet, maker.outcome, maker.side, maker.price, maker.size) == ("0xa", "Up", "BUY", 0.60, 10)
    t = match.taker
    assert (t.outcome, t.side, t.price, t.size) == ("Down", "BUY", 0.4, 10)      # price improvement: 1 - 0.60
    book = ex.books[match.market.condition_id]
    assert book.levels(0, "BUY") == [(600_000, 90)] and book.levels(1, "SELL") == [(400_000, 90)]
    assert seen[MATCH] == [match]


def test_price_time_priority_best_price_first_then_oldest(venue):
    ex, _ = venue
    first, second = order(ex, "0xa", "Up", "SELL", 0.50, 10), order(ex, "0xb", "Up", "SELL", 0.50, 10)
    better = order(ex, "0xc", "Down", "BUY", 0.51, 10)                               # an Up ask at 0.49
    for o in (first, second, better):
        ex.execute(o, T0)
    match = ex.execute(order(ex, "0xd", "Up", "BUY", 0.50, 15, "FAK"), T0)
    assert [(f.wallet, f.price, f.size) for f in match.makers] == [("0xc", 0.51, 10), ("0xa", 0.50, 5)]
    assert second.matched == 0 and first.remaining == 5
    assert match.taker.price == round((10 * 0.49 + 5 * 0.50) / 15, 6)


def test_fok_fak_and_gtc_semantics(venue):
    ex, _ = venue
    ex.execute(order(ex, "0xa", "Up", "SELL", 0.50, 10), T0)
    fok = order(ex, "0xb", "Up", "BUY", 0.50, 11, "FOK")
    with pytest.raises(Reject, match="FOK orders are fully filled or killed") as e:
        ex.execute(fok, T0)
    assert e.value.message == ERR_FOK and fok.matched == 0
    fak = order(ex, "0xb", "Up", "BUY", 0.50, 6, "FAK")
    assert ex.execute(fak, T0).taker.size == 6 and fak.status == "MATCHED"
    gtc = order(ex, "0xb", "Up", "BUY", 0.50, 9)
    ex.execute(gtc, T0)
    assert gtc.matched == 4 and gtc.status == "LIVE" and gtc.remaining == 5        # the rest rests
    with pytest.raises(Reject) as e:
        ex.execute(order(ex, "0xb", "Up", "BUY", 0.40, 5, "FAK"), T0)
    assert e.value.message == ERR_FAK


def test_post_only_refuses_an_order_that_would_cross(venue):
    ex, _ = venue
    ex.execute(order(ex, "0xa", "Up", "SELL", 0.50, 10), T0)
    with pytest.raises(Reject) as e:
        ex.validate(order(ex, "0xb", "Up", "BUY", 0.50, 10, post_only=True), T0)
    assert e.value.message == ERR_POST_ONLY_CROSS
    ex.validate(order(ex, "0xb", "Up", "BUY", 0.49, 10, post_only=True), T0)     # rests: fine


def test_resting_buys_lock_pusd_and_cancels_release_it(venue):
    ex, seen = venue
    first = order(ex, "0xapi", "Up", "BUY", 0.50, 100, api=True)                   # $50 of a $100 balance
    ex.validate(first, T0)
    ex.execute(first, T0)
    assert ex.wallets["0xapi"].locked == 50
    second = order(ex, "0xapi", "Up", "BUY", 0.50, 120, api=True)
    with pytest.raises(Reject) as e:
        ex.validate(second, T0)
    assert e.value.message == ERR_BALANCE
    assert ex.cancel(first, T0) and ex.wallets["0xapi"].locked == 0
    ex.validate(second, T0)
    assert [u.kind for u in seen[ORDER]] == ["PLACEMENT", "CANCELLATION"]


def test_takers_pay_the_crypto_fee_on_top_and_makers_pay_none(venue):
    ex, _ = venue
    ex.execute(order(ex, "0xa", "Up", "SELL", 0.50, 100), T0)
    taker = order(ex, "0xapi", "Up", "BUY", 0.50, 100, "FAK", api=True)
    ex.wallets["0xapi"].balance = 60.0
    match = ex.execute(taker, T0)
    assert match.taker.fee == 1.75                                                   # 100 x 0.07 x 0.5 x 0.5
    assert ex.wallets["0xapi"].balance == pytest.approx(60 - 50 - 1.75)
    assert ex.wallets["0xapi"].held(taker.token_id) == 100 and match.makers[0].fee == 0
    ex.revert(match)
    assert ex.wallets["0xapi"].balance == pytest.approx(60) and ex.wallets["0xapi"].held(taker.token_id) == 0


def test_the_exact_tick_and_min_size_texts(venue):
    ex, _ = venue
    off_tick = order(ex, "0xapi", "Up", "BUY", 0.505, 10, api=True)
    with pytest.raises(Reject) as e:
        ex.validate(off_tick, T0)
    assert e.value.message == \
        f"order {off_tick.order_hash} is invalid. Price (0.505) breaks minimum tick size rule: 0.01"
    small = order(ex, "0xapi", "Up", "BUY", 0.30, 1.08, api=True)
    with pytest.raises(Reject) as e:
        ex.validate(small, T0)
    assert e.value.message == f"order {small.order_hash} is invalid. Size (1.08) lower than the minimum: 5"


def test_a_price_implied_by_rounded_market_order_amounts_passes_the_tick_check_and_rests_on_the_grid(venue):
    ex, _ = venue
    implied = order(ex, "0xapi", "Up", "BUY", round(5.0 / 8.7719, 6), 8.7719, "GTC", api=True)   # $5 at 0.57
    assert implied.price == 0.570002
    ex.validate(implied, T0)
    ex.execute(implied, T0)
    assert implied.price == 0.57 and ex.books[implied.market.condition_id].levels(0, "BUY")[0] == (570_000, 8.7719)
    with pytest.raises(Reject, match="breaks minimum tick size rule"):
        ex.validate(order(ex, "0xapi", "Up", "BUY", 0.571, 10, api=True), T0)


def test_the_tick_refines_to_a_thousandth_once_the_price_leaves_the_middle(venue):
    ex, seen = venue
    ex.execute(order(ex, "0xa", "Up", "BUY", 0.97, 10), T0)
    m = ex.market_for("btc", T0)
    assert m.tick_size == 0.001 and [(t[1], t[2], t[3]) for t in seen[TICK_SIZE]] == [
        (m.token_ids[0], 0.01, 0.001), (m.token_ids[1], 0.01, 0.001)]
    ex.validate(order(ex, "0xapi", "Up", "BUY", 0.975, 10, api=True), T0)           # 0.975 is on the new grid


def test_a_window_closes_cancels_resting_orders_then_resolves_and_pays_nobody_until_a_redemption(venue):
    ex, seen = venue
    m = ex.market_for("btc", T0)
    resting = order(ex, "0xapi", "Up", "BUY", 0.40, 10, api=True)
    ex.execute(resting, T0)
    ex.execute(order(ex, "0xa", "Up", "SELL", 0.50, 20), T0)
    ex.execute(order(ex, "0xapi", "Up", "BUY", 0.50, 20, "FAK", api=True), T0)
    with pytest.raises(Reject) as e:
        ex.validate(order(ex, "0xapi", "Up", "BUY", 0.5, 10, api=True), m.window_end)
    assert e.value.message == ERR_NOT_READY
    ex.tick(m.window_end)
    assert m.state == "closed" and resting.status == "CANCELED" and ex.wallets["0xapi"].locked == 0
    before = ex.wallets["0xapi"].balance
    ex.tick(m.window_end + 0.1 * 900)
    assert m.state == "resolved" and [s for slug, s in seen[MARKET_STATE] if slug == m.slug] == [
        "trading", "closed", "resolved"]
    # Resolution pays nobody (the real venue needs an on-chain redeem); the redemption pays 1 per winning token.
    assert ex.wallets["0xapi"].balance == before and ex.wallets["0xapi"].held(m.token_ids[0]) == 20
    assert m.winner == (0 if m.end_price >= m.start_price else 1)
    done = ex.redeem("0xapi", m)
    assert done.burned == [20, 0] and done.payout == (20 if m.winner == 0 else 0)
    assert ex.wallets["0xapi"].balance == pytest.approx(before + done.payout) and ex.wallets["0xapi"].held(
        m.token_ids[0]) == 0
    assert ex.redeem("0xapi", m).payout == 0                        # a second redemption finds nothing


def test_a_gtd_order_expires_a_minute_before_its_expiration(venue):
    ex, seen = venue
    too_soon = order(ex, "0xapi", "Up", "BUY", 0.40, 10, "GTD", api=True, expiration=T0 + 30)
    with pytest.raises(Reject, match="invalid expiration"):
        ex.validate(too_soon, T0)
    gtd = order(ex, "0xapi", "Up", "BUY", 0.40, 10, "GTD", api=True, expiration=T0 + 200)
    ex.execute(gtd, T0)
    ex.tick(T0 + 139)
    assert gtd.status == "LIVE"
    ex.tick(T0 + 141)
    assert gtd.status == "CANCELED" and [u.kind for u in seen[ORDER]] == ["PLACEMENT", "CANCELLATION"]
