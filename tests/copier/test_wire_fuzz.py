"""Every wire parser the copier reads, fed hostile raw bytes: random binary, invalid UTF-8, deep nesting, wrong types,
NaN and Infinity, huge numbers, empty bodies, HTML, and mutations of the real recorded payloads.

Property: a parser returns a typed value whose numbers are finite and in range, or raises MalformedMessage; nothing
else ever escapes (an escaping TypeError or RecursionError is what stopped the whole process before).
"""
import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_chain import EXCHANGE, META, SOURCE, TOKEN_UP, _match_tx, _order, _order_filled_log

from copier.chain import (
    RpcAnswer,
    RpcNotification,
    decode_match_orders,
    decode_order_filled,
    parse_rpc_message,
    to_source_fill,
)
from copier.errors import MalformedMessage
from copier.schemas import (
    EPOCH_MAX_S,
    EPOCH_MIN_S,
    TICK_SIZES,
    parse_book,
    parse_funds,
    parse_gamma,
    parse_market_message,
    parse_order_lookup,
    parse_post_order_answer,
    parse_rtds_frame,
    parse_tick_size,
    parse_trades_page,
)
from copier.types import (
    BookTop,
    Feed,
    GammaAnswer,
    MarketMessage,
    MarketMeta,
    OrderLookup,
    PostOrderAnswer,
    Side,
    SourceFill,
    TickSizeChange,
    TradesPage,
)

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
RECV_NS = 1_795_000_001_000_000_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])


def load(name):
    return json.loads((PAYLOADS / name).read_text())


# ---- the real payloads each parser reads ---------------------------------------------------------------------
def _rtds():
    frame = load("rtds_activity_trade.json")
    frame["payload"]["proxyWallet"] = SOURCE
    frame["payload"]["timestamp"] = 1_795_000_000
    return [frame, {**frame, "type": "orders_matched"}, load("rtds_crypto_prices_chainlink_update.json")]


def _market_ws():
    names = ["book", "price_change", "tick_size_change", "best_bid_ask", "last_trade_price", "market_resolved",
             "new_market"]
    events = [load(f"ws_market_{n}.json") for n in names]
    return events + [events[:3]]


def _trades_pages():
    (v1,) = load("data_api_trades_v1.json")
    v2 = {"proxy_wallet": SOURCE, "side": v1["side"], "token_id": v1["asset"], "condition_id": v1["conditionId"],
          "size": v1["size"], "price": v1["price"], "timestamp": v1["timestamp"], "outcome": v1["outcome"],
          "outcome_index": v1["outcomeIndex"], "transaction_hash": v1["transactionHash"], "slug": v1["slug"],
          "event_slug": v1["eventSlug"]}
    pag = {"has_more": True, "limit": 500, "next_cursor": "MTAw", "offset": 0}
    return [{"data": [v2, v1], "pagination": pag}, load("data_api_v2_trade_fields.json"),
            load("data_api_v2_error.json")]


def _gamma():
    docs_market = {"conditionId": "0x" + "ab" * 32, "clobTokenIds": '["1","2"]', "outcomes": '["Yes","No"]',
                   "endDate": "2026-03-23T15:30:00Z", **load("gamma_market_trading_fields_docs.json")}
    return [load("gamma_event_btc_updown_15m_trimmed_fixture.json"), load("gamma_event_btc_updown_15m_partial.json"),
            docs_market, [docs_market]]


def _post_answers():
    names = ["matched", "live", "live_guide", "delayed"]
    errors = ["fak_not_filled", "not_enough_balance", "invalid_api_key_401", "rate_limited_429", "min_size"]
    return [load(f"clob_post_order_response_{n}.json") for n in names] + [load(f"clob_error_{e}.json") for e in errors]


def _order_lookups():
    return [{"id": "0x" + "12" * 32, "status": "MATCHED", "owner": "k", "maker_address": SOURCE,
             "market": META.condition_id,
             "asset_id": str(TOKEN_UP), "side": "BUY", "original_size": "10", "size_matched": "10", "price": "0.52",
             "outcome": "Up", "order_type": "FAK", "created_at": 1_795_000_000},
            {"id": "0x" + "13" * 32, "status": "ORDER_STATUS_LIVE", "size_matched": "0", "price": "0.5"}, None]


