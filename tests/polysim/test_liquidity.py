"""The liquidity model, black-box: the books over HTTP and the market websocket, orders through the real SDK.

Both simulators run without background takers, so the books move only by the makers, the source and the test.
`calm`: the source's and our flow count as uninformed, the makers re-post a taken order 1.0-1.3 s later (a floor
long enough to see). `informed`: the default model (informed flow, default re-quote delays and impact).
"""
import calendar
import json
import time
from itertools import pairwise

import httpx
import pytest
import websocket
import yaml
from conftest import KEY, eventually, ground_truth, payload, serve, stop
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import OrderArgsV2, OrderType, PartialCreateOrderOptions
from py_clob_client_v2.exceptions import PolyApiException

OPTS = PartialCreateOrderOptions(tick_size="0.01", neg_risk=False)
TICK = 0.01
FLOOR_S = 1.0
CALM = {"name": "calm-book", "seed": 21, "speed": 2, "markets": {"assets": ["btc", "eth", "sol", "xrp"],
                                                                 "listed_windows": 2},
        "feeds": {"mined_after_s": 0.2, "confirmed_after_s": 0.4},
        "background": {"taker_rate": 0, "informed_flow": False, "requote_min_s": FLOOR_S, "requote_mean_s": 0.1}}
INFORMED = {"name": "informed-book", "seed": 22, "speed": 2, "markets": {"assets": ["btc"]},
            "background": {"taker_rate": 0}}


def _serve(tmp_path_factory, name: str, doc: dict):
    work = tmp_path_factory.mktemp(name)
    path = work / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc))
    return serve(work, "--scenario", str(path))


@pytest.fixture(scope="module")
def calm(tmp_path_factory):
    urls = _serve(tmp_path_factory, "calm", CALM)
    yield urls
    stop(urls)


@pytest.fixture(scope="module")
def informed(tmp_path_factory):
    urls = _serve(tmp_path_factory, "informed", INFORMED)
    yield urls
    stop(urls)


@pytest.fixture(scope="module")
def sdk(calm):
    c = ClobClient(calm["clob"], chain_id=137, key=KEY)
    c.set_api_creds(c.create_or_derive_api_key())
    return c


def _ts(iso: str) -> float:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def market(urls, asset: str, which: str = "current", min_left_s: float = 20.0) -> dict:
    """The Gamma market of `asset` trading now (with min_left_s to run), or the one listed after it."""
    def pick():
        now = time.time()
        ms = [e["markets"][0] for e in httpx.get(f"{urls['gamma']}/events", params={"closed": "false"}).json()
              if e["slug"].startswith(asset)]
        if which == "next":
            later = sorted((m for m in ms if _ts(m["eventStartTime"]) > now), key=lambda m: m["eventStartTime"])
            return later[0] if later else None
        return next((m for m in ms if _ts(m["eventStartTime"]) <= now and _ts(m["endDate"]) - now > min_left_s),
                    None)
    return eventually(pick, 60, 0.2, f"the {which} {asset} market")


def book(urls, token: str) -> tuple[float, list[tuple[float, float]], list[tuple[float, float]]]:
    """(server time, bids best first, asks best first) from REST /book (which lists both sides worst first)."""
    doc = httpx.get(f"{urls['clob']}/book", params={"token_id": token}).json()
    levels = lambda side: [(float(x["price"]), float(x["size"])) for x in reversed(doc[side])]  # noqa: E731
    return int(doc["timestamp"]) / 1000, levels("bids"), levels("asks")


def source_buy(urls, m: dict, size: float, price: float | None = None) -> dict:
    r = httpx.post(f"{urls['control']}/source-fill",
                   json={"slug": m["slug"], "outcome": "Up", "side": "BUY", "size": size, "price": price})
    assert r.status_code == 200 and r.json()["fills"], r.text
    return r.json()


def channel(urls, token: str) -> tuple[websocket.WebSocket, list[dict]]:
    """A market-channel subscription to `token`, and the events it sent until the server had handled it."""
    ws = websocket.create_connection(urls["market_ws"], timeout=5)
    ws.send(json.dumps({"assets_ids": [token], "type": "market"}))
    ws.send("PING")
    texts = []
    end = time.monotonic() + 10
    while (text := ws.recv()) != "PONG":
        assert time.monotonic() < end, "no PONG: the subscription was never handled"
        texts.append(text)
    return ws, parse(texts)


def parse(texts: list[str]) -> list[dict]:
    out = []
    for text in texts:
        if text.startswith(("{", "[")):
            doc = json.loads(text)
            out += doc if isinstance(doc, list) else [doc]
    return out


