"""Parsers on the real recorded payloads, and garbage that must only ever raise MalformedMessage."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.errors import MalformedMessage
from copier.schemas import apply_price_change, parse_book, parse_data_api_trade, parse_funds, parse_rtds_frame
from copier.types import Feed, LevelChange, Side

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
WALLET = "0x510f4963b66b1b18505faab74b0bb943d1dda43c"


def load(name):
    return json.loads((PAYLOADS / name).read_text())


def test_real_rtds_trade_frame():
    text = (PAYLOADS / "rtds_activity_trade.json").read_text()
    fills, frame_id = parse_rtds_frame(text, WALLET.upper().replace("0X", "0x"), recv_ns=123)
    (f,) = fills
    assert (f.side, f.price, f.size, f.outcome, f.outcome_index) == (Side.BUY, 0.26, 2.7027, "No", 1)
    assert f.tx_hash == "0xb6acf6859bc84216f4b3e2567fb392a2eae19d275340ad96ea17218ccfec27b7"
    assert f.condition_id == "0x1d8720896546460a48d4f7fd5b3f0705a8d427921222de498d1cd334d4890c52"
    assert f.match_ts == 1787102287 and f.recv_ns == 123 and f.feed == Feed.RTDS_TRADES.value
    assert f.wallet == WALLET and frame_id
    # The envelope (send time, connection) is not part of the frame's identity: only the payload is.
    doc = json.loads(text)
    resent = json.dumps({**doc, "timestamp": doc["timestamp"] + 4250, "connection_id": "another"})
    assert parse_rtds_frame(resent, WALLET, recv_ns=124)[1] == frame_id


def test_other_wallets_and_other_topics_give_no_fills():
    frame = load("rtds_activity_trade.json")
    assert parse_rtds_frame(json.dumps(frame), "0x" + "00" * 20, 1) == ([], "")
    prices = (PAYLOADS / "rtds_crypto_prices_chainlink_update.json").read_text()
    assert parse_rtds_frame(prices, WALLET, 1) == ([], "")
    assert parse_rtds_frame("PONG", WALLET, 1) == ([], "")
    frame["type"] = "orders_matched"
    assert parse_rtds_frame(json.dumps(frame), WALLET, 1)[0][0].feed == Feed.RTDS_MATCHED.value


def test_real_data_api_v1_rows():
    (row,) = load("data_api_trades_v1.json")
    f = parse_data_api_trade(row, 5)
    assert (f.side, f.price, f.size, f.outcome, f.match_ts) == (Side.SELL, 0.76, 106.0, "Up", 1770446487)
    assert f.feed == Feed.DATA_API.value and f.asset.startswith("8126177")


def test_data_api_v2_row_shape_matches_the_v1_identity():
    (v1,) = load("data_api_trades_v1.json")
    doc = load("data_api_v2_trade_fields.json")
    v2 = {k: v1[c] for k, c in [("proxy_wallet", "proxyWallet"), ("side", "side"), ("token_id", "asset"),
                                 ("condition_id", "conditionId"), ("size", "size"), ("price", "price"),
                                 ("timestamp", "timestamp"), ("outcome", "outcome"), ("outcome_index", "outcomeIndex"),
                                 ("transaction_hash", "transactionHash"), ("slug", "slug"),
                                 ("event_slug", "eventSlug")]}
    assert set(v2) <= set(doc["data"][0])          # only documented v2 field names
    assert parse_data_api_trade(v2, 1).content_key == parse_data_api_trade(v1, 1).content_key


def test_activity_rows_parse_as_trades():
    rows = load("data_api_activity_v1.json")
    trades = [r for r in rows if r.get("type") == "TRADE"]
    assert trades
    for r in trades:
        assert parse_data_api_trade(r, 1).size > 0


def test_real_book_snapshot_is_sorted_best_first_and_updates():
    b = parse_book(load("clob_book.json"))
    assert b.bids[0] == (0.45, 100.0) and b.asks[0] == (0.46, 150.0)
    b = apply_price_change(b, LevelChange(b.asset, Side.SELL, 0.46, 0.0))
    b = apply_price_change(b, LevelChange(b.asset, Side.BUY, 0.455, 7.0))
    assert b.asks[0] == (0.47, 250.0) and b.bids[0] == (0.455, 7.0)


@pytest.mark.parametrize("text", ["{", "[]", '"x"', '{"topic":"activity","type":"trades"}',
                                  '{"topic":"activity","type":"trades","payload":{"proxyWallet":5}}',
                                  "x" * 70000])
def test_malformed_frames_raise_one_clear_error(text):
    with pytest.raises(MalformedMessage):
        parse_rtds_frame(text, WALLET, 1)


def test_type_confused_source_payload_is_malformed():
    frame = load("rtds_activity_trade.json")
    for field, bad in [("price", "abc"), ("size", -1), ("side", "HOLD"), ("price", 1.7), ("transactionHash", None),
                       ("timestamp", True)]:
        f = json.loads(json.dumps(frame))
        f["payload"][field] = bad
        with pytest.raises(MalformedMessage):
            parse_rtds_frame(json.dumps(f), WALLET, 1)


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=6),
                           max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_garbage_never_raises_anything_but_malformed(value):
    frame = {"topic": "activity", "type": "trades", "timestamp": 1, "payload": value}
    if isinstance(value, dict):
        value.setdefault("proxyWallet", WALLET)
    for parse in (lambda: parse_rtds_frame(json.dumps(frame), WALLET, 1),
                  lambda: parse_data_api_trade(value, 1), lambda: parse_book(value)):
        try:
            parse()
        except MalformedMessage:
            pass


V2_EXCHANGE = "0xE111180000d2663C0091e4f400237545B87B996B"
MAX_UINT256 = str(2 ** 256 - 1)


def test_funds_v2_answer_lists_an_allowance_per_exchange():
    funds = parse_funds({"balance": "12345678", "allowances": {V2_EXCHANGE: MAX_UINT256, "0xdead": "0"}})
    assert funds.balance_usd == 12.345678
    assert dict(funds.allowances_usd)["0xdead"] == 0.0 and dict(funds.allowances_usd)[V2_EXCHANGE] > 1e60


def test_funds_older_single_allowance_and_none_at_all():
    assert parse_funds({"balance": "0", "allowance": "5000000"}).allowances_usd == (("exchange", 5.0),)
    assert parse_funds({"balance": "1000000"}).allowances_usd == ()


@pytest.mark.parametrize("body", [None, [], {"allowances": {}}, {"balance": "1.5"}, {"balance": "-1"},
                                  {"balance": True}, {"balance": "1", "allowances": ["0x"]},
                                  {"balance": "1", "allowances": {V2_EXCHANGE: None}}])
def test_malformed_funds_raise_one_clear_error(body):
    with pytest.raises(MalformedMessage):
        parse_funds(body)


# ---- the market channel, typed ------------------------------------------------------------------------------
def test_real_market_channel_events_become_typed_events():
    from copier.schemas import parse_market_message
    from copier.types import BestBidAsk, BookTop, LastTradePrice, MarketResolved, PriceChange, TickSizeChange
    raw = {n: (PAYLOADS / f"ws_market_{n}.json").read_bytes() for n in
           ("book", "price_change", "tick_size_change", "best_bid_ask", "last_trade_price", "market_resolved",
            "new_market")}
    (book,) = parse_market_message(raw["book"]).events
    assert isinstance(book, BookTop) and book.bids[0] == (0.5, 15.0) and book.asks[0] == (0.52, 25.0)
    (change,) = parse_market_message(raw["price_change"]).events
    assert isinstance(change, PriceChange) and [c.side for c in change.changes] == [Side.BUY, Side.SELL]
    (tick,) = parse_market_message(raw["tick_size_change"]).events
    assert isinstance(tick, TickSizeChange) and (tick.old_tick, tick.new_tick) == (0.01, 0.001)
    (bba,) = parse_market_message(raw["best_bid_ask"]).events
    assert isinstance(bba, BestBidAsk) and (bba.best_bid, bba.best_ask) == (0.73, 0.77)
    (last,) = parse_market_message(raw["last_trade_price"]).events
    assert isinstance(last, LastTradePrice) and (last.side, last.price, last.size) == (Side.BUY, 0.456, 219.217767)
    (resolved,) = parse_market_message(raw["market_resolved"]).events
    assert isinstance(resolved, MarketResolved) and resolved.winning_asset == resolved.assets[0]
    assert parse_market_message(raw["new_market"]).events == ()            # not used: ignored, not refused
    both = parse_market_message(b"[" + raw["book"] + b', {"event_type": "book", "asset_id": []}]')
    assert len(both.events) == 1 and [r.reason for r in both.refused] == ["malformed"]


# ---- CLOB answers, typed ------------------------------------------------------------------------------------
def test_post_order_answers_from_the_recorded_payloads():
    from copier.schemas import parse_post_order_answer
    matched = parse_post_order_answer(load("clob_post_order_response_matched.json"), Side.BUY)
    assert (matched.accepted, matched.status, matched.filled_size, matched.avg_price) == (True, "MATCHED", 200.0, 0.5)
    assert matched.trade_ids == ("trade-123",) and matched.order_id.startswith("0xabcdef")
    live = parse_post_order_answer(load("clob_post_order_response_live_guide.json"), Side.SELL)
    assert (live.accepted, live.status, live.filled_size) == (True, "LIVE", 0.0)
    assert parse_post_order_answer(load("clob_post_order_response_delayed.json"), Side.BUY).status == "DELAYED"
    refused = parse_post_order_answer(load("clob_error_not_enough_balance.json"), Side.BUY)
    assert not refused.accepted and refused.status == "" and "balance" in refused.error
    with pytest.raises(MalformedMessage):          # a SELL of 100 shares for 200 pUSD: no venue says that
        parse_post_order_answer(load("clob_post_order_response_matched.json"), Side.SELL)
    with pytest.raises(MalformedMessage):
        parse_post_order_answer("<html>Cloudflare</html>", Side.BUY)


def test_order_lookup_null_is_unknown_and_anything_unreadable_is_malformed():
    from copier.schemas import parse_order_lookup
    found = parse_order_lookup({"id": "0x12", "status": "ORDER_STATUS_MATCHED", "size_matched": "9.5", "price": "0.52"})
    assert (found.status, found.matched_size, found.price) == ("MATCHED", 9.5, 0.52)
    assert parse_order_lookup(None) is None and parse_order_lookup(b"null") is None
    for body in ({}, {"id": "0x12"}, {"id": "0x12", "status": "LIVE", "size_matched": "NaN"}, "<html>", [], b"\xff"):
        with pytest.raises(MalformedMessage):
            parse_order_lookup(body)


def test_what_one_order_executed_is_read_from_a_trade_history_page():
    from copier.schemas import parse_trades_of_order
    page = load("clob_trades_l2_response.json")
    rows = page["data"] if isinstance(page, dict) else page
    taker = rows[0]["taker_order_id"]
    got = parse_trades_of_order({"data": rows, "next_cursor": "LTE="}, taker)
    assert got.shares == sum(float(r["size"]) for r in rows if r["taker_order_id"] == taker)
    assert got.next_cursor == "LTE="
    mine = {"data": [{"taker_order_id": "0xother", "status": "TRADE_STATUS_CONFIRMED", "size": "9", "price": "0.4",
                      "maker_orders": [{"order_id": "0xours", "matched_amount": "4", "price": "0.5"}]},
                     {"taker_order_id": "0xours", "status": "TRADE_STATUS_FAILED", "size": "7", "price": "0.6"}]}
    got = parse_trades_of_order(mine, "0xours")
    assert (got.shares, got.avg_price) == (4.0, 0.5)            # as a maker; the failed settlement does not count
    for body in ({"data": "x"}, {"data": [{"taker_order_id": "0xours", "size": "NaN", "price": "0.5"}]}, b"<html>",
                 {"data": [{"taker_order_id": "0xours", "size": "1", "price": "1.5"}]}):
        with pytest.raises(MalformedMessage):
            parse_trades_of_order(body, "0xours")


def test_tick_size_answer_from_the_recorded_payload():
    from copier.schemas import parse_tick_size
    assert parse_tick_size((PAYLOADS / "clob_tick_size.json").read_bytes()) == 0.01
    assert parse_tick_size({"minimum_tick_size": "0.001"}) == 0.001
    for body in ({"minimum_tick_size": 0.02}, {"minimum_tick_size": float("nan")}, {}, b"<html>"):
        with pytest.raises(MalformedMessage):
            parse_tick_size(body)
