"""The feeds with plain websocket-client and httpx: RTDS, the Data API, the CLOB market and user channels."""
import json
import time

import httpx
import pytest
import websocket
from conftest import SOURCE, current_market, eventually, payload, subscribed, taking_price
from py_clob_client_v2.clob_types import OrderArgsV2, OrderPayload, OrderType, PartialCreateOrderOptions, TradeParams

OPTS = PartialCreateOrderOptions(tick_size="0.01", neg_risk=False)


def fill(sim, **body) -> dict:
    r = httpx.post(f"{sim['control']}/source-fill", json={"asset": "eth", "outcome": "Down", "side": "BUY", "size": 7,
                                                          **body})
    assert r.status_code == 200 and r.json()["tx_hash"], r.text
    return r.json()


def rtds(sim, sub=None):
    ws = websocket.create_connection(sim["rtds"], timeout=5)
    ws.send(json.dumps(sub or payload("rtds_subscribe_activity.json")))
    return ws


def read(ws, seconds: float, ping_every: float | None = 1.0) -> list[str]:
    """Everything the socket delivers for `seconds`, sending PING every `ping_every` seconds (None: never)."""
    out, end, last_ping = [], time.monotonic() + seconds, 0.0
    ws.settimeout(0.1)
    while time.monotonic() < end:
        if ping_every is not None and time.monotonic() - last_ping >= ping_every:
            ws.send("PING")
            last_ping = time.monotonic()
        try:
            out.append(ws.recv())
        except websocket.WebSocketTimeoutException:
            pass
    return out


def frames(texts: list[str]) -> list[dict]:
    return [json.loads(t) for t in texts if t.startswith("{")]


# ---- RTDS -----------------------------------------------------------------------------------------------------
def test_rtds_frames_carry_the_recorded_fields_with_whole_second_timestamps(sim):
    ws, other = rtds(sim), rtds(sim)
    try:
        ws.send("PING")
        done = fill(sim)
        texts = []
        eventually(lambda: texts.extend(read(ws, 0.3)) or
                   {f["type"] for f in frames(texts) if f["payload"]["transactionHash"] == done["tx_hash"]} ==
                   {"trades", "orders_matched"}, 5, what="both activity types of the source fill")
        texts += read(ws, 0.5)                                 # the makers' rows of the same settlement
        assert "" in texts                                     # the real RTDS answers PING with an empty message
        rec = payload("rtds_activity_trade.json")
        got = frames(texts)
        mine = [f for f in got if f["payload"]["proxyWallet"] == SOURCE]
        assert {f["type"] for f in mine} == {"trades", "orders_matched"}
        for f in got:
            assert list(f) == list(rec) and set(f["payload"]) - set(rec["payload"]) <= {"fee"}
            assert set(rec["payload"]) <= set(f["payload"])
            for k, v in rec["payload"].items():
                assert type(f["payload"][k]) in ((int, float) if k in ("price", "size") else (type(v),)), k
            assert f["payload"]["timestamp"] * 1000 <= f["timestamp"]
        assert any(set(f["payload"]) == set(rec["payload"]) for f in got)       # maker rows never carry a fee
        assert mine[0]["payload"]["timestamp"] == int(done["match_time"])
        other_id = frames(read(other, 0.5))[0]["connection_id"]
        assert len({f["connection_id"] for f in got}) == 1 and other_id != got[0]["connection_id"]
    finally:
        ws.close()
        other.close()


def test_rtds_filters_by_event_slug_but_never_by_user(sim):
    slug = current_market(sim, "btc")["slug"]
    only_btc = rtds(sim, {"action": "subscribe", "subscriptions": [
        {"topic": "activity", "type": "trades", "filters": json.dumps({"event_slug": slug})}]})
    user = rtds(sim, {"action": "subscribe", "subscriptions": [
        {"topic": "activity", "type": "orders_matched", "filters": json.dumps({"user": SOURCE})}]})
    try:
        fill(sim, asset="btc", outcome="Up")
        got = frames(read(only_btc, 1.5))
        assert got and {(f["type"], f["payload"]["eventSlug"]) for f in got} == {("trades", slug)}
        wallets = {f["payload"]["proxyWallet"] for f in frames(read(user, 1.0))}
        assert wallets - {SOURCE}, "the feed has no user filter: everyone's trades arrive"
    finally:
        only_btc.close()
        user.close()


