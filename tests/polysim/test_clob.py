"""The real py-clob-client-v2, unmodified, against the simulator; responses compared to the recorded payloads."""
import json
import time
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import ApiCreds, OrderArgsV2, OrderType, PartialCreateOrderOptions
from py_clob_client_v2.headers.headers import create_level_2_headers
from py_clob_client_v2.clob_types import RequestArgs
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.signer import Signer

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
KEY = "0x" + "3c" * 32


def fixture(name):
    return json.loads((PAYLOADS / name).read_text())


def same_shape(ours, theirs, path="$"):
    """Every field of the recorded payload exists in ours with the same JSON type."""
    assert isinstance(ours, type(theirs)) or (isinstance(theirs, (int, float)) and isinstance(ours, (int, float))), \
        f"{path}: {type(ours).__name__} vs {type(theirs).__name__}"
    if isinstance(theirs, dict):
        for k, v in theirs.items():
            if not k.startswith("_"):
                assert k in ours, f"{path}.{k} missing"
                same_shape(ours[k], v, f"{path}.{k}")
    elif isinstance(theirs, list) and theirs and ours:
        same_shape(ours[0], theirs[0], f"{path}[0]")


def current_market(sim, asset="btc"):
    doc = httpx.get(f"{sim['gamma']}/events", timeout=5).json()
    now = time.time()
    for ev in doc:
        m = ev["markets"][0]
        if ev["slug"].startswith(asset) and m["acceptingOrders"] and \
                ev["startTime"] <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)) and not m["closed"]:
            return m
    raise AssertionError("no trading market")


@pytest.fixture(scope="module")
def client(sim):
    c = ClobClient(sim["clob"], chain_id=137, key=KEY)
    c.set_api_creds(c.create_or_derive_api_key())
    return c


def test_public_endpoints_match_the_recorded_shapes(sim):
    m = current_market(sim)
    token = json.loads(m["clobTokenIds"])[0]
    base = sim["clob"]
    same_shape(httpx.get(f"{base}/version").json(), fixture("clob_version_response.json"))
    same_shape(httpx.get(f"{base}/tick-size", params={"token_id": token}).json(), fixture("clob_tick_size.json"))
    same_shape(httpx.get(f"{base}/fee-rate", params={"token_id": token}).json(), fixture("clob_fee_rate.json"))
    same_shape(httpx.get(f"{base}/book", params={"token_id": token}).json(), fixture("clob_book.json"))
    same_shape(httpx.get(f"{base}/price", params={"token_id": token, "side": "BUY"}).json(), fixture("clob_price.json"))
    missing = httpx.get(f"{base}/book", params={"token_id": "123"})
    assert missing.status_code == 404 and missing.json() == fixture("clob_error_no_orderbook_404.json")


def test_gamma_event_matches_the_recorded_event(sim):
    ev = httpx.get(f"{sim['gamma']}/events").json()[0]
    rec = fixture("gamma_event_btc_updown_15m_trimmed_fixture.json")
    same_shape({k: ev[k] for k in ev if k in rec and k != "markets"}, {k: rec[k] for k in rec if k in ev and k != "markets"})
    m, rm = ev["markets"][0], rec["markets"][0]
    for k in ("conditionId", "slug", "endDate", "eventStartTime", "outcomes", "clobTokenIds", "active", "closed"):
        assert type(m[k]) is type(rm[k]), k
    assert json.loads(m["outcomes"]) == ["Up", "Down"] and len(json.loads(m["clobTokenIds"])) == 2
    same_shape(m, fixture("gamma_market_trading_fields_docs.json"))


