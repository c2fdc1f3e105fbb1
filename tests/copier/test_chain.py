"""On-chain decoders (reference ABI round trips) and the canonical fill identity across the four feeds."""
import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from eth_abi import encode
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.chain import (
    MATCH_ORDERS_ARGS,
    ChainFill,
    decode_match_orders,
    decode_order_filled,
    pad_topic,
    to_source_fill,
)
from copier.dedupe import Deduper
from copier.errors import MalformedMessage
from copier.schemas import parse_data_api_trade, parse_rtds_frame
from copier.types import Feed, MarketMeta, Side
from polysim.chain import settle
from polysim.events import Match, SimMarket, WalletFill

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
ABI = {e["name"]: e for e in json.loads((PAYLOADS / "orderfilled_event_abi.json").read_text())}
SOURCE = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
EXCHANGE = "0xe111180000d2663c0091e4f400237545b87b996b"
TX = "0x" + "ab" * 32
TOKEN_UP, TOKEN_DOWN = 1234567890123, 9876543210987
META = MarketMeta(condition_id="0x" + "cd" * 32, token_ids=(str(TOKEN_UP), str(TOKEN_DOWN)), outcomes=("Up", "Down"),
                  tick_size=0.01, min_size=5.0, neg_risk=False, end_ts=2e9, slug="btc-updown-15m-1", event_slug="e")
RECV = 1_795_000_001_000_000_000


def _order_filled_log(maker, taker, side, token, making, taking, fee, tx=TX, address=EXCHANGE, removed=False):
    event = ABI["OrderFilled"]
    data_types = [i["type"] for i in event["inputs"] if not i["indexed"]]
    data = encode(data_types, [side, token, making, taking, fee, b"\0" * 32, b"\0" * 32])
    return {"address": address, "topics": [event["_topic0"], "0x" + "77" * 32, pad_topic(maker), pad_topic(taker)],
            "data": "0x" + data.hex(), "blockNumber": "0x10", "transactionHash": tx, "transactionIndex": "0x0",
            "blockHash": "0x" + "99" * 32, "blockTimestamp": hex(1_795_000_000), "logIndex": "0x2",
            "removed": removed}


def _order(maker, token, making, taking, side, ts=1_795_000_000_500):
    return (1, maker, maker, token, making, taking, side, 0, ts, b"\0" * 32, b"\0" * 32, b"\1" * 65)


def _match_tx(taker, makers, taker_fill, maker_fills, taker_fee=0, to=EXCHANGE):
    args = [bytes.fromhex("cd" * 32), taker, makers, taker_fill, maker_fills, taker_fee, [0] * len(makers)]
    calldata = "0x3c2b4399" + encode(MATCH_ORDERS_ARGS, args).hex()
    return {"hash": TX, "to": to, "from": "0x" + "01" * 20, "input": calldata, "blockNumber": None}


# ---- logs ------------------------------------------------------------------------------------------------------
def test_taker_order_filled_decodes_to_the_source_fill_with_fee_and_block_time():
    log = _order_filled_log(SOURCE, EXCHANGE, 0, TOKEN_UP, 5_412_345, 10_623_456, 183_500)
    cf = decode_order_filled(log, SOURCE)
    assert cf == ChainFill(TX, str(TOKEN_UP), Side.BUY, shares=10_623_456, usdc=5_412_345, fee=183_500,
                           match_ts=1_795_000_000.0)
    f = to_source_fill(cf, META, Feed.CHAIN_LOGS.value, RECV, SOURCE, True)
    assert (f.outcome, f.outcome_index, f.condition_id, f.size, f.fee) == \
        ("Up", 0, META.condition_id, 10.623456, 0.1835)
    assert f.price == 0.509471                                  # 5.412345 / 10.623456 = 0.5094710…


def test_maker_order_filled_is_the_source_own_sell():
    log = _order_filled_log(SOURCE, "0x" + "42" * 20, 1, TOKEN_DOWN, 2_702_700, 702_702, 0)
    f = to_source_fill(decode_order_filled(log, SOURCE), META, Feed.CHAIN_LOGS.value, RECV, SOURCE, True)
    assert (f.side, f.asset, f.size, f.price, f.outcome) == (Side.SELL, str(TOKEN_DOWN), 2.7027, 0.26, "Down")