def test_rtds_without_ping_stalls_like_the_real_feed(sim):
    pinging, silent = rtds(sim), rtds(sim)
    try:
        assert frames(read(silent, 1.0, ping_every=None)), "the firehose is flowing"
        read(silent, 3.2, ping_every=None)                                 # idle stall after 4 s in this sim
        fill(sim)
        quiet, busy = frames(read(silent, 2.0, ping_every=None)), frames(read(pinging, 0.5))
        assert quiet == [] and busy, "the connection without PING gets nothing, the pinging one keeps flowing"
        silent.send("PING")
        assert read(silent, 0.5, ping_every=None) == [] and silent.connected     # silent, not closed
    finally:
        pinging.close()
        silent.close()


def test_rtds_protocol_pings_get_a_pong_but_do_not_keep_the_feed_alive(sim):
    """Only the text PING counts against the idle stall (docs/polysim.md: the measurement names app-level PING)."""
    ws = rtds(sim)
    try:
        pongs, texts, end = 0, [], time.monotonic() + 5.5         # the idle stall comes after 4 s in this sim
        ws.settimeout(0.1)
        last = 0.0
        while time.monotonic() < end:
            if time.monotonic() - last >= 0.5:
                ws.ping(b"keepalive")
                last = time.monotonic()
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            if opcode == websocket.ABNF.OPCODE_PONG:
                pongs += data == b"keepalive"
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                texts.append(data.decode())
        assert pongs >= 5, "protocol pings are answered"
        fill(sim)
        assert frames(read(ws, 2.0, ping_every=None)) == [], "yet the connection went silent like an idle one"
    finally:
        ws.close()


def read_until(sim, ws, done, what: str) -> list[str]:
    """Read (pinging) until done(everything read) holds: a loaded reader may first drain a backlog. A timeout names
    the simulator's RTDS counters (an idle-stalled connection, a feed that stopped)."""
    texts: list[str] = []
    try:
        eventually(lambda: texts.extend(read(ws, 0.3)) or done(texts), 20, 0, what=what)
    except TimeoutError as exc:
        counters = httpx.get(f"{sim['control']}/state").json()["counters"]
        rtds = {k: v for k, v in counters.items() if k.startswith("rtds")}
        raise TimeoutError(f"{exc}; {len(frames(texts))} frames read; simulator {rtds}") from None
    return texts


def _held_then_released_at_once(texts) -> bool:
    stamps = [f["timestamp"] for f in frames(texts)]
    return any(stamps[i] - stamps[i - 1] >= 1000 and stamps[i:].count(stamps[i]) >= 5 for i in range(1, len(stamps)))


def test_rtds_failure_modes_on_demand(sim):
    ctl = sim["control"]
    ws = rtds(sim)
    try:
        read(ws, 0.3)
        # Judged by the envelopes' send timestamps, not our arrival times: a loaded machine delays the reader.
        until_ms = httpx.post(f"{ctl}/faults", json={"rtds_stall": {"seconds": 1.2}}).json()[
            "faults"]["rtds_stall"]["until"] * 1000
        texts = read_until(sim, ws, lambda ts: any(f["timestamp"] >= until_ms for f in frames(ts)),
                           "frames after the stall")
        during = [f["timestamp"] for f in frames(texts) if until_ms - 1199 < f["timestamp"] < until_ms - 1]
        assert during == [], "frames sent during the stall"
        httpx.post(f"{ctl}/faults", json={"rtds_duplicate": {"count": 3}})
        read_until(sim, ws, lambda ts: len(js := [t for t in ts if t.startswith("{")]) - len(set(js)) >= 3,
                   "3 duplicates")
        httpx.post(f"{ctl}/faults", json={"rtds_burst_hold": {"seconds": 1.5}})
        for _ in range(2):              # held rows of our own, whatever the background takers do meanwhile
            fill(sim)
        read_until(sim, ws, _held_then_released_at_once, "a silence, then the held frames sent at one instant")
        httpx.post(f"{ctl}/faults", json={"malformed": {"count": 3}})
        read_until(sim, ws, lambda ts: any(t in ("[1,2,3]", "not json at all") for t in ts), "the malformed frames")
        httpx.post(f"{ctl}/faults", json={"rtds_drop": {}})
        assert_closed_by_server(ws)
    finally:
        ws.close()