def test_sdk_derives_a_key_and_its_signed_fak_order_matches(client, sim):
    m = current_market(sim)
    token = json.loads(m["clobTokenIds"])[0]
    ask = float(client.get_order_book(token)["asks"][-1]["price"])     # best ask is listed last
    order = client.create_order(OrderArgsV2(token_id=token, price=ask, size=10, side="BUY"),
                                PartialCreateOrderOptions(tick_size="0.01", neg_risk=False))
    resp = client.post_order(order, OrderType.FAK)
    same_shape(resp, {k: v for k, v in fixture("clob_post_order_response_matched.json").items()
                      if k != "transactionsHashes"})
    assert resp["success"] and resp["status"] == "matched" and int(resp["takingAmount"]) == 10_000_000
    looked_up = client.get_order(resp["orderID"])
    assert looked_up["status"] == "MATCHED" and float(looked_up["size_matched"]) == 10.0
    with pytest.raises(PolyApiException, match="Duplicated"):
        client.post_order(order, OrderType.FAK)            # the same signed order again
    events = [json.loads(x) for x in Path(sim["ground_truth_path"]).read_text().splitlines()]
    executed = [e for e in events if e["kind"] == "order" and e["order_hash"] == resp["orderID"] and e["filled_size"]]
    assert len(executed) == 1


def _post_raw(sim, client, body: dict, creds=None):
    creds = creds or client.creds
    text = json.dumps(body, separators=(",", ":"))
    headers = create_level_2_headers(Signer(KEY, 137), creds, RequestArgs(method="POST", request_path="/order",
                                                                         body=body, serialized_body=text))
    return httpx.post(f"{sim['clob']}/order", content=text, headers=headers)


def _signed_body(client, sim, price=0.5, size=10):
    m = current_market(sim)
    token = json.loads(m["clobTokenIds"])[1]
    order = client.create_order(OrderArgsV2(token_id=token, price=price, size=size, side="BUY"),
                                PartialCreateOrderOptions(tick_size="0.01", neg_risk=False))
    from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
    return order_to_json_v2(order, client.creds.api_key, "FAK")


def test_documented_rejections(client, sim):
    body = _signed_body(client, sim)
    bad_sig = json.loads(json.dumps(body))
    bad_sig["order"]["makerAmount"] = str(int(bad_sig["order"]["makerAmount"]) + 10_000)
    r = _post_raw(sim, client, bad_sig)
    assert r.status_code == 400 and r.json() == fixture("clob_error_invalid_signature.json")
    v1 = json.loads(json.dumps(body))
    v1["order"].update(nonce="0", feeRateBps="0", taker="0x" + "00" * 20)
    r = _post_raw(sim, client, v1)
    assert r.status_code == 400 and r.json() == fixture("clob_error_order_version_mismatch.json")
    wrong = ApiCreds(client.creds.api_key, "c2VjcmV0LXNlY3JldA==", client.creds.api_passphrase)
    r = _post_raw(sim, client, body, creds=wrong)
    assert r.status_code == 401 and r.json() == fixture("clob_error_invalid_api_key_401.json")
    owner = json.loads(json.dumps(body))
    owner["owner"] = "someone-else"
    r = _post_raw(sim, client, owner)
    assert r.status_code == 400 and r.json() == fixture("clob_error_owner_mismatch.json")
    small = _signed_body(client, sim, size=2)
    r = _post_raw(sim, client, small)
    assert r.status_code == 400 and "lower than the minimum: 5" in r.json()["error"]
    cheap = _signed_body(client, sim, price=0.01, size=10)
    r = _post_raw(sim, client, cheap)
    assert r.status_code == 400 and r.json() == fixture("clob_error_fak_not_filled.json")


def test_faults_on_demand(client, sim):
    httpx.post(f"{sim['control']}/faults", json={"clob_429": {"count": 1, "retry_after": 2}})
    r = _post_raw(sim, client, _signed_body(client, sim))
    assert r.status_code == 429 and r.headers["Retry-After"] == "2" and r.json() == fixture(
        "clob_error_rate_limited_429.json")
    httpx.post(f"{sim['control']}/faults", json={"clob_5xx": {"count": 1}})
    r = _post_raw(sim, client, _signed_body(client, sim))
    assert r.status_code == 500 and r.json() == fixture("clob_error_order_timed_out_500.json")
    httpx.post(f"{sim['control']}/faults", json={"engine_restart": {"seconds": 0.5}})
    assert _post_raw(sim, client, _signed_body(client, sim)).status_code == 425
    time.sleep(0.6)
    r = _post_raw(sim, client, _signed_body(client, sim))
    assert r.status_code == 503 and r.json()["code"] == "post_only_mode"
    same_shape(r.json(), fixture("clob_error_post_only_mode_503.json"))