def test_logs_about_someone_else_or_another_contract_are_not_fills():
    other = _order_filled_log("0x" + "42" * 20, SOURCE, 0, TOKEN_UP, 1, 2, 0)
    assert decode_order_filled(other, SOURCE) is None
    assert decode_order_filled(_order_filled_log(SOURCE, EXCHANGE, 0, TOKEN_UP, 1, 2, 0,
                                                 address="0x" + "55" * 20), SOURCE) is None


@pytest.mark.parametrize("mutate", [
    lambda log: log.update(data="0x1234"),
    lambda log: log.update(topics=log["topics"][:2]),
    lambda log: log.update(transactionHash="0x12"),
    lambda log: log.update(data="0x" + encode(["uint8"] * 7, [7] * 7).hex()),
    lambda log: log.update(blockTimestamp="soon"),
])
def test_malformed_logs_raise_one_clear_error(mutate):
    log = _order_filled_log(SOURCE, EXCHANGE, 0, TOKEN_UP, 5_000_000, 10_000_000, 0)
    mutate(log)
    with pytest.raises(MalformedMessage):
        decode_order_filled(log, SOURCE)


# ---- mempool ---------------------------------------------------------------------------------------------------
def test_match_orders_source_as_taker_takes_the_makers_aggregate():
    makers = [_order("0x" + "a1" * 20, TOKEN_UP, 7_123_456, 3_632_963, 1),
              _order("0x" + "b2" * 20, TOKEN_UP, 3_500_000, 1_820_000, 1)]
    tx = _match_tx(_order(SOURCE, TOKEN_UP, 5_452_963, 10_623_456, 0), makers, 5_452_963, [7_123_456, 3_500_000],
                   183_000)
    [cf] = decode_match_orders(tx, SOURCE)
    assert (cf.side, cf.shares, cf.usdc, cf.fee, cf.condition_id) == (Side.BUY, 10_623_456, 5_452_963, 183_000,
                                                                       "0x" + "cd" * 32)
    assert cf.match_ts == pytest.approx(1_795_000_000.5)        # the taker order's ms timestamp