def assert_closed_by_server(ws):
    """Reading on drains what is left, then must hit the close (within 10 s)."""
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(50):
            ws.settimeout(0.2)
            try:
                ws.recv()
            except websocket.WebSocketTimeoutException:
                continue


# ---- Data API -------------------------------------------------------------------------------------------------
def dapi(sim, path, **params):
    return httpx.get(f"{sim['data_api']}{path}", params={**params, "_": time.time_ns()})


def test_data_api_garbage_fault_answers_one_truncated_body(sim):
    httpx.post(f"{sim['control']}/faults", json={"data_api_garbage": {"count": 1}})
    broken = dapi(sim, "/v2/trades", user=SOURCE)
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()
    assert "data" in dapi(sim, "/v2/trades", user=SOURCE).json()


def test_data_api_indexes_behind_the_match_and_hides_maker_fills_by_default(sim):
    taker = fill(sim, size=6)
    maker = fill(sim, size=8, role="maker")
    assert maker["fills"][0]["role"] == "maker"
    assert taker["tx_hash"] not in {r["transaction_hash"] for r in
                                    dapi(sim, "/v2/trades", user=SOURCE, taker_only="false").json()["data"]}
    rows = eventually(lambda: (d := dapi(sim, "/v2/trades", user=SOURCE, taker_only="false").json()["data"]) and
                      maker["tx_hash"] in {r["transaction_hash"] for r in d} and d, 5, what="indexing")
    default = {r["transaction_hash"] for r in dapi(sim, "/v2/trades", user=SOURCE).json()["data"]}
    assert taker["tx_hash"] in default and maker["tx_hash"] not in default               # taker_only defaults true
    assert maker["tx_hash"] in {r["transaction_hash"] for r in rows}
    v1 = {r["transactionHash"] for r in dapi(sim, "/trades", user=SOURCE).json()}
    v1_all = {r["transactionHash"] for r in dapi(sim, "/trades", user=SOURCE, takerOnly="false").json()}
    assert taker["tx_hash"] in v1 and maker["tx_hash"] not in v1 and maker["tx_hash"] in v1_all
    activity = {r["transactionHash"]: r for r in dapi(sim, "/activity", user=SOURCE).json()}
    row = activity[maker["tx_hash"]]
    assert row["type"] == "TRADE" and row["usdcSize"] == pytest.approx(row["size"] * row["price"])
    positions = {p["asset"]: p for p in dapi(sim, "/positions", user=SOURCE).json()}
    assert positions[taker["token_id"]]["size"] >= 6 + 8 and positions[taker["token_id"]]["outcome"] == "Down"


def test_data_api_v2_paginates_with_a_cursor_and_answers_errors_in_the_v2_shape(sim):
    for _ in range(3):
        fill(sim, asset="btc", outcome="Up", size=5)
    time.sleep(1.2)                                           # indexing delay of this sim: 0.6 s on average
    seen, cursor = [], None
    for _ in range(20):
        page = dapi(sim, "/v2/trades", user=SOURCE, taker_only="false", limit=2,
                    **({"cursor": cursor} if cursor else {})).json()
        seen += [r["transaction_hash"] + r["token_id"] for r in page["data"]]
        if not page["pagination"]["has_more"]:
            break
        cursor = page["pagination"]["next_cursor"]
    assert len(seen) >= 4 and len(seen) == len(set(seen))
    bad = dapi(sim, "/v2/trades", user="nobody")
    assert bad.status_code == 400 and set(bad.json()) == set(payload("data_api_v2_error.json"))
    assert bad.json()["parameter"] == "user" and bad.json()["retryable"] is False


def test_data_api_sits_behind_a_cache_that_only_a_changing_parameter_defeats(sim):
    url = f"{sim['data_api']}/v2/trades"
    first = httpx.get(url, params={"user": SOURCE, "limit": 5})
    fill(sim, size=5)
    time.sleep(1.2)
    again = httpx.get(url, params={"user": SOURCE, "limit": 5})
    fresh = httpx.get(url, params={"user": SOURCE, "limit": 5, "_": time.time_ns()})
    assert first.headers["Cache-Control"] == "public, max-age=2" and "Age" in again.headers
    assert again.content == first.content and fresh.content != first.content