def _funds():
    return [{"balance": "12345678", "allowances": {EXCHANGE: str(2 ** 256 - 1), "0xdead": "0"}},
            {"balance": "0", "allowance": "5000000"}]


def _rpc():
    log = _order_filled_log(SOURCE, EXCHANGE, 0, TOKEN_UP, 5_412_345, 10_623_456, 183_500)
    tx = _match_tx(_order(SOURCE, TOKEN_UP, 5_000_000, 10_000_000, 0),
                   [_order("0x" + "a1" * 20, TOKEN_UP, 10_000_000, 5_000_000, 1)], 5_000_000, [10_000_000])
    note = {"jsonrpc": "2.0", "method": "eth_subscription"}
    return [{**note, "params": {"subscription": "0xs1", "result": log}},
            {**note, "params": {"subscription": "0xs2", "result": tx}},
            {"jsonrpc": "2.0", "id": 1, "result": "0xs1"}, {"jsonrpc": "2.0", "id": 2, "result": "0x1b4"}]


# ---- hostile bytes ---------------------------------------------------------------------------------------------
SPECIALS = [float("nan"), float("inf"), -float("inf"), 10 ** 400, -(10 ** 400), 2 ** 256, 1.8e15, 1.8e12, -1, 0, True,
            None, "", "\ud800", "NaN", "1e400", "0x" + "zz" * 32, "BUY ", " ", "<html>", [], {}, [[[[]]]],
            {"type": ["trades"]}]
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(min_value=-(10 ** 300), max_value=10 ** 300)
    | st.text(max_size=12) | st.sampled_from(SPECIALS),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5), max_leaves=15)


def _slots(doc):
    """Every (container, key) in a JSON document, the document's own slot first."""
    out = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            stack.append(v)
    return out


@st.composite
def mutated(draw, fixtures):
    """A real payload with 1-3 fields replaced, dropped or re-typed, then maybe damaged as bytes."""
    doc = copy.deepcopy(draw(st.sampled_from(fixtures)))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc)
        if not slots:
            break
        node, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["replace", "replace", "drop", "wrap"]))
        if op == "drop" and isinstance(node, dict):
            del node[key]
        elif op == "wrap":
            node[key] = draw(st.sampled_from([[node[key]], {"value": node[key]}, str(node[key])]))
        else:
            node[key] = copy.deepcopy(draw(json_values))     # SPECIALS holds lists and dicts: never mutate them
    data = json.dumps(doc).encode()
    damage = draw(st.sampled_from(["none", "none", "truncate", "invalid_utf8", "flip"]))
    if damage == "truncate" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif damage == "invalid_utf8":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])) + data[at:]
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data


def hostile_bytes(fixtures):
    nesting = st.builds(lambda opener, n: opener * n, st.sampled_from([b"[", b'{"a":', b'{"payload":[']),
                        st.sampled_from([100, 900, 1100, 30_000]))
    documents = json_values.map(lambda v: json.dumps(v).encode())
    return st.one_of(
        mutated(fixtures), mutated(fixtures), documents, nesting, st.binary(max_size=300),
        st.sampled_from([b"", b" ", b"null", b"[]", b"{}", b"NaN", b"[NaN]", b'{"a": Infinity}', b"1e999",
                         b"1" * 5000, b"<html><body>502 Bad Gateway</body></html>", b"\xff\xfe\x00",
                         b'{"topic": "activity", "type": ["trades"]}', b'"\\ud800"', b"PONG", b"PING"]),
        st.integers(0, 3).map(lambda k: b"[" + b"0," * (10_000 * k) + b"0]"))


# ---- what a typed value must satisfy ---------------------------------------------------------------------------
def _finite(value, where=""):
    if isinstance(value, float):
        assert math.isfinite(value), where
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _finite(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, (tuple, list)):
        for v in value:
            _finite(v, where)