def drain(ws, seconds: float = 0.3) -> list[dict]:
    """Every market-channel event that arrives within `seconds`."""
    texts, end = [], time.monotonic() + seconds
    ws.settimeout(0.05)
    while time.monotonic() < end:
        try:
            texts.append(ws.recv())
        except websocket.WebSocketTimeoutException:
            continue
    return parse(texts)


def ask_changes(events: list[dict], token: str, price: float) -> list[tuple[int, float]]:
    """(timestamp ms, new size) of every price_change of `token`'s ask level at `price`, in arrival order."""
    return [(int(e["timestamp"]), float(c["size"])) for e in events if e.get("event_type") == "price_change"
            for c in e["price_changes"] if c["asset_id"] == token and c["side"] == "SELL"
            and abs(float(c["price"]) - price) < 1e-9]


def best_asks(events: list[dict], token: str) -> list[float]:
    """The token's best ask after each change of its book, in order. (Price changes carry the best prices as of
    the change; a `book` snapshot is taken when it is sent, so it can run ahead of changes still on their way.)"""
    return [float(c["best_ask"]) for e in events if e.get("event_type") == "price_change"
            for c in e["price_changes"] if c["asset_id"] == token]


def api_error(call) -> tuple[int, object]:
    with pytest.raises(PolyApiException) as e:
        call()
    return e.value.status_code, e.value.error_msg


# ---- depth ----------------------------------------------------------------------------------------------------
def test_book_several_levels_a_side_one_tick_apart_and_the_outcomes_mirror_each_other(calm):
    m = market(calm, "eth")
    up, down = json.loads(m["clobTokenIds"])
    _, up_bids, up_asks = book(calm, up)
    _, down_bids, down_asks = book(calm, down)
    bg = CALM["background"]
    for side in (up_bids, up_asks):
        assert len(side) >= 5
        assert all(abs(abs(a[0] - b[0]) - TICK) < 1e-9 for a, b in pairwise(side))
        assert 250 <= side[0][1] <= 1500                                    # touch_size
        assert all(400 <= size <= 1400 for _, size in side[1:5])            # maker_size
    assert abs(up_asks[0][0] - up_bids[0][0] - TICK) < 1e-9
    assert [(round(1 - p, 2), s) for p, s in up_asks] == down_bids          # one book: Down = 1 - Up
    assert [(round(1 - p, 2), s) for p, s in up_bids] == down_asks
    assert bg["taker_rate"] == 0
    ws, first = channel(calm, up)
    ws.close()
    dump = [e for e in first if e.get("event_type") == "book" and e["asset_id"] == up]
    assert dump and [(float(a["price"]), float(a["size"])) for a in reversed(dump[0]["asks"])] == up_asks


# ---- re-quote delay -------------------------------------------------------------------------------------------
def test_a_level_taken_comes_back_only_after_the_requote_delay(calm):
    m = market(calm, "btc")
    up = json.loads(m["clobTokenIds"])[0]
    ws, _ = channel(calm, up)
    try:
        _, _, asks = book(calm, up)
        price, size = asks[0]
        taken = source_buy(calm, m, size, price)
        assert sum(f["size"] for f in taken["fills"]) == size and {f["price"] for f in taken["fills"]} == {price}
        polls = []

        def back():
            at, _, now_asks = book(calm, up)
            polls.append((at, dict(now_asks).get(price, 0.0)))
            return polls[-1][1] > 0
        eventually(back, 10, 0.02, "the taken level re-posted")
        events = drain(ws, 0.5)
    finally:
        ws.close()
    early = [(at, s) for at, s in polls if at < taken["match_time"] + FLOOR_S]
    assert early and all(s == 0 for _, s in early), "re-posted before the re-quote delay"
    assert polls[-1][0] >= taken["match_time"] + FLOOR_S
    changes = ask_changes(events, up, price)                 # the market channel showed it go, then come back
    assert changes[0][1] == 0 and changes[-1][1] > 0
    assert changes[-1][0] - changes[0][0] >= FLOOR_S * 1000 - 50    # send stamps: both lag the events alike


def test_an_uninformed_burst_finds_its_levels_restored_at_the_old_price(calm):
    """The contrast to the informed burst below: flow the makers take as noise moves nothing for good."""
    m = market(calm, "sol")
    up = json.loads(m["clobTokenIds"])[0]
    _, bids, asks = book(calm, up)
    (bid0, _), (ask0, touch) = bids[0], asks[0]
    for _ in range(10):
        source_buy(calm, m, round((touch + 300) / 10, 2))
    eventually(lambda: (b := book(calm, up))[2][0][0] == ask0 and b[1][0][0] == bid0, 10, 0.05,
               "the best ask back at its old price, the best bid unmoved")


