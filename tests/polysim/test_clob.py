"""The real py-clob-client-v2, unmodified, against the simulator's CLOB REST; raw requests for what the SDK never
sends. Error texts and codes are compared to the recorded payloads."""
import json
import time

import httpx
import pytest
from conftest import KEY, OTHER_KEY, current_market, eventually, ground_truth, payload, taking_price
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import (
    ApiCreds,
    CreateOrderOptions,
    MarketOrderArgsV2,
    OrderArgsV2,
    OrderPayload,
    OrderType,
    PartialCreateOrderOptions,
    PostOrdersV2Args,
    RequestArgs,
    TradeParams,
)
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.headers.headers import create_level_2_headers
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.signer import Signer

OPTS = PartialCreateOrderOptions(tick_size="0.01", neg_risk=False)


def tokens(sim, asset="btc"):
    m = current_market(sim, asset, min_left_s=20)
    return m, json.loads(m["clobTokenIds"])


def api_error(call) -> tuple[int, object]:
    with pytest.raises(PolyApiException) as e:
        call()
    return e.value.status_code, e.value.error_msg


def test_sdk_derives_a_key_reads_tick_size_and_a_book_whose_hash_it_verifies(sim):
    c = ClobClient(sim["clob"], chain_id=137, key=OTHER_KEY)
    assert api_error(c.derive_api_key) == (400, {"error": "Could not derive api key!"})      # nothing created yet
    created = c.create_api_key()
    assert c.derive_api_key() == created
    assert api_error(c.create_api_key) == (400, {"error": "Could not create api key"})
    m, (up, down) = tokens(sim)
    assert c.get_tick_size(up) == "0.01" and c.get_neg_risk(up) is False
    book = c.get_order_book(down)
    asks = [float(a["price"]) for a in book["asks"]]
    assert asks and asks == sorted(asks, reverse=True)               # worst first: the best ask is listed last
    assert c.get_order_book_hash(dict(book)) == book["hash"]
    info = c.get_clob_market_info(m["conditionId"])
    assert info["mts"] == 0.01 and info["itode"] is True and "nr" not in info and info["fd"]["r"] == 0.07
    assert [t["t"] for t in info["t"]] == [up, down]


def test_sdk_fak_marketable_buy_matches_and_resolves_its_transaction_hash(client, sim):
    _, (up, _) = tokens(sim)
    ask = float(client.get_order_book(up)["asks"][-1]["price"])
    cap = round(ask + 0.01, 2)              # the best level can be thinner than 10 shares: one tick of room
    t0 = time.monotonic()
    resp = client.create_and_post_order(OrderArgsV2(token_id=up, price=cap, size=10, side="BUY"), OPTS, OrderType.FAK)
    assert resp["success"] and resp["status"] == "matched" and resp["errorMsg"] == ""
    assert int(resp["takingAmount"]) == 10_000_000
    assert round(ask * 10 * 1e6) <= int(resp["makingAmount"]) <= round(cap * 10 * 1e6)   # paid at resting prices
    # No hash inline for a FAK match: the SDK followed tradeIDs on /data/trades until the trade was MINED.
    (trade,) = client.get_trades(TradeParams(id=resp["tradeIDs"][0]))
    assert resp["transactionsHashes"] == [trade["transaction_hash"]] and time.monotonic() - t0 >= 0.2
    assert trade["trader_side"] == "TAKER" and trade["status"] in ("TRADE_STATUS_MINED", "TRADE_STATUS_CONFIRMED")
    looked_up = client.get_order(resp["orderID"])
    assert looked_up["status"] == "MATCHED" and float(looked_up["size_matched"]) == 10
    executed = [e for e in ground_truth(sim) if e["kind"] == "order" and e["order_hash"] == resp["orderID"]]
    assert [(e["status"], e["filled_size"]) for e in executed] == [("matched", 10)]
    assert executed[0]["received_at"] <= executed[0]["ts"]