# ---- market channel -------------------------------------------------------------------------------------------
def market_ws(sim, assets, **extra):
    ws = websocket.create_connection(sim["market_ws"], timeout=5)
    ws.send(json.dumps({"assets_ids": assets, "type": "market", "custom_feature_enabled": True, **extra}))
    return ws


def events(texts) -> list[dict]:
    out = []
    for t in texts:
        if t.startswith(("{", "[")):
            doc = json.loads(t)
            out += doc if isinstance(doc, list) else [doc]
    return out


def test_market_channel_books_changes_trades_and_custom_events(sim, client):
    m = current_market(sim, "eth", min_left_s=20)
    up, down = json.loads(m["clobTokenIds"])
    ws = market_ws(sim, [up, down])
    try:
        dump = json.loads(ws.recv())
        assert isinstance(dump, list) and [b["asset_id"] for b in dump] == [up, down]
        assert all(b["event_type"] == "book" and b["bids"] and b["asks"] for b in dump)
        resting = client.create_and_post_order(OrderArgsV2(token_id=down, price=0.02, size=50, side="BUY"), OPTS)
        done = fill(sim, asset="eth", outcome="Down", size=700)            # clears the best level: a new best
        got = []
        eventually(lambda: got.extend(events(read(ws, 0.3))) or
                   any(e.get("transaction_hash") == done["tx_hash"] for e in got), 5, what="last_trade_price")
        ltp = next(e for e in got if e.get("transaction_hash") == done["tx_hash"])
        assert (ltp["event_type"], ltp["asset_id"], ltp["side"], ltp["fee_rate_bps"]) == (
            "last_trade_price", down, "BUY", "0")
        changes = [c for e in got if e["event_type"] == "price_change" for c in e["price_changes"]]
        mine = [c for c in changes if c["asset_id"] == down and c["price"] == "0.02" and c["side"] == "BUY"]
        mirror = [c for c in changes if c["asset_id"] == up and c["price"] == "0.98" and c["side"] == "SELL"]
        assert mine and mirror and float(mine[0]["size"]) >= 50 and len(mine[0]["hash"]) == 40
        assert {"book", "best_bid_ask"} <= {e["event_type"] for e in got}
        ws.send("PING")
        assert "PONG" in read(ws, 0.5, ping_every=None)
        httpx.post(f"{sim['control']}/tick-size", json={"slug": m["slug"], "tick_size": 0.001})
        ticks = []
        eventually(lambda: ticks.extend(e for e in events(read(ws, 0.2)) if e["event_type"] == "tick_size_change")
                   or len(ticks) == 2, 3, what="tick_size_change for both tokens")
        assert {(t["asset_id"], t["old_tick_size"], t["new_tick_size"]) for t in ticks} == {
            (up, "0.01", "0.001"), (down, "0.01", "0.001")}
        ws.send(json.dumps({"assets_ids": [up, down], "operation": "unsubscribe"}))
        read(ws, 0.3)
        fill(sim, asset="eth", outcome="Up")
        assert [e for e in events(read(ws, 0.8)) if e.get("market") == m["conditionId"]] == []
        client.cancel_order(OrderPayload(resting["orderID"]))
    finally:
        ws.close()


