"""The positions fold: cost basis with fees, realised PnL on SELLs and at resolution, per market and per UTC day."""
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from copier.positions import Ledger, Redemption, Resolution, Trade, apply, book_mark, fold, own_events, own_trade
from copier.store import Store
from copier.types import BookTop, Side

A, B = "0x" + "aa" * 32, "0x" + "bb" * 32
UP, DOWN, UP_B = "11", "22", "33"
DAY = 1_800_000_000 - 1_800_000_000 % 86400


def buy(size, price, fee=0.0, asset=UP, cid=A, at=DAY + 10.0):
    return Trade(cid, asset, "Up", Side.BUY, size, price, fee, at)


def sell(size, price, fee=0.0, asset=UP, cid=A, at=DAY + 20.0):
    return Trade(cid, asset, "Up", Side.SELL, size, price, fee, at)


def test_positions_buy_cost_includes_fees_and_sell_realises_against_the_average_cost():
    ledger = fold([buy(10, 0.40, fee=0.10), buy(10, 0.60, fee=0.10), sell(5, 0.70, fee=0.05)])
    p = ledger.positions[UP]
    assert math.isclose(p.size, 15.0) and math.isclose(p.cost, 10.2 * 15 / 20)
    # proceeds 3.5 - 0.05 fee, basis 5 x 0.51
    assert math.isclose(ledger.realized_total(), 3.45 - 2.55)
    assert math.isclose(ledger.fees, 0.25)


def test_positions_resolution_realises_size_times_payout_minus_cost_redeemed_or_not():
    ledger = fold([buy(10, 0.40), buy(4, 0.55, asset=DOWN), Resolution(A, UP, DAY + 900.0)])
    up, down = ledger.positions[UP], ledger.positions[DOWN]
    assert up.redeemable and up.size == 10 and up.cost == 0 and up.payout == 1.0
    assert not down.redeemable and down.payout == 0.0
    assert math.isclose(ledger.realized_by_market()[A], 10 * 1.0 - 4.0 - 2.2)
    # learned again from Gamma: the first word stands, nothing realised twice
    again = apply(ledger, Resolution(A, DOWN, DAY + 950.0))
    assert again == ledger


def test_positions_a_confirmed_redemption_burns_the_markets_tokens_and_leaves_pnl_alone():
    resolved = fold([buy(10, 0.40), buy(4, 0.55, asset=DOWN), buy(3, 0.5, asset=UP_B, cid=B),
                     Resolution(A, UP, DAY + 900.0)])
    redeemed = apply(resolved, Redemption(A, DAY + 960.0))
    assert [p.size for p in (redeemed.positions[UP], redeemed.positions[DOWN])] == [0.0, 0.0]
    assert not redeemed.positions[UP].redeemable and redeemed.positions[UP_B].size == 3
    assert redeemed.realized == resolved.realized and redeemed.winners == resolved.winners
    # a redemption recorded before the ledger learned the winner changes nothing: the tokens stay counted
    assert apply(fold([buy(3, 0.5, asset=UP_B, cid=B)]), Redemption(B, DAY + 960.0)).positions[UP_B].size == 3


def test_store_redeemed_markets_are_the_confirmed_redeem_calls_only(tmp_path):
    store = Store.open(str(tmp_path / "s.sqlite"))
    calls = [{"kind": "approve", "condition_id": ""}, {"kind": "redeem", "condition_id": A},
             {"kind": "redeem", "condition_id": B}]
    rows = [dict(action_id=f"a{n}", via="eoa", calls=json.dumps(c), nonce=n, payload="0x", status=status,
                 created_ns=n, updated_ns=int((DAY + n) * 1e9))
            for n, (c, status) in enumerate([(calls, "CONFIRMED"), ([{"kind": "redeem", "condition_id": "c"}], "SENT"),
                                             ([{"kind": "merge", "condition_id": "m"}], "CONFIRMED"),
                                             ([{"kind": "redeem", "condition_id": "f"}], "FAILED")])]
    store.record_chain_actions(rows)
    got = store.redeemed_markets()
    assert [(cid, at) for _, cid, at in got] == [(A, DAY + 0.0), (B, DAY + 0.0)]
    assert store.redeemed_markets(after_id=got[-1][0]) == []
    events = own_events([], [], [(cid, at) for _, cid, at in got])
    assert events == [Redemption(A, DAY + 0.0), Redemption(B, DAY + 0.0)]