# ---- informed flow --------------------------------------------------------------------------------------------
def test_a_burst_of_informed_buys_moves_the_best_ask_up_and_it_never_comes_back(informed):
    m = market(informed, "btc")
    up = json.loads(m["clobTokenIds"])[0]
    ws, _ = channel(informed, up)
    try:
        _, bids, asks = book(informed, up)
        (bid0, _), (ask0, touch) = bids[0], asks[0]
        burst = [source_buy(informed, m, round((touch + 300) / 10, 2)) for _ in range(10)]   # sweeps the touch
        first = burst[0]["match_time"]
        moved = eventually(lambda: (b := book(informed, up))[1][0][0] >= ask0 and b, 15, 0.02,
                           "the makers re-centred above the old best ask")
        events = drain(ws, 1.0)
        _, after_bids, after_asks = book(informed, up)
    finally:
        ws.close()
    prices = [f["price"] for fill in burst for f in fill["fills"]]
    assert min(prices) == ask0 and max(prices) > ask0                       # the burst walked up the book
    asks_seen = best_asks(events, up)
    lifted = next((i for i, a in enumerate(asks_seen) if a > ask0), None)
    assert lifted is not None, "the market channel never showed the best ask above the level the burst took"
    assert all(a > ask0 for a in asks_seen[lifted:]), "the best ask came back to the level the burst took"
    assert moved[0] >= first + 0.3                                          # re-centred only after a re-quote delay
    assert after_asks[0][0] >= ask0 + TICK - 1e-9 and after_bids[0][0] >= ask0 > bid0


# ---- FAK / FOK ------------------------------------------------------------------------------------------------
def test_a_fak_that_can_fill_part_answers_matched_with_the_partial_amounts(calm, sdk):
    m = market(calm, "xrp")
    up = json.loads(m["clobTokenIds"])[0]
    _, bids, asks = book(calm, up)
    price, size = asks[0]
    resp = sdk.create_and_post_order(OrderArgsV2(token_id=up, price=price, size=size + 7, side="BUY"), OPTS,
                                     OrderType.FAK)
    assert resp["success"] and resp["status"] == "matched" and resp["errorMsg"] == "" and resp["tradeIDs"]
    assert int(resp["takingAmount"]) == round(size * 1e6)                  # shares received: only what filled
    assert int(resp["makingAmount"]) == round(size * price * 1e6)          # pUSD paid for them
    order = sdk.get_order(resp["orderID"])
    assert order["status"] == "MATCHED" and float(order["size_matched"]) == size
    assert float(order["original_size"]) == size + 7
    (record,) = [e for e in ground_truth(calm) if e["kind"] == "order" and e["order_hash"] == resp["orderID"]]
    assert (record["status"], record["filled_size"], record["order_type"]) == ("matched", size, "FAK")
    _, after_bids, after_asks = book(calm, up)
    assert after_bids == bids and (not after_asks or after_asks[0][0] > price)   # the rest was killed, not rested


def test_a_fak_that_can_fill_nothing_gets_the_venues_fak_error_and_changes_nothing(calm, sdk):
    m = market(calm, "xrp")
    up = json.loads(m["clobTokenIds"])[0]
    _, bids, asks = book(calm, up)
    below = sdk.create_order(OrderArgsV2(token_id=up, price=bids[0][0], size=10, side="BUY"), OPTS)
    assert api_error(lambda: sdk.post_order(below, OrderType.FAK)) == (400, payload("clob_error_fak_not_filled.json"))
    assert book(calm, up)[1:] == (bids, asks)


def test_a_fok_fills_whole_or_gets_the_venues_fok_error_and_changes_nothing(calm, sdk):
    m = market(calm, "btc", "next")                                         # listed, quoted, not yet started
    up = json.loads(m["clobTokenIds"])[0]
    _, bids, asks = book(calm, up)
    price, size = asks[0]
    too_big = sdk.create_order(OrderArgsV2(token_id=up, price=price, size=size + 5, side="BUY"), OPTS)
    assert api_error(lambda: sdk.post_order(too_big, OrderType.FOK)) == (400, payload("clob_error_fok_not_filled.json"))
    assert book(calm, up)[1:] == (bids, asks)
    whole = sdk.create_and_post_order(OrderArgsV2(token_id=up, price=price, size=size, side="BUY"), OPTS,
                                      OrderType.FOK)
    assert whole["status"] == "matched" and int(whole["takingAmount"]) == round(size * 1e6)
    assert int(whole["makingAmount"]) == round(size * price * 1e6)