# ---- user channel ---------------------------------------------------------------------------------------------
def test_user_channel_reports_our_orders_and_trade_lifecycle(sim, client):
    m = current_market(sim, "btc", min_left_s=20)
    up, down = json.loads(m["clobTokenIds"])
    creds = client.creds
    ws = websocket.create_connection(sim["user_ws"], timeout=5)
    bad = websocket.create_connection(sim["user_ws"], timeout=5)
    try:
        ws.send(json.dumps({"auth": {"apiKey": creds.api_key, "secret": creds.api_secret,
                                     "passphrase": creds.api_passphrase}, "markets": [m["conditionId"]],
                            "type": "user"}))
        subscribed(ws)
        bad.send(json.dumps({"auth": {"apiKey": creds.api_key, "secret": "x", "passphrase": "y"}, "type": "user"}))
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            bad.recv()
            bad.recv()
        resting = client.create_and_post_order(OrderArgsV2(token_id=up, price=0.03, size=40, side="BUY"), OPTS)
        client.cancel_order(OrderPayload(resting["orderID"]))
        taken = client.post_order(client.create_order(OrderArgsV2(token_id=down, price=taking_price(client, down),
                                                                  size=5, side="BUY"), OPTS),
                                  OrderType.FAK, defer_exec=True)
        got = []
        eventually(lambda: got.extend(events(read(ws, 0.3))) or
                   any(e.get("status") == "CONFIRMED" for e in got), 5, what="CONFIRMED")
        orders = [(e["type"], e["id"]) for e in got if e["event_type"] == "order"]
        assert orders[:2] == [("PLACEMENT", resting["orderID"]), ("CANCELLATION", resting["orderID"])]
        trades = [e for e in got if e["event_type"] == "trade"]
        assert [t["status"] for t in trades] == ["MATCHED", "MINED", "CONFIRMED"]
        assert {t["id"] for t in trades} == set(taken["tradeIDs"]) and trades[0]["taker_order_id"] == taken["orderID"]
        assert trades[0]["transaction_hash"] == "" and trades[1]["transaction_hash"].startswith("0x")
        assert all(t["owner"] == t["trade_owner"] == creds.api_key and t["trader_side"] == "TAKER" for t in trades)
    finally:
        ws.close()
        bad.close()


def test_a_failed_settlement_goes_retrying_then_failed_and_is_reverted(sim, client):
    m = current_market(sim, "btc", min_left_s=20)
    up = json.loads(m["clobTokenIds"])[0]
    creds = client.creds
    ws = websocket.create_connection(sim["user_ws"], timeout=5)
    try:
        ws.send(json.dumps({"auth": {"apiKey": creds.api_key, "secret": creds.api_secret,
                                     "passphrase": creds.api_passphrase}, "type": "user"}))
        subscribed(ws)
        before = int(client.get_balance_allowance()["balance"])
        httpx.post(f"{sim['control']}/faults", json={"trade_fail": {"count": 1}})
        taken = client.post_order(client.create_order(OrderArgsV2(token_id=up, price=taking_price(client, up), size=6,
                                                                  side="BUY"), OPTS),
                                  OrderType.FAK, defer_exec=True)
        assert taken["status"] == "matched" and int(client.get_balance_allowance()["balance"]) < before
        got = []
        eventually(lambda: got.extend(e for e in events(read(ws, 0.3)) if e.get("id") in taken["tradeIDs"]) or
                   any(e["status"] == "FAILED" for e in got), 5, what="FAILED")
        assert [e["status"] for e in got] == ["MATCHED", "RETRYING", "FAILED"]
        assert int(client.get_balance_allowance()["balance"]) == before                # cash back, shares gone
        (trade,) = client.get_trades(TradeParams(id=taken["tradeIDs"][0]))
        assert trade["status"] == "TRADE_STATUS_FAILED" and trade["transaction_hash"].startswith("0x")
        # A trade that settles after it is indexed, while the failed one never shows (it never reached the chain).
        ok = client.post_order(client.create_order(OrderArgsV2(token_id=up, price=taking_price(client, up), size=6,
                                                               side="BUY"), OPTS),
                               OrderType.FAK, defer_exec=True)
        ok_tx = eventually(lambda: client.get_trades(TradeParams(id=ok["tradeIDs"][0]))[0]["transaction_hash"], 5,
                           what="the settled trade's transaction (known once mined)")
        ours = eventually(lambda: {r["transaction_hash"] for r in dapi(
            sim, "/v2/trades", user=client.get_address(), taker_only="false").json()["data"]} & {
            ok_tx, trade["transaction_hash"]}, 10, what="the settled trade indexed")
        assert ours == {ok_tx}
    finally:
        ws.close()


def test_market_channel_drops_on_demand(sim):
    ws = market_ws(sim, [json.loads(current_market(sim, "btc")["clobTokenIds"])[0]])
    try:
        ws.recv()
        httpx.post(f"{sim['control']}/faults", json={"market_ws_drop": {}})
        assert_closed_by_server(ws)
    finally:
        ws.close()