def test_match_orders_source_as_maker_uses_the_contract_ratio():
    makers = [_order(SOURCE, TOKEN_UP, 20_000_000, 10_400_000, 1),
              _order("0x" + "b2" * 20, TOKEN_UP, 3_500_000, 1_820_000, 1)]
    tx = _match_tx(_order("0x" + "c3" * 20, TOKEN_UP, 7_000_000, 13_500_000, 0), makers, 7_000_000,
                   [10_000_000, 3_500_000])
    [cf] = decode_match_orders(tx, SOURCE)
    assert (cf.side, cf.shares, cf.usdc) == (Side.SELL, 10_000_000, 10_000_000 * 10_400_000 // 20_000_000)


def test_mint_match_taker_pays_the_rest_of_each_share():
    makers = [_order("0x" + "a1" * 20, TOKEN_DOWN, 4_000_000, 10_000_000, 0)]      # BUY Down 10 @ 0.40
    tx = _match_tx(_order(SOURCE, TOKEN_UP, 6_000_000, 10_000_000, 0), makers, 6_000_000, [4_000_000])
    [cf] = decode_match_orders(tx, SOURCE)
    assert (cf.token_id, cf.side, cf.shares, cf.usdc) == (str(TOKEN_UP), Side.BUY, 10_000_000, 6_000_000)


def test_an_inconsistent_match_yields_no_taker_fill():
    makers = [_order("0x" + "a1" * 20, TOKEN_DOWN, 4_000_000, 10_000_000, 1)]      # SELL of the other outcome
    tx = _match_tx(_order(SOURCE, TOKEN_UP, 6_000_000, 10_000_000, 0), makers, 6_000_000, [4_000_000])
    assert decode_match_orders(tx, SOURCE) == []


def test_transactions_not_for_the_source_or_the_exchange_cost_nothing():
    tx = _match_tx(_order("0x" + "c3" * 20, TOKEN_UP, 1, 2, 0), [_order("0x" + "a1" * 20, TOKEN_UP, 2, 1, 1)], 1, [2])
    assert decode_match_orders(tx, SOURCE) == []
    assert decode_match_orders({**tx, "to": "0x" + "55" * 20}, SOURCE) == []
    assert decode_match_orders({**tx, "input": "0xa9059cbb" + "00" * 64}, SOURCE) == []


@pytest.mark.parametrize("tx", [
    {"hash": TX, "to": EXCHANGE, "input": "0x3c2b4399" + SOURCE[2:] + "00" * 40},
    {"hash": TX, "to": EXCHANGE, "input": 17},
    "not a transaction",
    {"hash": TX, "to": EXCHANGE, "input": "0x3c2b4399" + SOURCE[2:] + "zz"},
])
def test_malformed_transactions_raise_one_clear_error(tx):
    with pytest.raises(MalformedMessage):
        decode_match_orders(tx, SOURCE)


# ---- one fill, four feeds, one identity ----------------------------------------------------------------------
def _sim_market() -> SimMarket:
    return SimMarket(condition_id=META.condition_id, question_id="0x" + "01" * 32, slug=META.slug, event_slug="e",
                     event_id="1", market_id="1", title="t", asset_symbol="btc", window_start=0.0, window_end=900.0,
                     created_at=0.0, token_ids=list(META.token_ids))


def _four_feeds(makers: list[tuple[float, float]], side: str, other_outcome: tuple[bool, ...] = ()) -> list:
    """One simulated match seen on RTDS, the Data API, the logs and the mempool, each through its own parser.
    A maker flagged in other_outcome trades the Down token on the taker's side (a mint or merge)."""
    opposite = "SELL" if side == "BUY" else "BUY"
    mint = [i < len(other_outcome) and other_outcome[i] for i in range(len(makers))]
    fills = [WalletFill("0x" + f"{i + 1:02x}" * 20, "maker", "0x" + f"{i + 1:02x}" * 32, side if mint[i] else opposite,
                        str(TOKEN_DOWN if mint[i] else TOKEN_UP), "Down" if mint[i] else "Up", int(mint[i]), p, q)
             for i, (p, q) in enumerate(makers)]
    qty = sum(q for _, q in makers)
    cost = sum(q * (round(1 - p, 6) if mint[i] else p) for i, (p, q) in enumerate(makers))
    avg = round(cost / qty, 6)                                  # what the simulator's RTDS and Data API show
    taker = WalletFill(SOURCE, "taker", "0x" + "ee" * 32, side, str(TOKEN_UP), "Up", 0, avg, round(qty, 6),
                       fee=round(sum(q * 0.07 * avg * (1 - avg) for _, q in makers), 5))
    match = Match(tx_hash=TX, match_time=1_795_000_000.25, market=_sim_market(), taker=taker, makers=fills)
    s = settle(match)
    payload = {"asset": str(TOKEN_UP), "conditionId": META.condition_id, "eventSlug": "e", "outcome": "Up",
               "outcomeIndex": 0, "price": round(taker.price, 6), "proxyWallet": SOURCE, "side": side,
               "size": round(taker.size, 6), "slug": META.slug, "timestamp": 1_795_000_000, "transactionHash": TX}
    frame = {"connection_id": "c", "payload": payload, "timestamp": 1, "topic": "activity", "type": "trades"}
    rtds, _ = parse_rtds_frame(json.dumps(frame), SOURCE, RECV)
    row = {"proxy_wallet": SOURCE, "side": side, "token_id": str(TOKEN_UP), "condition_id": META.condition_id,
           "size": round(taker.size, 6), "price": round(taker.price, 6), "timestamp": 1_795_000_000,
           "transaction_hash": TX, "outcome": "Up", "outcome_index": 0}
    logs = [decode_order_filled({**log, "transactionHash": TX, "blockTimestamp": hex(1_795_000_000)}, SOURCE)
            for log in s.logs[:-1]]
    [log_fill] = [cf for cf in logs if cf is not None]
    [mem_fill] = decode_match_orders({"hash": TX, "to": s.exchange, "input": s.calldata}, SOURCE)
    return [(f"rtds-a#1:{Feed.RTDS_TRADES.value}", rtds[0]), ("data_api#1", parse_data_api_trade(row, RECV)),
            ("chain-logs:0xblock", to_source_fill(log_fill, META, Feed.CHAIN_LOGS.value, RECV, SOURCE, True)),
            (f"chain-mempool:{TX}", to_source_fill(mem_fill, META, Feed.MEMPOOL.value, RECV, SOURCE, False))]


def test_a_multi_maker_fill_off_the_tick_has_one_identity_on_all_four_feeds_in_every_order():
    sightings = _four_feeds([(0.51, 7.123456), (0.52, 3.5), (0.47, 0.333333)], "BUY", (False, False, True))
    assert len({f.size for _, f in sightings}) == 1
    for order in itertools.permutations(sightings):
        d = Deduper()
        seen = [d.observe(f, stream) for stream, f in order]
        assert [new for _, new in seen] == [True, False, False, False]
        assert len({identity.dedupe_key for identity, _ in seen}) == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 99), st.integers(10_000, 50_000_000), st.booleans()), min_size=1,
                max_size=4), st.sampled_from(["BUY", "SELL"]), st.integers(0, 10_000))
