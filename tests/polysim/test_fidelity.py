"""Every JSON the simulator serves on a surface covered by a recorded payload has that payload's field names and
JSON types, recursively. Extra fields are allowed only where listed in EXTRAS with the reason; fixtures that are
not something a server sends are listed in NOT_SERVED. A new fixture file that is in neither fails the suite."""
import json
import secrets
import time

import httpx
import pytest
import websocket
from conftest import KEY, PAYLOADS, SOURCE, current_market, eventually, payload, subscribed, taking_price
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import OrderArgsV2, OrderPayload, OrderType, PartialCreateOrderOptions, RequestArgs
from py_clob_client_v2.headers.headers import create_level_1_headers, create_level_2_headers
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.signer import Signer

OPTS = PartialCreateOrderOptions(tick_size="0.01", neg_risk=False)
INT_KEYS = {"timestamp", "outcomeIndex", "outcome_index", "bucket_index", "version", "count", "limit", "offset",
            "base_fee", "retry_after_seconds"}

# fixture -> {path: extra keys we send}; each with the reason we send them.
EXTRAS = {
    # reference §4.4: the documented success shape also carries these (the "live_guide" recording has them)
    "clob_post_order_response_live.json": {"$": {"transactionsHashes", "tradeIDs"}},
    "clob_post_order_response_delayed.json": {"$": {"transactionsHashes", "tradeIDs"}},
    # reference §7a: `fee` on ~40% of frames (the taker's rows); the recorded frame is a maker row
    "rtds_activity_trade.json": {"$.payload": {"fee"}},
    # reference §7d: last_trade_price carries the settlement's transaction hash
    "ws_market_last_trade_price.json": {"$": {"transaction_hash"}},
    # reference §7d (trader_side) and the SDK's Trade type (transaction_hash, filled at MINED); the current docs
    # example and the official SDK's user-trade model: fee_rate_bps, maker_address, bucket_index on the trade, and
    # side (required by the SDK), maker_address, fee_rate_bps, outcome_index on each maker order (docs/polysim.md)
    "ws_user_trade.json": {"$": {"trader_side", "transaction_hash", "fee_rate_bps", "maker_address", "bucket_index"},
                           "$.maker_orders[]": {"side", "maker_address", "fee_rate_bps", "outcome_index"}},
    # the current docs example of the order event and the official SDK's user-order model
    "ws_user_order.json": {"$": {"created_at", "expiration", "order_type", "status", "maker_address"}},
    # RTDS frames carry the connection's id (the official TS client's Message type); Chainlink prices carry the
    # exact 18-decimal value next to the rounded one (the official SDK's RTDS price models read it)
    "rtds_crypto_prices_chainlink_update.json": {"$": {"connection_id"}, "$.payload": {"full_accuracy_value"}},
    # reference §7b: activity rows are the trade row plus type/usdcSize (icon and profile fields included)
    "data_api_activity_v1.json": {"$[]": {"icon", "name", "pseudonym", "bio", "profileImage",
                                          "profileImageOptimized"}},
    # reference §6.2: Gamma fields of interest beyond the trimmed recordings
    "gamma_event_btc_updown_15m_trimmed_fixture.json": {
        "$": {"creationDate", "image", "icon"},
        # the official SDK requires an id on every series and tag of an event
        "$.series[]": {"id"}, "$.tags[]": {"id"},
        "$.markets[]": {"questionID", "resolutionSource", "image", "icon", "outcomePrices", "acceptingOrders",
                        "acceptingOrdersTimestamp", "enableOrderBook", "orderPriceMinTickSize", "orderMinSize",
                        "negRisk", "feesEnabled", "feeSchedule", "makerBaseFee", "takerBaseFee",
                        "umaResolutionStatus", "version"}},
}
# fixture -> paths where our list may be empty although the recording has elements (why).
EMPTY_OK = {
    # reference §2.6: since 2026-07-24 FAK/FOK matches no longer return transaction hashes inline
    "clob_post_order_response_matched.json": {"$.transactionsHashes"},
}
# Recordings whose docs example contradicts stronger evidence: the corrected form is compared (docs/polysim.md).
CORRECTED = {
    # the docs example shows a number; the official SDK parses /price only as a decimal string (and the other
    # single-price answers, /midpoint and /spread, are strings in the docs too)
    "clob_price.json": lambda doc: {**doc, "price": str(doc["price"])},
}
# Recordings that are excerpts of a larger object: only the recorded fields are checked.
PARTIAL = {"gamma_market_trading_fields_docs.json", "gamma_event_btc_updown_15m_partial.json"}
# Objects keyed by ids (token ids, order hashes): the keys are ours, the values are compared.
KEYED = {"clob_midpoints.json": "$", "clob_cancel_response_not_canceled.json": "$.not_canceled"}
NOT_SERVED = {
    "clob_auth_eip712_typed_data.json": "what a client signs (L1), checked in test_crypto/test_clob",
    "eip712_order_typed_data_v2.json": "what a client signs (orders), checked in test_crypto",
    "clob_post_order_request.json": "a request; the real SDK's requests are accepted in test_clob",
    "rtds_subscribe_activity.json": "a request; sent verbatim in test_feeds",
    "rtds_subscribe_activity_filtered_by_event.json": "a request; its filter is honoured in test_feeds",
    "rtds_subscribe_crypto_prices_chainlink.json": "a request; sent verbatim below",
    "ws_market_subscribe.json": "a request; sent verbatim below",
    "ws_user_subscribe.json": "a request; sent verbatim (with real credentials) below",
    "orderfilled_event_abi.json": "the Polygon JSON-RPC surface (chain.py, another engineer's)",
    "orderfilled_event_abi_v1_legacy.json": "V1 event layout; the V2 exchanges never emit it",
    "geoblock_response.json": "polymarket.com/api/geoblock is not a trading surface; not simulated",
    "clob_error_invalid_order_version.json": "the alternative V1 text; the simulator answers order_version_mismatch "
                                             "(reference §1: what SDK2 keys its version refresh on)",
    # exact-text equality of these is asserted where the behaviour is tested (test_clob.py)
    "clob_error_invalid_signature.json": "test_clob", "clob_error_order_version_mismatch.json": "test_clob",
    "clob_error_fok_not_filled.json": "test_clob", "clob_error_fak_not_filled.json": "test_clob",
    "clob_error_owner_mismatch.json": "test_clob", "clob_error_invalid_api_key_401.json": "test_clob",
    "clob_error_rate_limited_429.json": "test_clob", "clob_error_order_timed_out_500.json": "test_clob",
    "clob_error_cancel_only_503.json": "test_clob", "clob_error_post_only_mode_503.json": "test_clob",
}


