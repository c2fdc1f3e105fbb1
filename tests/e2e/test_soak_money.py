"""The soak's redemption and money verdict is able to fail: a winner never redeemed, a second redemption transaction,
a transaction the store does not know, pUSD off by a cent, gas the store does not account for. Synthetic ground
truth in the simulator's format and a real store."""
import json

import pytest

from copier.store import Store
from polylab.soak import judge_money, money_verdict, pnl_against_venue

ME = "0x" + "aa" * 20
A, B = "0x" + "01" * 32, "0x" + "02" * 32


def _events(second_redemption=False, redeem_b=True):
    ev = [{"kind": "fund", "wallet": ME, "pusd": 100.0, "pol_wei": str(10**18)},
          {"kind": "fill", "wallet": ME, "trade_id": "t1", "condition_id": A, "outcome": "Up", "side": "BUY",
           "size": 10.0, "fee": 0.1, "cash": -5.1},
          {"kind": "fill", "wallet": ME, "trade_id": "t2", "condition_id": B, "outcome": "Down", "side": "BUY",
           "size": 4.0, "fee": 0.05, "cash": -2.05},
          {"kind": "fill", "wallet": ME, "trade_id": "t3", "condition_id": B, "outcome": "Down", "side": "BUY",
           "size": 9.0, "fee": 0.05, "cash": -4.55},
          {"kind": "trade", "trade_id": "t3", "status": "FAILED"},
          {"kind": "market", "condition_id": A, "state": "resolved", "winner": "Up"},
          {"kind": "market", "condition_id": B, "state": "resolved", "winner": "Down"},
          {"kind": "chain_tx", "sender": ME, "tx_hash": "0xa", "block_hash": "h1", "gas_paid_wei": "1000"},
          {"kind": "redemption", "wallet": ME, "condition_id": A, "payout_units": 10_000_000, "tx_hash": "0xa",
           "block_hash": "h1"}]
    if redeem_b:
        ev += [{"kind": "chain_tx", "sender": ME, "tx_hash": "0xb", "block_hash": "h2", "gas_paid_wei": "2000"},
               {"kind": "redemption", "wallet": ME, "condition_id": B, "payout_units": 4_000_000, "tx_hash": "0xb",
                "block_hash": "h2"}]
    if second_redemption:
        ev += [{"kind": "chain_tx", "sender": ME, "tx_hash": "0xc", "block_hash": "h3", "gas_paid_wei": "3000"},
               {"kind": "redemption", "wallet": ME, "condition_id": A, "payout_units": 0, "tx_hash": "0xc",
                "block_hash": "h3"}]
    return ev


def _store(tmp_path, hashes=(("0xa", A, 10_000_000, 1000), ("0xb", B, 4_000_000, 2000))):
    path = tmp_path / "copier.sqlite"
    store = Store.open(str(path))
    store.record_chain_actions([dict(action_id=h, via="eoa", calls=json.dumps([{"kind": "redeem", "condition_id": c,
                                                                                "amount_units": 0,
                                                                                "payout_units": p}]),
                                     nonce=i, payload="0x", tx_hash=h, status="CONFIRMED", gas_used=gas, gas_price=1,
                                     created_ns=0, updated_ns=0) for i, (h, c, p, gas) in enumerate(hashes)])
    store.close()
    return path


def _final(pusd_units=100_000_000 - 5_100_000 - 2_050_000 + 14_000_000, pol=10**18 - 3000):
    return {"pusd_units": pusd_units, "pol_wei": pol, "redeemable": [], "unresolved": []}


@pytest.fixture()
def clean(tmp_path):
    return money_verdict(_events(), _store(tmp_path), ME, _final())


def test_money_verdict_clean_run_passes_but_for_the_resolution_count(clean):
    assert clean["pusd_diff_units"] == 0 and clean["pol_diff_wei"] == 0 and clean["store_gas_diff_wei"] == 0
    assert clean["winning_positions"] == 2 and clean["redeemed"] == 2
    assert clean["realised_pnl"] == 7.0 and clean["fees"] == 0.15
    assert list(judge_money(clean)) == ["too_few_resolutions"]                # 2 markets, not 20


@pytest.mark.parametrize("case,problem", [
    ("unredeemed", "redemption_not_redeemed"), ("twice", "redemption_redeemed_twice"),
    ("cent", "pusd_accounting"), ("gas", "gas_accounting"), ("left", "redemption_left_redeemable"),
])
def test_money_verdict_fails_what_it_must(tmp_path, case, problem):
    events, final, store = _events(), _final(), None
    if case == "unredeemed":
        events = _events(redeem_b=False)
        final = _final(pusd_units=_final()["pusd_units"] - 4_000_000, pol=10**18 - 1000)
        store = _store(tmp_path, (("0xa", A, 10_000_000, 1000),))
    elif case == "twice":
        events = _events(second_redemption=True)
        final = _final(pol=10**18 - 6000)
        store = _store(tmp_path, (("0xa", A, 10_000_000, 1000), ("0xb", B, 4_000_000, 2000),
                                  ("0xc", A, 0, 3000)))
    elif case == "cent":
        final = _final(pusd_units=_final()["pusd_units"] - 10_000)
    elif case == "gas":
        final = _final(pol=10**18 - 3001)
    elif case == "left":
        final = {**_final(), "redeemable": ["123"]}
    money = money_verdict(events, store or _store(tmp_path), ME, final)
    assert problem in judge_money(money)


def test_money_verdict_names_a_transaction_the_store_never_signed(tmp_path):
    money = money_verdict(_events(), _store(tmp_path, (("0xa", A, 10_000_000, 1000),)), ME, _final())
    assert money["unknown_transactions"] == ["0xb"] and "redemption_unknown_transactions" in judge_money(money)


def _report(a_pnl, b_pnl, b_resolved=True):
    return {"pnl": {"markets": [{"condition_id": A, "resolved": True, "realized_usd": a_pnl},
                                {"condition_id": B, "resolved": b_resolved, "realized_usd": b_pnl}]}}


def test_pnl_against_venue_agrees_with_the_venues_books(clean):
    # A: 10 winning tokens bought for 5.1 with the fee; B: 4 for 2.05 (the FAILED trade moved nothing)
    assert clean["venue_pnl_by_market"] == {A: pytest.approx(4.9), B: pytest.approx(1.95)}
    pnl = pnl_against_venue(_report(4.9, 1.95), clean)
    assert pnl["markets"] == 2 and pnl["max_market_diff_usd"] < 1e-9
    assert list(judge_money(clean, pnl)) == ["too_few_resolutions"]


@pytest.mark.parametrize("report, problem", [
    (_report(4.9, 1.96), "pnl_report_vs_venue"),                   # a cent off on one market
    (_report(4.9, 0.0, b_resolved=False), "pnl_resolution_unknown_to_report"),
])
def test_pnl_against_venue_fails_what_it_must(clean, report, problem):
    assert problem in judge_money(clean, pnl_against_venue(report, clean))