def test_any_simulated_match_keeps_one_identity_across_feeds(levels, side, seed):
    """Makers at any tick, on either outcome, each filled for >= 0.01 share (order sizes have 2 decimals) with
    6-decimal remainders."""
    makers = [(p / 100, q / 1e6) for p, q, _ in levels]
    sightings = _four_feeds(makers, side, tuple(mint for _, _, mint in levels))
    random.Random(seed).shuffle(sightings)
    d = Deduper()
    seen = [d.observe(f, stream) for stream, f in sightings]
    assert sum(new for _, new in seen) == 1 and len({i.dedupe_key for i, _ in seen}) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 99), st.integers(1, 3)), min_size=1, max_size=8),
       st.integers(0, 10_000))
def test_any_arrival_order_over_four_feeds_admits_each_fill_once(specs, seed):
    """Fills of two transactions (equal ones included); each feed rounds the price its own way and delivers in its
    own order; the logs feed also redelivers one block's fill after a reorg. What is admitted adds up to what the
    source traded in each transaction, once (a fill may be admitted in parts when feeds deliver a transaction's fills
    in different orders: the first feed's 1-share fill, then the excess of another feed's 2-share one)."""
    rng = random.Random(seed)
    truth = [(f"0x{tx:064x}", p / 100 + 0.0013, float(size)) for tx, p, size in specs]
    base = _four_feeds([(0.5, 1.0)], "BUY")[0][1]

    def seen_by(feed, stream_of, noise):
        return [(stream_of(tx), replace(base, tx_hash=tx, price=round(p + noise, 6), size=size, feed=feed))
                for tx, p, size in truth]
    deliveries = []
    for feed, stream_of, noise in [(Feed.RTDS_TRADES.value, lambda tx: "rtds-a#1:trades", 0.0),
                                   (Feed.DATA_API.value, lambda tx: "data_api#1", 4e-7),
                                   (Feed.CHAIN_LOGS.value, lambda tx: f"chain-logs:{tx}:block1", -7e-7),
                                   (Feed.MEMPOOL.value, lambda tx: f"chain-mempool:{tx}", 4e-7)]:
        batch = seen_by(feed, stream_of, noise)
        rng.shuffle(batch)
        deliveries += batch
    reorged = [(s.replace("block1", "block2"), f) for s, f in deliveries if "block1" in s]
    rng.shuffle(deliveries)
    d = Deduper()
    admitted = [i for s, f in deliveries + reorged if (i := d.admit(f, s)) is not None]
    assert len({i.dedupe_key for i in admitted}) == len(admitted)
    for tx in {t for t, _, _ in truth}:
        assert abs(sum(i.size for i in admitted if i.tx_hash == tx) - sum(q for t, _, q in truth if t == tx)) < 1e-6
