"""The chain's state on its own (no server, an explicit clock): the oracle's TWAP resolution, redemptions and merges
undone exactly, a reorg that orphans a wallet's redemption, and the traps of the wrong contract."""
import json
import random

import pytest
from conftest import (
    ADAPTER,
    CTF,
    NEG_RISK_ADAPTER,
    PUSD,
    approve_data,
    calldata,
    redeem_data,
)
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from polysim import scenario
from polysim.chain import Chain
from polysim.events import Hub
from polysim.exchange import Exchange, Position
from polysim.faults import Faults
from polysim.ledger import Frame, Ledger
from polysim.node import Node
from polysim.oracle import Oracle
from polysim.truth import GroundTruth

T0 = 1_800_000_000.0 + 10
KEY = "0x" + "c7" * 32
ME = Account.from_key(KEY).address.lower()


def _world(tmp_path, now):
    hub = Hub()
    truth = GroundTruth(str(tmp_path / "truth.jsonl"), lambda: now[0])
    ex = Exchange(hub, scenario.from_dict({"markets": {"assets": ["btc"]}}), rng=random.Random(3), truth=truth)
    ex.tick(now[0])
    ledger = Ledger(hub, ex, truth=truth, faults=Faults(), now=lambda: now[0], initial_pol=1.0)
    node = Node(ledger, truth=truth, now=lambda: now[0])
    chain = Chain(hub, block_s=1.0, clock=lambda: now[0], node=node, truth=truth)
    return ex, ledger, node, chain, truth


def _holding(ex, address, up=0.0, down=0.0, cost=(0.0, 0.0)):
    """A wallet with tokens of the current market, as fills would leave it."""
    m = ex.market_for("btc", T0)
    w = ex.wallet(address, api=True)
    for token, size, c in zip(m.token_ids, (up, down), cost, strict=True):
        if size:
            w.positions[token] = Position(size=size, cost=c, bought=size)
    return m, w