def test_positions_realised_pnl_is_booked_on_the_utc_day_of_the_event():
    ledger = fold([buy(10, 0.5, at=DAY + 86000), Resolution(A, UP, DAY + 86400 + 5)])
    assert ledger.realized_by_day() == {DAY + 86400: 5.0}


def test_positions_a_fill_settled_after_the_resolution_is_realised_at_once():
    ledger = fold([Resolution(A, UP, DAY + 900.0), buy(10, 0.9, at=DAY + 901.0)])
    assert math.isclose(ledger.realized_total(), 1.0) and ledger.positions[UP].cost == 0


def test_positions_unrealised_is_size_times_mark_minus_cost_and_none_without_a_mark():
    p = fold([buy(10, 0.4, fee=0.2)]).positions[UP]
    assert math.isclose(p.unrealized(0.5), 5.0 - 4.2)
    assert p.unrealized(None) == 0.0 and p.mark(None) is None


def test_book_mark_is_the_mid_or_the_one_side_there_is():
    assert book_mark(BookTop("x", ((0.48, 5),), ((0.52, 5),))) == 0.5
    assert book_mark(BookTop("x", (), ((0.52, 5),))) == 0.52
    assert book_mark(BookTop("x", (), ())) is None and book_mark(None) is None


def test_own_trade_fee_is_the_taker_fee_at_the_average_price():
    t = own_trade(A, UP, "Up", Side.BUY, 10.0, 0.5, 0.25, 1.0, DAY)
    assert math.isclose(t.fee, 10 * 0.25 * 0.25) and math.isclose(t.cash, -(5.0 + 0.625))


trade = st.builds(lambda side, size, price, fee_rate, asset, t: (side, size, price, fee_rate, asset, t),
                  st.sampled_from([Side.BUY, Side.SELL]), st.floats(0.01, 500), st.floats(0.01, 0.99),
                  st.sampled_from([0.0, 0.072]), st.sampled_from([UP, DOWN, UP_B]), st.floats(0, 3 * 86400))


@settings(max_examples=300, deadline=None)
@given(trades=st.lists(trade, max_size=30), winners=st.tuples(st.sampled_from([UP, DOWN]), st.just(UP_B)))
def test_positions_once_every_market_resolved_realised_pnl_is_the_cash_moved_plus_the_tokens_payout(trades, winners):
    """Conservation: realised PnL = every trade's cash + what the tokens still held pay (1 per winning token).
    SELLs beyond what is held are clipped, as the ledger never holds below zero."""
    held: dict[str, float] = {}
    events: list = []
    cash = 0.0
    for side, size, price, rate, asset, t in sorted(trades, key=lambda x: x[5]):
        cid = B if asset == UP_B else A
        if side is Side.SELL:
            size = min(size, held.get(asset, 0.0))
            if size <= 0:
                continue
        ev = own_trade(cid, asset, "x", side, size, price, rate, 1.0, DAY + t)
        held[asset] = held.get(asset, 0.0) + side.sign * size
        cash += ev.cash
        events.append(ev)
    end = DAY + 4 * 86400
    events += [Resolution(A, winners[0], end), Resolution(B, winners[1], end)]
    ledger = fold(events, Ledger())
    payout = sum(size for asset, size in held.items() if asset in winners)
    assert math.isclose(ledger.realized_total(), cash + payout, abs_tol=1e-6)
    assert all(p.size >= 0 and p.cost == 0 for p in ledger.positions.values())