def _v2_doc_types(doc):
    """The v2 field list documents types as words ("number (shares)"): turn them into sample values."""
    if isinstance(doc, dict):
        return {k: _v2_doc_types(v) for k, v in doc.items() if not k.startswith("_")}
    if isinstance(doc, list):
        return [_v2_doc_types(v) for v in doc]
    word = doc.split()[0]
    return {"string|null": None, "number": 0.5, "integer": 0, "boolean": True}.get(word, "")


def same_shape(ours, theirs, extras: dict, path="$", key="", empty_ok=frozenset(), partial=False, keyed=None):
    if theirs is None:                        # nullable in the recording
        return
    if isinstance(theirs, bool):
        assert isinstance(ours, bool), f"{path}: {ours!r} is not a boolean"
    elif isinstance(theirs, (int, float)):
        assert isinstance(ours, (int, float)) and not isinstance(ours, bool), f"{path}: {ours!r} is not a number"
        if isinstance(theirs, int) and key in INT_KEYS:
            assert isinstance(ours, int), f"{path}: {ours!r} is not an integer"
    elif isinstance(theirs, str):
        assert isinstance(ours, str), f"{path}: {ours!r} is not a string"
    elif isinstance(theirs, list):
        assert isinstance(ours, list), f"{path}: not a list"
        if theirs:
            assert ours or path in empty_ok, f"{path}: empty, cannot compare its elements"
            for item in ours:
                same_shape(item, theirs[0], extras, path + "[]", key, empty_ok, partial, keyed)
    else:
        assert isinstance(ours, dict), f"{path}: not an object"
        if path == keyed:
            assert ours, f"{path}: empty"
            for v in ours.values():
                same_shape(v, next(iter(theirs.values())), extras, path + "{}", key, empty_ok, partial, keyed)
            return
        fields = {k for k in theirs if not k.startswith("_")}
        assert fields <= set(ours), f"{path}: missing {sorted(fields - set(ours))}"
        extra = set(ours) - fields - extras.get(path, set())
        assert partial or not extra, f"{path}: undocumented extra fields {sorted(extra)}"
        for k in fields:
            same_shape(ours[k], theirs[k], extras, f"{path}.{k}", k, empty_ok, partial, keyed)


