"""The positions fold: cost basis with fees, realised PnL on SELLs and at resolution, per market and per UTC day."""
import json
import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from copier.exposure import DAY_S, bucket
from copier.positions import (
    DUST,
    Ledger,
    Position,
    Redemption,
    Resolution,
    Trade,
    apply,
    book_mark,
    fold,
    fold_realizations,
    own_events,
    own_trade,
)
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


# ---- the one-pass fold against a straightforward reference ----------------------------------------------------
# The reference is the fold as first written: every event builds a new ledger from copies of the old one's maps.
# `fold` and `apply` now share a private accumulator that changes one set of maps in place (a week of history at
# once was most of `copier report`); they must give the same ledger, bit for bit and in the same map order.
def _ref_realize(ledger, condition_id, at, amount):
    key = (condition_id, bucket(at, DAY_S))
    realized = dict(ledger.realized)
    realized[key] = realized.get(key, 0.0) + amount
    return realized


def _ref_trade(ledger, t):
    p = ledger.positions.get(t.asset)
    if p is None:
        winner = ledger.winners.get(t.condition_id)
        p = Position(t.condition_id, t.asset, t.outcome, payout=None if winner is None else float(winner == t.asset))
    realized = ledger.realized
    if t.side is Side.BUY:
        paid = -t.cash
        p = replace(p, size=p.size + t.size, cost=p.cost + paid, bought=p.bought + paid)
        if p.payout is not None:
            realized = _ref_realize(ledger, t.condition_id, t.at, t.size * p.payout - paid)
            p = replace(p, cost=0.0)
    else:
        sold = min(t.size, p.size)
        basis = p.payout * sold if p.payout is not None else (p.avg_cost * sold if p.size > DUST else 0.0)
        realized = _ref_realize(ledger, t.condition_id, t.at, t.cash - basis)
        size = p.size - sold
        p = replace(p, size=size if size > DUST else 0.0,
                    cost=(p.cost - p.avg_cost * sold) if size > DUST and p.payout is None else 0.0)
    positions = dict(ledger.positions)
    positions[t.asset] = p
    return replace(ledger, positions=positions, realized=realized, fees=ledger.fees + t.fee)


def _ref_resolve(ledger, r):
    if r.condition_id in ledger.winners:
        return ledger
    winners = dict(ledger.winners)
    winners[r.condition_id] = r.winning_asset
    positions = dict(ledger.positions)
    realized = ledger.realized
    for asset, p in ledger.positions.items():
        if p.condition_id != r.condition_id:
            continue
        payout = 1.0 if asset == r.winning_asset else 0.0
        realized = _ref_realize(replace(ledger, realized=realized), r.condition_id, r.at, p.size * payout - p.cost)
        positions[asset] = replace(p, cost=0.0, payout=payout)
    return replace(ledger, positions=positions, realized=realized, winners=winners)


def _ref_redeem(ledger, r):
    if r.condition_id not in ledger.winners:
        return ledger
    return replace(ledger, positions={asset: replace(p, size=0.0) if p.condition_id == r.condition_id else p
                                      for asset, p in ledger.positions.items()})


def _ref_apply(ledger, event):
    if isinstance(event, Resolution):
        return _ref_resolve(ledger, event)
    if isinstance(event, Redemption):
        return _ref_redeem(ledger, event)
    return _ref_trade(ledger, event)


MARKETS = {A: (UP, DOWN), B: (UP_B, "44"), "0x" + "cc" * 32: ("55", "66")}
_market = st.sampled_from(sorted(MARKETS))
_at = st.floats(DAY - 86400, DAY + 3 * 86400, allow_nan=False)
_trade_event = st.builds(
    lambda cid, i, side, size, price, fee, at: Trade(cid, MARKETS[cid][i], "x", side, size, price, fee, at),
    _market, st.integers(0, 1), st.sampled_from([Side.BUY, Side.SELL]),
    st.one_of(st.floats(1e-7, 500, allow_nan=False), st.just(1e-6), st.just(0.0)),
    st.floats(0.0, 1.0, allow_nan=False), st.floats(0.0, 2.0, allow_nan=False), _at)
_resolution = st.builds(lambda cid, i, at: Resolution(cid, MARKETS[cid][i], at), _market, st.integers(0, 1), _at)
_redemption = st.builds(Redemption, _market, _at)
_history = st.lists(st.one_of(_trade_event, _trade_event, _trade_event, _resolution, _redemption), max_size=60)


def _same(a: Ledger, b: Ledger) -> None:
    assert a == b
    assert list(a.positions) == list(b.positions) and list(a.realized) == list(b.realized)
    assert list(a.winners) == list(b.winners) and a.fees == b.fees


def _maps(ledger: Ledger) -> tuple:
    return dict(ledger.positions), dict(ledger.realized), dict(ledger.winners), ledger.fees


@settings(max_examples=400, deadline=None)
@given(events=_history, split=st.integers(0, 60), in_time_order=st.booleans())
def test_positions_fold_and_apply_give_the_reference_ledger_bit_for_bit(events, split, in_time_order):
    if in_time_order:
        events = sorted(events, key=lambda e: e.at)
    reference = stepped = Ledger()
    for event in events:
        before, kept = stepped, _maps(stepped)
        reference, stepped = _ref_apply(reference, event), apply(stepped, event)
        _same(stepped, reference)
        assert _maps(before) == kept                                    # apply left its argument as it was
    _same(fold(events), reference)
    _same(fold(events[split:], fold(events[:split])), reference)       # from a ledger, as the runtime's refresh
    ledger, realizations = fold_realizations(events)
    _same(ledger, reference)
    by_day: dict[int, float] = {}
    for at, amount in realizations:
        by_day[bucket(at, DAY_S)] = by_day.get(bucket(at, DAY_S), 0.0) + amount
    assert by_day.keys() == reference.realized_by_day().keys()
    assert all(math.isclose(by_day[d], v, rel_tol=1e-9, abs_tol=1e-9) for d, v in reference.realized_by_day().items())