def _sane_fill(f: SourceFill):
    assert isinstance(f, SourceFill) and isinstance(f.side, Side)
    assert 0 < f.price <= 1 and 0 < f.size <= 1e12 and EPOCH_MIN_S <= f.match_ts <= EPOCH_MAX_S
    assert len(f.tx_hash) == 66 and len(f.condition_id) == 66 and f.asset
    for text in (f.tx_hash, f.asset, f.condition_id, f.outcome, f.wallet, f.slug, f.event_slug):
        text.encode("utf-8")                    # storable and loggable: no lone surrogates


def _sane_book(b: BookTop):
    assert isinstance(b, BookTop) and b.asset
    for levels, best_first in ((b.bids, True), (b.asks, False)):
        prices = [p for p, _ in levels]
        assert prices == sorted(prices, reverse=best_first)
        assert all(0 < p <= 1 and s > 0 for p, s in levels)


def _sane_market(m: MarketMeta):
    assert isinstance(m, MarketMeta) and m.token_ids and len(m.token_ids) == len(m.outcomes)
    assert m.tick_size in TICK_SIZES and m.min_size >= 0
    assert m.end_ts == 0 or EPOCH_MIN_S <= m.end_ts <= EPOCH_MAX_S


def _outcome(parse, data):
    """Run one parser on raw bytes: the typed value, or None for MalformedMessage. Anything else fails the test."""
    try:
        value = parse(data)
    except MalformedMessage as exc:
        assert exc.reason and str(exc)
        return None
    _finite(value)
    return value


# ---- one property per wire input: parse raw bytes, check what came back --------------------------------------
def check_rtds(data):
    value = _outcome(lambda d: parse_rtds_frame(d, SOURCE, RECV_NS), data)
    if value is not None:
        fills, frame_id = value
        assert isinstance(frame_id, str) and len(fills) <= 1
        for f in fills:
            _sane_fill(f)
            assert f.feed in (Feed.RTDS_TRADES.value, Feed.RTDS_MATCHED.value) and f.wallet == SOURCE


def check_market_ws(data):
    value = _outcome(parse_market_message, data)
    if value is not None:
        assert isinstance(value, MarketMessage)
        for event in value.events:
            if isinstance(event, BookTop):
                _sane_book(event)
            if isinstance(event, TickSizeChange):
                assert event.new_tick in TICK_SIZES and event.old_tick in TICK_SIZES


def check_trades_page(data):
    value = _outcome(lambda d: parse_trades_page(d, RECV_NS), data)
    if value is not None:
        assert isinstance(value, TradesPage) and isinstance(value.next_cursor, str)
        for f in value.fills:
            _sane_fill(f)
        assert all(r.reason for r in value.refused)


def check_gamma(data):
    value = _outcome(parse_gamma, data)
    if value is not None:
        assert isinstance(value, GammaAnswer)
        for m in value.markets:
            _sane_market(m)


def check_post_answer(data):
    for side in Side:
        value = _outcome(lambda d, s=side: parse_post_order_answer(d, s), data)
        if value is not None:
            assert isinstance(value, PostOrderAnswer)
            assert value.filled_size >= 0 and 0 <= value.avg_price <= 1 + 1e-9
            assert value.accepted or (value.filled_size == 0 and value.status == "")


def check_order_lookup(data):
    value = _outcome(parse_order_lookup, data)
    if value is not None:
        assert isinstance(value, OrderLookup) and value.status and value.order_id
        assert value.matched_size >= 0 and 0 <= value.price <= 1


def check_funds_tick_book(data):
    funds = _outcome(parse_funds, data)
    assert funds is None or (funds.balance_usd >= 0 and all(a >= 0 for _, a in funds.allowances_usd))
    tick = _outcome(parse_tick_size, data)
    assert tick is None or tick in TICK_SIZES
    book = _outcome(parse_book, data)
    if book is not None:
        _sane_book(book)


def _decode_chain(d):
    msg = parse_rpc_message(d)
    if isinstance(msg, RpcNotification) and isinstance(msg.result, dict) and "topics" in msg.result:
        cf = decode_order_filled(msg.result, SOURCE)
        return [] if cf is None else [to_source_fill(cf, META, Feed.CHAIN_LOGS.value, RECV_NS, SOURCE, True)]
    if isinstance(msg, RpcNotification):
        return [to_source_fill(cf, META if cf.token_id in META.token_ids else None, Feed.MEMPOOL.value, RECV_NS,
                               SOURCE, False) for cf in decode_match_orders(msg.result, SOURCE)]
    assert msg is None or isinstance(msg, RpcAnswer)
    return []