def test_the_same_signed_order_twice_is_a_duplicate(client, sim):
    _, (up, _) = tokens(sim)
    order = client.create_order(OrderArgsV2(token_id=up, price=taking_price(client, up), size=5, side="BUY"), OPTS)
    client.post_order(order, OrderType.FAK, defer_exec=True)
    status, body = api_error(lambda: client.post_order(order, OrderType.FAK))
    assert status == 400 and body["error"].endswith("is invalid. Duplicated.")


def test_an_order_signed_with_the_wrong_key_is_an_invalid_signature(client, sim):
    _, (up, _) = tokens(sim)
    args = OrderArgsV2(token_id=up, price=0.3, size=10, side="BUY")
    order = client.create_order(args, OPTS)
    stranger = ClobClient(sim["clob"], chain_id=137, key=OTHER_KEY)
    order.signature = stranger.builder.build_order(args, CreateOrderOptions(tick_size="0.01", neg_risk=False)).signature
    assert api_error(lambda: client.post_order(order, OrderType.GTC)) == (
        400, payload("clob_error_invalid_signature.json"))


def test_a_v1_order_is_an_order_version_mismatch(client, sim):
    _, (up, _) = tokens(sim)
    v1 = client.create_order(OrderArgsV2(token_id=up, price=0.3, size=10, side="BUY"),
                             PartialCreateOrderOptions(tick_size="0.01", neg_risk=False, version=1))
    assert api_error(lambda: client.post_order(v1, OrderType.GTC)) == (
        400, payload("clob_error_order_version_mismatch.json"))


def test_fok_without_enough_liquidity_is_killed_with_the_real_text(client, sim):
    _, (up, _) = tokens(sim)
    ask = float(client.get_order_book(up)["asks"][-1]["price"])
    order = client.create_market_order(MarketOrderArgsV2(token_id=up, amount=4000 * ask, side="BUY", price=ask,
                                                         order_type=OrderType.FOK), OPTS)
    assert api_error(lambda: client.post_order(order, OrderType.FOK)) == \
        (400, payload("clob_error_fok_not_filled.json"))
    cheap = client.create_order(OrderArgsV2(token_id=up, price=0.01, size=200, side="BUY"), OPTS)
    assert api_error(lambda: client.post_order(cheap, OrderType.FAK)) == \
        (400, payload("clob_error_fak_not_filled.json"))


def test_tick_and_min_size_violations_get_the_real_texts(client, sim):
    _, (up, _) = tokens(sim)
    fine = client.builder.build_order(OrderArgsV2(token_id=up, price=0.123, size=10, side="BUY"),
                                      CreateOrderOptions(tick_size="0.001", neg_risk=False))
    status, body = api_error(lambda: client.post_order(fine, OrderType.GTC))
    assert status == 400 and body["error"].endswith("is invalid. Price (0.123) breaks minimum tick size rule: 0.01")
    small = client.create_order(OrderArgsV2(token_id=up, price=0.2, size=2, side="BUY"), OPTS)
    status, body = api_error(lambda: client.post_order(small, OrderType.GTC))
    assert status == 400 and body["error"].endswith("is invalid. Size (2) lower than the minimum: 5")
    assert body["error"].startswith("order 0x")


def test_post_only_rests_or_is_refused_and_a_resting_order_cancels(client, sim):
    _, (up, _) = tokens(sim)
    crossing = client.create_order(OrderArgsV2(token_id=up, price=taking_price(client, up), size=5, side="BUY"), OPTS)
    assert api_error(lambda: client.post_order(crossing, OrderType.GTC, post_only=True)) == (
        400, {"error": "invalid post-only order: order crosses book"})
    resting = client.create_and_post_order(OrderArgsV2(token_id=up, price=0.05, size=20, side="BUY"), OPTS,
                                           OrderType.GTC, post_only=True)
    assert resting["status"] == "live" and resting["makingAmount"] == "" and resting["tradeIDs"] == []
    assert [o["id"] for o in client.get_open_orders()] == [resting["orderID"]]
    assert client.cancel_order(OrderPayload(resting["orderID"])) == {"canceled": [resting["orderID"]],
                                                                      "not_canceled": {}}
    again = client.cancel_order(OrderPayload(resting["orderID"]))
    assert again == {"canceled": [], "not_canceled": {resting["orderID"]: "Order not found or already canceled"}}