# ---- producers ------------------------------------------------------------------------------------------------
def _tokens(urls, asset="btc", min_left_s=20):
    m = current_market(urls, asset, min_left_s)
    return m, json.loads(m["clobTokenIds"])


def _post(urls, client, body, path="/order"):
    text = json.dumps(body, separators=(",", ":"))
    headers = create_level_2_headers(Signer(KEY, 137), client.creds, RequestArgs(
        method="POST", request_path=path, body=body, serialized_body=text))
    return httpx.post(f"{urls['clob']}{path}", content=text, headers=headers)


def _order(client, token, price, size, kind="GTC"):
    return order_to_json_v2(client.create_order(OrderArgsV2(token_id=token, price=price, size=size, side="BUY"), OPTS),
                            client.creds.api_key, kind)


def _collect(ws, seconds: float, done) -> list[dict]:
    """Events (JSON arrays flattened) received for `seconds` or until done(events)."""
    got, end = [], time.monotonic() + seconds
    ws.settimeout(0.2)
    while time.monotonic() < end and not done(got):
        try:
            doc = json.loads(ws.recv())
        except (websocket.WebSocketTimeoutException, ValueError):
            continue
        got += doc if isinstance(doc, list) else [doc]
    return got


@pytest.fixture(scope="module")
def market_events(sim, client):
    """Everything the market channel sends around a resting order, a trade and a tick-size change."""
    m, (up, down) = _tokens(sim, "eth")
    ws = websocket.create_connection(sim["market_ws"], timeout=5)
    ws.send(json.dumps({**payload("ws_market_subscribe.json"), "assets_ids": [up, down]}))
    try:
        # the book dump answers the subscription: until it arrives, a loaded server may not have registered us
        got = _collect(ws, 5, lambda events: any(e["event_type"] == "book" for e in events))
        resting = client.create_and_post_order(OrderArgsV2(token_id=up, price=0.02, size=30, side="BUY"), OPTS)
        httpx.post(f"{sim['control']}/source-fill", json={"asset": "eth", "outcome": "Up", "size": 700})  # new best
        httpx.post(f"{sim['control']}/tick-size", json={"slug": m["slug"], "tick_size": 0.001})
        got += _collect(ws, 1.5, lambda events: False)
        client.cancel_order(OrderPayload(resting["orderID"]))
    finally:
        ws.close()
    return got


@pytest.fixture(scope="module")
def lifecycle_events(fast_sim):
    """new_market and market_resolved from the 3-second windows of the fast scenario."""
    ws = websocket.create_connection(fast_sim["market_ws"], timeout=5)
    ws.send(json.dumps({**payload("ws_market_subscribe.json"), "assets_ids": []}))
    try:
        got = _collect(ws, 8, lambda events: {"new_market", "market_resolved"} <= {e["event_type"] for e in events})
    finally:
        ws.close()
    return got