def check_json_rpc(data):
    for f in _outcome(_decode_chain, data) or []:
        assert 0 < f.price <= 1 and 0 < f.size <= 1e12
        assert EPOCH_MIN_S <= f.match_ts <= EPOCH_MAX_S or f.match_ts == RECV_NS / 1e9


FUNDS_TICK_BOOK = _funds() + [load("clob_tick_size.json"), load("clob_book.json"), load("ws_market_book.json")]
WIRE_INPUTS = {"rtds": (_rtds(), check_rtds), "market_ws": (_market_ws(), check_market_ws),
               "data_api": (_trades_pages(), check_trades_page), "gamma": (_gamma(), check_gamma),
               "post_order": (_post_answers(), check_post_answer),
               "order_lookup": (_order_lookups(), check_order_lookup),
               "funds_tick_book": (FUNDS_TICK_BOOK, check_funds_tick_book), "json_rpc": (_rpc(), check_json_rpc)}


@FUZZ
@given(hostile_bytes(_rtds()))
def test_rtds_frames_yield_sane_fills_or_malformed(data):
    check_rtds(data)


@FUZZ
@given(hostile_bytes(_market_ws()))
def test_market_websocket_messages_yield_typed_events_or_malformed(data):
    check_market_ws(data)


@FUZZ
@given(hostile_bytes(_trades_pages()))
def test_data_api_pages_yield_sane_fills_or_malformed(data):
    check_trades_page(data)


@FUZZ
@given(hostile_bytes(_gamma()))
def test_gamma_answers_yield_sane_markets_or_malformed(data):
    check_gamma(data)


@FUZZ
@given(hostile_bytes(_post_answers()))
def test_post_order_answers_yield_a_typed_answer_or_malformed(data):
    check_post_answer(data)


@FUZZ
@given(hostile_bytes(_order_lookups()))
def test_order_lookups_yield_a_typed_record_none_or_malformed(data):
    check_order_lookup(data)


@FUZZ
@given(hostile_bytes(FUNDS_TICK_BOOK))
def test_balance_tick_size_and_book_answers_yield_typed_values_or_malformed(data):
    check_funds_tick_book(data)


@FUZZ
@given(hostile_bytes(_rpc()))
def test_json_rpc_logs_and_pending_transactions_yield_sane_fills_or_malformed(data):
    check_json_rpc(data)


# ---- every field of every real payload, replaced by every hostile value (exhaustive, not sampled) ------------
@pytest.mark.parametrize("name", sorted(WIRE_INPUTS))
def test_every_field_of_every_fixture_replaced_by_every_hostile_value(name):
    fixtures, check = WIRE_INPUTS[name]
    tried = 0
    for fixture in fixtures:
        for index in range(len(_slots(fixture))):
            for special in SPECIALS:
                doc = copy.deepcopy(fixture)
                node, key = _slots(doc)[index]
                node[key] = copy.deepcopy(special)
                check(json.dumps(doc).encode())
                tried += 1
    assert tried > 100


# ---- the fixtures themselves parse (the mutations start from payloads the parsers accept) ----------------------
@pytest.mark.parametrize("fixtures,parse", [
    (_rtds()[:2], lambda d: parse_rtds_frame(d, SOURCE, RECV_NS)[0]),
    (_market_ws()[:6], lambda d: parse_market_message(d).events),
    (_trades_pages()[:1], lambda d: parse_trades_page(d, RECV_NS).fills),
    (_gamma()[:1], lambda d: parse_gamma(d).markets),
    (_post_answers()[:4], lambda d: [parse_post_order_answer(d, Side.BUY)]),
    (_order_lookups()[:2], lambda d: [parse_order_lookup(d)]),
    (_rpc()[:2], lambda d: [parse_rpc_message(d)]),
])
def test_every_recorded_fixture_parses_to_a_typed_value(fixtures, parse):
    for doc in fixtures:
        assert parse(json.dumps(doc).encode()), doc