def test_batch_orders_answer_per_order_and_refuse_more_than_fifteen(client, sim):
    _, (up, down) = tokens(sim)
    good = client.create_order(OrderArgsV2(token_id=down, price=0.04, size=10, side="BUY"), OPTS)
    small = client.create_order(OrderArgsV2(token_id=down, price=0.04, size=1, side="BUY"), OPTS)
    answers = client.post_orders([PostOrdersV2Args(order=good), PostOrdersV2Args(order=small)])
    assert answers[0]["status"] == "live" and answers[0]["orderID"]
    assert answers[1]["errorMsg"].endswith("lower than the minimum: 5") and answers[1]["orderID"] == ""
    client.cancel_all()
    many = [PostOrdersV2Args(order=client.create_order(OrderArgsV2(token_id=down, price=0.03, size=10 + i,
                                                                   side="BUY"), OPTS)) for i in range(16)]
    assert api_error(lambda: client.post_orders(many)) == (
        400, {"error": "Too many orders in payload: 16, max allowed: 15"})


def test_balance_allowance_and_heartbeats(client, sim):
    before = int(client.get_balance_allowance()["balance"])
    _, (up, _) = tokens(sim)
    client.create_and_post_order(OrderArgsV2(token_id=up, price=0.06, size=100, side="BUY"), OPTS)
    after = client.get_balance_allowance()
    assert int(after["balance"]) == before and set(after["allowances"]) >= {
        "0xE111180000d2663C0091e4f400237545B87B996B"}
    first = client.post_heartbeat()["heartbeat_id"]
    second = client.post_heartbeat(first)["heartbeat_id"]
    assert second != first
    assert api_error(lambda: client.post_heartbeat(first)) == (
        400, {"error_msg": "Invalid Heartbeat ID", "heartbeat_id": second})
    client.cancel_all()


def _post_raw(sim, client, body, creds=None, address_key=KEY):
    text = json.dumps(body, separators=(",", ":"))
    headers = create_level_2_headers(Signer(address_key, 137), creds or client.creds,
                                     RequestArgs(method="POST", request_path="/order", body=body,
                                                 serialized_body=text))
    return httpx.post(f"{sim['clob']}/order", content=text, headers=headers)


def _body(client, sim, price=0.5, size=10, kind="FAK"):
    _, (_, down) = tokens(sim)
    return order_to_json_v2(client.create_order(OrderArgsV2(token_id=down, price=price, size=size, side="BUY"), OPTS),
                            client.creds.api_key, kind)


def test_auth_and_ownership_rejections(client, sim):
    body = _body(client, sim)
    wrong = ApiCreds(client.creds.api_key, "c2VjcmV0LXNlY3JldA==", client.creds.api_passphrase)
    r = _post_raw(sim, client, body, creds=wrong)
    assert r.status_code == 401 and r.json() == payload("clob_error_invalid_api_key_401.json")
    r = httpx.post(f"{sim['clob']}/order", json=body)
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized/Invalid api key"}
    r = _post_raw(sim, client, {**body, "owner": "someone-else"})
    assert r.status_code == 400 and r.json() == payload("clob_error_owner_mismatch.json")
    stranger = ClobClient(sim["clob"], chain_id=137, key=OTHER_KEY)
    stranger.set_api_creds(stranger.create_or_derive_api_key())
    theirs = order_to_json_v2(stranger.create_order(OrderArgsV2(token_id=body["order"]["tokenId"], price=0.3,
                                                                size=10, side="BUY"), OPTS), client.creds.api_key,
                              "GTC")
    r = _post_raw(sim, client, theirs)
    assert r.status_code == 400 and r.json() == {"error": "the order signer address has to be the address of the "
                                                          "API KEY"}
    r = _post_raw(sim, client, {**body, "order": {**body["order"], "makerAmount": "1"}})
    assert r.status_code == 400 and r.json() == payload("clob_error_invalid_signature.json")