@pytest.fixture(scope="module")
def user_events(sim, client):
    m, (up, down) = _tokens(sim)
    creds = client.creds
    ws = websocket.create_connection(sim["user_ws"], timeout=5)
    sub = payload("ws_user_subscribe.json")
    ws.send(json.dumps({**sub, "auth": {"apiKey": creds.api_key, "secret": creds.api_secret,
                                        "passphrase": creds.api_passphrase}, "markets": [m["conditionId"]]}))
    try:
        subscribed(ws)
        resting = client.create_and_post_order(OrderArgsV2(token_id=down, price=0.03, size=20, side="BUY"), OPTS)
        client.post_order(client.create_order(OrderArgsV2(token_id=up, price=taking_price(client, up), size=5,
                                              side="BUY"), OPTS),
                          OrderType.FAK, defer_exec=True)
        client.cancel_order(OrderPayload(resting["orderID"]))
        got = _collect(ws, 3, lambda events: any(e.get("status") == "CONFIRMED" for e in events))
    finally:
        ws.close()
    return got


def _first(events, kind):
    return next(e for e in events if e.get("event_type") == kind)


def _rtds_frame(urls, sub, pred):
    ws = websocket.create_connection(urls["rtds"], timeout=5)
    try:
        ws.send(json.dumps(sub))
        ws.send("PING")
        return eventually(lambda: (t := ws.recv()).startswith("{") and pred(d := json.loads(t)) and d, 5,
                          what="an RTDS frame")
    finally:
        ws.close()


def _data(urls, path, **params):
    return httpx.get(f"{urls['data_api']}{path}", params={**params, "_": time.time_ns()}).json()


def _closed_market(fast_sim):
    return eventually(lambda: next(iter(httpx.get(f"{fast_sim['gamma']}/markets", params={"closed": "true"})
                                        .json()), None), 8, what="a closed window")