def _raw(to, data, nonce, gas=300_000):
    return "0x" + Account.from_key(KEY).sign_transaction(
        {"to": to_checksum_address(to), "data": data, "gas": gas, "nonce": nonce, "chainId": 137, "value": 0,
         "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 30 * 10**9}).raw_transaction.hex()


def test_oracle_twap_is_the_time_weighted_mean_over_the_lookback():
    oracle = Oracle(random.Random(1), ["btc"], window_s=900.0)
    for t, price in ((0.0, 100.0), (30.0, 110.0), (50.0, 90.0)):
        oracle.step(t)
        oracle.spot["btc"] = price
        oracle._history["btc"][-1] = (t, price)
    # [0, 60]: 100 for 30 s, 110 for 20 s, 90 for 10 s.
    assert oracle.twap("btc", 60.0) == pytest.approx((100 * 30 + 110 * 20 + 90 * 10) / 60)
    assert oracle.twap("btc", 40.0) == pytest.approx((100 * 30 + 110 * 10) / 40)     # only 40 s of history yet


def test_ledger_a_market_resolves_from_its_twaps_and_only_the_redemption_pays(tmp_path):
    now = [T0]
    ex, ledger, _, _, _ = _world(tmp_path, now)
    m, w = _holding(ex, ME, up=10, down=4, cost=(6.0, 1.6))
    ex.tick(m.window_end)
    assert m.state == "closed" and m.end_price == pytest.approx(ex.oracle.twap("btc", m.window_end))
    ex.tick(m.window_end + 0.1 * 900)
    assert m.winner == (0 if m.end_price >= m.start_price else 1) and w.held(m.token_ids[0]) == 10
    ledger.operators[ME] = {ADAPTER}
    balance = w.balance
    frame = Frame()
    ledger.call(frame, ME, ADAPTER, bytes.fromhex(redeem_data(m.condition_id)[2:]), 0)
    payout = 10 if m.winner == 0 else 4
    assert w.balance == pytest.approx(balance + payout) and w.held(m.token_ids[0]) == w.held(m.token_ids[1]) == 0
    ((kind, rec),) = frame.records
    assert kind == "redemption" and rec["payout_units"] == payout * 10**6
    frame.rollback()                                                 # undone exactly: positions, cost, balance
    assert w.balance == balance and w.positions[m.token_ids[0]].size == 10 and w.positions[m.token_ids[1]].cost == 1.6


def test_ledger_the_wrong_contract_burns_nothing_and_pays_nothing(tmp_path):
    now = [T0]
    ex, ledger, _, _, _ = _world(tmp_path, now)
    m, w = _holding(ex, ME, up=5)
    ex.resolve_now(m, now[0], winner=0)
    ledger.operators[ME] = {ADAPTER, NEG_RISK_ADAPTER}
    balance = w.balance
    for to, data in ((NEG_RISK_ADAPTER, redeem_data(m.condition_id)),          # neg-risk ids: nobody holds them
                     (CTF, redeem_data(m.condition_id))):                      # the CTF with pUSD as collateral
        frame = Frame()
        ledger.call(frame, ME, to, bytes.fromhex(data[2:]), 0)
        assert w.balance == balance and w.held(m.token_ids[0]) == 5, to
    usdce = calldata("redeemPositions(address,bytes32,bytes32,uint256[])", ["address", "bytes32", "bytes32",
                                                                           "uint256[]"],
                     ["0x2791bca1f2de4661ed88a30c99a7a9449aa84174", b"\x00" * 32,
                      bytes.fromhex(m.condition_id[2:]), [1, 2]])
    with pytest.raises(Exception, match="USDC.e payouts are not simulated"):
        ledger.call(Frame(), ME, CTF, bytes.fromhex(usdce[2:]), 0)
    with pytest.raises(Exception, match="not simulated"):
        ledger.call(Frame(), ME, PUSD, bytes.fromhex("a9059cbb" + "00" * 64), 0)     # transfer: not modelled


@settings(max_examples=60, deadline=None)
@given(up=st.integers(1, 50_000_000), down=st.integers(1, 50_000_000), cost_up=st.integers(0, 40_000_000),
       cost_down=st.integers(0, 40_000_000), merge_share=st.floats(0, 1), winner=st.integers(0, 1))
def test_ledger_merge_then_redeem_pays_one_per_set_and_per_winning_token_and_undoes_exactly(
        up, down, cost_up, cost_down, merge_share, winner, tmp_path_factory):
    now = [T0]
    ex, ledger, _, _, _ = _world(tmp_path_factory.mktemp("h"), now)
    m, w = _holding(ex, ME, up=up / 1e6, down=down / 1e6, cost=(cost_up / 1e6, cost_down / 1e6))
    ledger.operators[ME] = {ADAPTER}
    start = (w.balance, {t: (p.size, p.cost, p.realized) for t, p in w.positions.items()})
    frame = Frame()
    sets = int(min(up, down) * merge_share)
    merge = calldata("mergePositions(address,bytes32,bytes32,uint256[],uint256)",
                     ["address", "bytes32", "bytes32", "uint256[]", "uint256"],
                     [PUSD, b"\x00" * 32, bytes.fromhex(m.condition_id[2:]), [1, 2], sets])
    ledger.call(frame, ME, ADAPTER, bytes.fromhex(merge[2:]), 0)
    ex.resolve_now(m, now[0], winner=winner)
    ledger.call(frame, ME, ADAPTER, bytes.fromhex(redeem_data(m.condition_id)[2:]), 0)
    paid = sets + ((up, down)[winner] - sets)
    assert round(w.balance * 1e6) == round(start[0] * 1e6) + paid
    realized = sum(p.realized for p in w.positions.values())
    assert realized == pytest.approx(paid / 1e6 - (cost_up + cost_down) / 1e6, abs=1e-5)
    assert all(p.size == 0 and p.cost == 0 for p in w.positions.values())
    frame.rollback()
    assert (w.balance, {t: (p.size, p.cost, p.realized) for t, p in w.positions.items()}) == start


def test_ledger_a_reorg_undoes_a_mined_redemption_and_mines_it_again(tmp_path):
    now = [T0]
    ex, ledger, node, chain, truth = _world(tmp_path, now)
    m, w = _holding(ex, ME, up=7)
    ex.resolve_now(m, now[0], winner=0)
    node.send_raw(_raw(CTF, approve_data(ADAPTER), 0, 80_000))
    tx_hash = node.send_raw(_raw(ADAPTER, redeem_data(m.condition_id), 1))
    balance, pol = w.balance, ledger.balance(ME)
    now[0] += 1
    first = chain.produce(now[0])
    assert [tx.tx_hash for tx in first.txs][-1] == tx_hash and w.balance == balance + 7 and ledger.nonce(ME) == 2
    chain.request_reorg(tx_hash)
    now[0] += 1
    replacement = chain.produce(now[0])                    # the redemption's block is orphaned: all undone ...
    assert replacement.number == first.number and not replacement.txs
    assert w.balance == balance and w.held(m.token_ids[0]) == 7 and ledger.balance(ME) == pol
    assert ledger.nonce(ME) == 0 and ledger.operators.get(ME, set()) == set()
    assert chain.call(None, {"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt",
                             "params": [tx_hash]})["result"] is None
    now[0] += 1
    again = chain.produce(now[0])                          # ... and mined again in the next block
    assert tx_hash in [tx.tx_hash for tx in again.txs] and w.balance == balance + 7
    truth.close()
    rows = [json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()]
    (reorg,) = [r for r in rows if r["kind"] == "chain_reorg"]
    redemptions = [r for r in rows if r["kind"] == "redemption"]
    assert reorg["block_hashes"] == [first.hash] and [r["block_hash"] for r in redemptions] == [first.hash,
                                                                                                 again.hash]
    live = [r for r in redemptions if r["block_hash"] not in reorg["block_hashes"]]
    assert [r["payout_units"] for r in live] == [7_000_000]              # counted once by a reader that drops them


def test_ledger_a_paused_adapter_reverts_and_the_view_says_so(tmp_path):
    now = [T0]
    ex, ledger, _, _, _ = _world(tmp_path, now)
    m, w = _holding(ex, ME, up=3)
    ex.resolve_now(m, now[0], winner=0)
    ledger.operators[ME] = {ADAPTER}
    ledger.faults.arm_window("adapter_paused", now[0] + 5, {})
    paused = calldata("paused(address)", ["address"], ["0x2791bca1f2de4661ed88a30c99a7a9449aa84174"])
    assert ledger.call(Frame(), ME, ADAPTER, bytes.fromhex(paused[2:]), 0)[-1] == 1
    with pytest.raises(Exception) as exc:
        ledger.call(Frame(), ME, ADAPTER, bytes.fromhex(redeem_data(m.condition_id)[2:]), 0)
    assert exc.value.data == "0x" + keccak(text="OnlyUnpaused()")[:4].hex()     # the custom error, no string
    assert exc.value.message == "execution reverted" and w.held(m.token_ids[0]) == 3


def test_ledger_a_market_stays_redeemable_while_an_api_wallet_holds_its_tokens(tmp_path):
    now = [T0]
    ex, ledger, _, _, _ = _world(tmp_path, now)
    m, w = _holding(ex, ME, up=2)
    other = ex.market_for("btc", T0, "next")
    ex.wallet(ex.source_wallet).positions[other.token_ids[0]] = Position(size=9, cost=4)   # the source: no effect
    late = m.window_end + 900 * 21
    ex.tick(m.window_end)
    ex.tick(m.window_end + 90)
    ex.tick(late)
    ex.tick(other.window_end + 900 * 21)
    assert m.condition_id in ex.by_condition and other.condition_id not in ex.by_condition
    ledger.operators[ME] = {ADAPTER}
    ledger.call(Frame(), ME, ADAPTER, bytes.fromhex(redeem_data(m.condition_id)[2:]), 0)      # no deadline
    assert w.held(m.token_ids[0]) == 0
    ex.tick(late + 1)
    assert m.condition_id not in ex.by_condition