def test_faults_on_demand(client, sim):
    ctl = sim["control"]
    httpx.post(f"{ctl}/faults", json={"clob_429": {"count": 1, "retry_after": 2}})
    r = _post_raw(sim, client, _body(client, sim))
    assert r.status_code == 429 and r.headers["Retry-After"] == "2" and r.json() == payload(
        "clob_error_rate_limited_429.json")
    httpx.post(f"{ctl}/faults", json={"clob_5xx": {"count": 1}})
    r = _post_raw(sim, client, _body(client, sim))
    assert r.status_code == 500 and r.json() == payload("clob_error_order_timed_out_500.json")
    httpx.post(f"{ctl}/faults", json={"post_timeout_after_accept": {"count": 1, "delay_s": 1.5}})
    body = _body(client, sim, price=0.99, size=5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sim['clob']}/order", content=json.dumps(body, separators=(",", ":")), timeout=0.5,
                   headers=create_level_2_headers(Signer(KEY, 137), client.creds, RequestArgs(
                       method="POST", request_path="/order", body=body,
                       serialized_body=json.dumps(body, separators=(",", ":")))))
    order_hash = eventually(lambda: [e["order_hash"] for e in ground_truth(sim) if e["kind"] == "order"
                                     and e["filled_size"] > 0 and e["token_id"] == body["order"]["tokenId"]
                                     and e["size"] == 5], 5, what="the accepted order")[-1]
    assert client.get_order(order_hash)["status"] == "MATCHED"                      # executed although unanswered
    httpx.post(f"{ctl}/faults", json={"engine_restart": {"seconds": 0.5, "post_only_seconds": 0.5}})
    r = _post_raw(sim, client, _body(client, sim))
    assert r.status_code == 425
    eventually(lambda: _post_raw(sim, client, _body(client, sim)).status_code == 503, 2, what="post-only mode")
    r = _post_raw(sim, client, _body(client, sim))
    assert r.json()["code"] == "post_only_mode" and r.json()["error"] == payload(
        "clob_error_post_only_mode_503.json")["error"] and r.json()["retry_after_seconds"] >= 1
    eventually(lambda: _post_raw(sim, client, _body(client, sim)).status_code not in (425, 503), 2,
               what="normal trading")
    httpx.post(f"{ctl}/faults", json={"delay_failure": {"count": 1}})
    r = _post_raw(sim, client, _body(client, sim, price=0.99, size=5))
    assert r.status_code == 200 and r.json()["status"] == "unmatched" and r.json()["success"]
    assert client.get_order(r.json()["orderID"])["status"] == "UNMATCHED"
    httpx.post(f"{ctl}/faults", json={"cancel_only": {"seconds": 0.3}})
    r = _post_raw(sim, client, _body(client, sim))
    assert r.status_code == 503 and r.json() == payload("clob_error_cancel_only_503.json")
    assert client.cancel_all() == {"canceled": [], "not_canceled": {}}               # cancels still allowed
    eventually(lambda: _post_raw(sim, client, _body(client, sim)).status_code != 503, 2, what="trading again")
    httpx.post(f"{ctl}/faults", json={"clob_latency": {"ms": 300, "seconds": 1}})
    t = time.monotonic()
    httpx.get(f"{sim['clob']}/time")
    assert time.monotonic() - t >= 0.3
    bad = httpx.post(f"{ctl}/faults", json={"no_such_fault": {}})
    assert bad.status_code == 400 and "no_such_fault" in bad.json()["error"]