PRODUCERS = {
    "clob_version_response.json": lambda s, c, f: httpx.get(f"{s['clob']}/version").json(),
    "clob_tick_size.json": lambda s, c, f: httpx.get(f"{s['clob']}/tick-size",
                                                     params={"token_id": _tokens(s)[1][0]}).json(),
    "clob_fee_rate.json": lambda s, c, f: httpx.get(f"{s['clob']}/fee-rate",
                                                    params={"token_id": _tokens(s)[1][0]}).json(),
    "clob_book.json": lambda s, c, f: httpx.get(f"{s['clob']}/book", params={"token_id": _tokens(s)[1][0]}).json(),
    "clob_price.json": lambda s, c, f: httpx.get(f"{s['clob']}/price", params={"token_id": _tokens(s)[1][0],
                                                                              "side": "BUY"}).json(),
    "clob_midpoints.json": lambda s, c, f: httpx.post(f"{s['clob']}/midpoints", json=[{"token_id": t} for t in
                                                                                      _tokens(s)[1]]).json(),
    "clob_auth_api_key_response.json": lambda s, c, f: httpx.post(f"{s['clob']}/auth/api-key", headers=
                                                                  create_level_1_headers(Signer(
                                                                      "0x" + secrets.token_hex(32), 137))).json(),
    "clob_post_order_response_matched.json": lambda s, c, f: _post(s, c, _order(c, _tokens(s)[1][0], 0.99, 5,
                                                                                "FAK")).json(),
    "clob_post_order_response_live.json": lambda s, c, f: _post(s, c, _order(c, _tokens(s)[1][0], 0.02, 5)).json(),
    "clob_post_order_response_live_guide.json": lambda s, c, f: _post(s, c, _order(c, _tokens(s)[1][1], 0.02,
                                                                                   6)).json(),
    "clob_post_order_response_delayed.json": lambda s, c, f: _delayed(f),
    "clob_post_orders_batch_response_post_only_mode.json": lambda s, c, f: _post_only_batch(s, c),
    "clob_cancel_response_canceled.json": lambda s, c, f: c.cancel_order(OrderPayload(_post(s, c, _order(
        c, _tokens(s)[1][0], 0.02, 7)).json()["orderID"])),
    "clob_cancel_response_not_canceled.json": lambda s, c, f: c.cancel_order(OrderPayload("0x" + "ab" * 32)),
    "clob_error_trading_disabled_503.json": lambda s, c, f: _under_fault(s, c, "trading_disabled"),
    "clob_error_not_enough_balance.json": lambda s, c, f: _post(s, c, _order(c, _tokens(s)[1][0], 0.5,
                                                                             30000)).json(),
    "clob_error_no_orderbook_404.json": lambda s, c, f: httpx.get(f"{s['clob']}/book",
                                                                  params={"token_id": "123"}).json(),
    "clob_error_invalid_tick_size.json": lambda s, c, f: c.post_order(c.builder.build_order(
        OrderArgsV2(token_id=_tokens(s)[1][0], price=0.125, size=10, side="BUY"), _fine_tick())),
    "clob_error_min_size.json": lambda s, c, f: _post(s, c, _order(c, _tokens(s)[1][0], 0.2, 1.08)).json(),
    "clob_error_market_not_ready.json": lambda s, c, f: _not_ready(f),
    "clob_heartbeat_response_openapi.json": lambda s, c, f: _post(s, c, {"heartbeat_id": ""}, "/heartbeats").json(),
    "clob_heartbeat_mismatch_400_sdk_model.json": lambda s, c, f: _heartbeat_mismatch(s, c),
    "clob_trades_l2_response.json": lambda s, c, f: _trades(s, c),
    "data_api_trades_v1.json": lambda s, c, f: _data(s, "/trades", user=SOURCE),
    "data_api_activity_v1.json": lambda s, c, f: _data(s, "/activity", user=SOURCE),
    "data_api_v2_trade_fields.json": lambda s, c, f: _data(s, "/v2/trades", user=SOURCE, limit=3),
    "data_api_v2_error.json": lambda s, c, f: _data(s, "/v2/trades", user=SOURCE, limit=5000),
    "gamma_event_btc_updown_15m_trimmed_fixture.json": lambda s, c, f: httpx.get(
        f"{s['gamma']}/events/slug/{_tokens(s)[0]['slug']}").json(),
    "gamma_event_btc_updown_15m_partial.json": lambda s, c, f: httpx.get(
        f"{s['gamma']}/events/slug/{_tokens(s)[0]['slug']}").json(),
    "gamma_market_trading_fields_docs.json": lambda s, c, f: httpx.get(
        f"{s['gamma']}/markets/slug/{_tokens(s)[0]['slug']}").json(),
    "rtds_activity_trade.json": lambda s, c, f: _rtds_frame(s, payload("rtds_subscribe_activity.json"),
                                                            lambda d: "fee" not in d["payload"]),
    "rtds_crypto_prices_chainlink_update.json": lambda s, c, f: _rtds_frame(
        s, payload("rtds_subscribe_crypto_prices_chainlink.json"),
        lambda d: d["topic"] == "crypto_prices_chainlink" and d["type"] == "update"),
}
EVENT_FIXTURES = {"ws_market_book.json": ("market", "book"), "ws_market_price_change.json": ("market", "price_change"),
                  "ws_market_last_trade_price.json": ("market", "last_trade_price"),
                  "ws_market_tick_size_change.json": ("market", "tick_size_change"),
                  "ws_market_best_bid_ask.json": ("market", "best_bid_ask"),
                  "ws_market_new_market.json": ("lifecycle", "new_market"),
                  "ws_market_market_resolved.json": ("lifecycle", "market_resolved"),
                  "ws_user_order.json": ("user", "order"), "ws_user_trade.json": ("user", "trade")}
# Texts with a variable part: the shape is compared, and the text against the recorded pattern.
TEMPLATED = {"clob_error_invalid_tick_size.json": "breaks minimum tick size rule: 0.01",
             "clob_error_min_size.json": "lower than the minimum: 5"}


def _fine_tick():
    from py_clob_client_v2.clob_types import CreateOrderOptions
    return CreateOrderOptions(tick_size="0.001", neg_risk=False)


def _delayed(fast_sim):
    c = ClobClient(fast_sim["clob"], chain_id=137, key=KEY)
    c.set_api_creds(c.create_or_derive_api_key())
    m, (up, _) = _tokens(fast_sim, "btc", min_left_s=1)
    return _post(fast_sim, c, _order(c, up, 0.99, 5, "FAK")).json()


def _not_ready(fast_sim):
    c = ClobClient(fast_sim["clob"], chain_id=137, key=KEY)
    c.set_api_creds(c.create_or_derive_api_key())
    token = json.loads(_closed_market(fast_sim)["clobTokenIds"])[0]
    # the scenario's fault schedule may still hold a one-shot 500 for the first order
    return eventually(lambda: (r := _post(fast_sim, c, _order(c, token, 0.5, 5))).status_code != 500 and r.json(), 3)


def _post_only_batch(s, c):
    _, (up, down) = _tokens(s)
    body = [_order(c, up, 0.99, 5, "FAK"), _order(c, down, 0.99, 5, "FAK")]
    httpx.post(f"{s['control']}/faults", json={"engine_restart": {"seconds": 0.05, "post_only_seconds": 0.4}})
    time.sleep(0.1)
    answer = _post(s, c, body, "/orders").json()
    time.sleep(0.4)                                  # back to normal trading for the next test
    return answer


def _under_fault(s, c, kind):
    httpx.post(f"{s['control']}/faults", json={kind: {"seconds": 0.3}})
    answer = _post(s, c, _order(c, _tokens(s)[1][0], 0.5, 5)).json()
    time.sleep(0.3)                                  # back to normal trading for the next test
    return answer


def _heartbeat_mismatch(s, c):
    c.post_heartbeat()
    return _post(s, c, {"heartbeat_id": "not-the-one"}, "/v1/heartbeats").json()


def _trades(s, c):
    _post(s, c, _order(c, _tokens(s)[1][0], 0.99, 5, "FAK"))
    time.sleep(0.5)
    return c.get_trades_paginated() and httpx.get(f"{s['clob']}/data/trades", headers=create_level_2_headers(
        Signer(KEY, 137), c.creds, RequestArgs(method="GET", request_path="/data/trades"))).json()


# ---- the checks ----------------------------------------------------------------------------------------------
def test_every_recorded_payload_is_covered_or_explained():
    files = {p.name for p in PAYLOADS.glob("*.json")}
    covered = set(PRODUCERS) | set(EVENT_FIXTURES) | set(NOT_SERVED)
    assert files - covered == set(), "a recorded payload nobody compares against"
    assert covered - files == set(), "a comparison against a payload that does not exist"


@pytest.mark.parametrize("name", sorted(PRODUCERS))
def test_served_json_has_the_recorded_fields_and_types(name, sim, client, fast_sim):
    if name.startswith("data_api"):                  # make sure the source wallet has indexed rows of both roles
        for role in ("taker", "maker"):
            httpx.post(f"{sim['control']}/source-fill", json={"asset": "btc", "size": 5, "role": role})
        time.sleep(1.2)
    try:
        ours = PRODUCERS[name](sim, client, fast_sim)
    except Exception as exc:                         # the SDK raises on non-200: compare the error body it carries
        ours = getattr(exc, "error_msg", None)
        assert ours is not None, repr(exc)
    theirs = CORRECTED.get(name, lambda doc: doc)(payload(name))
    if name == "data_api_v2_trade_fields.json":
        theirs = _v2_doc_types(theirs)
    if name in TEMPLATED:
        assert ours["error"].startswith("order 0x") and ours["error"].endswith(TEMPLATED[name])
    elif name.startswith("clob_error") or name == "clob_post_orders_batch_response_post_only_mode.json":
        assert ours == theirs                        # exact texts
    same_shape(ours, theirs, EXTRAS.get(name, {}), empty_ok=EMPTY_OK.get(name, frozenset()), partial=name in PARTIAL,
               keyed=KEYED.get(name))


@pytest.mark.parametrize("name", sorted(EVENT_FIXTURES))
def test_websocket_events_have_the_recorded_fields_and_types(name, request):
    source, kind = EVENT_FIXTURES[name]
    events = request.getfixturevalue({"market": "market_events", "lifecycle": "lifecycle_events",
                                      "user": "user_events"}[source])
    matching = [e for e in events if e.get("event_type") == kind]
    assert matching, f"no {kind} event"
    for event in matching:
        same_shape(event, payload(name), EXTRAS.get(name, {}))
