"""py-clob-client-v2 against polysim, calling the client the way the repository's examples do (each test names the
examples it mirrors; the examples themselves are not copied). Examples that need another service (approvals over a
Polygon RPC, builder keys, rewards) are listed in docs/polysim.md as not served."""
import json
import threading
import time

import pytest
import websocket
from conftest import current_market, tokens
from eth_account import Account
from py_clob_client_v2 import (
    ApiCreds,
    AssetType,
    BalanceAllowanceParams,
    BookParams,
    ClobClient,
    DropNotificationParams,
    MarketOrderArgs,
    OpenOrderParams,
    OrderArgs,
    OrderMarketCancelParams,
    OrderPayload,
    OrderScoringParams,
    OrdersScoringParams,
    OrderType,
    PartialCreateOrderOptions,
    PostOrdersV2Args,
    PriceHistoryInterval,
    PricesHistoryParams,
    Side,
    TradeParams,
)
from py_clob_client_v2.exceptions import PolyApiException
from support import eventually

PK1, PK2 = "0x" + "d4" * 32, "0x" + "e5" * 32
OPTIONS = PartialCreateOrderOptions(tick_size="0.01")


@pytest.fixture(scope="module")
def creds(sim):
    """keys/create_api_key.py, keys/derive_api_key.py, keys/create_or_derive_api_key.py."""
    out = {}
    for pk in (PK1, PK2):
        l1 = ClobClient(host=sim["clob"], chain_id=137, key=pk)
        created = l1.create_api_key()
        assert isinstance(created, ApiCreds) and created.api_key and created.api_secret and created.api_passphrase
        assert l1.derive_api_key() == created == l1.create_or_derive_api_key()
        out[pk] = created
    return out


@pytest.fixture(scope="module")
def client1(sim, creds):
    c = ClobClient(host=sim["clob"], chain_id=137, key=PK1, creds=creds[PK1])
    yield c
    c.cancel_all()


@pytest.fixture(scope="module")
def client2(sim, creds):
    c = ClobClient(host=sim["clob"], chain_id=137, key=PK2, creds=creds[PK2])
    yield c
    c.cancel_all()


def test_examples_keys_get_and_delete_api_key(sim):
    """keys/get_api_keys.py, keys/delete_api_key.py, scoring/get_closed_only_mode.py."""
    pk = "0x" + "f6" * 32
    creds = ClobClient(host=sim["clob"], chain_id=137, key=pk).create_or_derive_api_key()
    client = ClobClient(host=sim["clob"], chain_id=137, key=pk, creds=creds)
    assert client.get_api_keys() == {"apiKeys": [creds.api_key]}
    assert client.get_closed_only_mode() == {"closed_only": False}
    assert client.delete_api_key() == "OK"
    with pytest.raises(PolyApiException) as gone:
        client.get_api_keys()
    assert gone.value.status_code == 401


def test_examples_market_data(sim):
    """market/get_server_time.py, get_markets.py, get_orderbook(s).py, get_price(s).py, get_midpoint(s).py,
    get_spread(s).py, get_last_trade(s)_price(s).py: the L0 client, no key."""
    m = current_market(sim)
    yes, no = tokens(m)
    client = ClobClient(host=sim["clob"], chain_id=137)
    assert client.get_ok() == "OK"
    assert abs(client.get_server_time() - time.time()) < 5
    assert client.get_market(m["conditionId"])["condition_id"] == m["conditionId"]
    for page in (client.get_markets(), client.get_simplified_markets()):
        assert m["conditionId"] in {x["condition_id"] for x in page["data"]} and page["next_cursor"]
    for page in (client.get_sampling_markets(), client.get_sampling_simplified_markets()):
        assert page["data"] == [] and page["count"] == 0
    book = client.get_order_book(yes)
    assert book["asset_id"] == yes and book["bids"] and book["asks"]
    assert client.get_order_book_hash(book) == book["hash"], "the SDK recomputes the book hash"
    assert [b["asset_id"] for b in client.get_order_books([BookParams(token_id=yes), BookParams(token_id=no)])] == \
        [yes, no]
    buy, sell = client.get_price(yes, "BUY")["price"], client.get_price(yes, "SELL")["price"]
    assert isinstance(buy, str) and float(buy) < float(sell)
    prices = client.get_prices([BookParams(token_id=yes, side=Side.BUY), BookParams(token_id=yes, side=Side.SELL),
                                BookParams(token_id=no, side=Side.BUY), BookParams(token_id=no, side=Side.SELL)])
    assert set(prices) == {yes, no} and all(set(v) == {"BUY", "SELL"} for v in prices.values())
    assert 0 < float(client.get_midpoint(yes)["mid"]) < 1
    assert set(client.get_midpoints([BookParams(token_id=yes), BookParams(token_id=no)])) == {yes, no}
    assert float(client.get_spread(yes)["spread"]) >= 0
    assert set(client.get_spreads([BookParams(token_id=yes), BookParams(token_id=no)])) == {yes, no}
    last = client.get_last_trade_price(yes)
    assert 0 < float(last["price"]) < 1 and last["side"] in ("BUY", "SELL")
    lasts = client.get_last_trades_prices([BookParams(token_id=yes), BookParams(token_id=no)])
    assert {x["token_id"] for x in lasts} == {yes, no}


def test_examples_orders_resting_batch_and_cancels(client1, sim):
    """orders/gtc_limit_buy.py, gtc_limit_sell.py (after a buy), gtd_limit_buy.py, multiple_orders.py,
    populate_orderbook.py, cancel_order.py, cancel_orders.py, cancel_market_orders.py, cancel_all.py,
    account/get_order.py, get_open_orders.py, scoring/is_order_scoring.py, are_orders_scoring.py."""
    m = current_market(sim)
    yes, no = tokens(m)
    gtc = client1.create_and_post_order(order_args=OrderArgs(token_id=yes, price=0.04, side=Side.BUY, size=100),
                                        options=OPTIONS, order_type=OrderType.GTC)
    gtd = client1.create_and_post_order(order_args=OrderArgs(token_id=yes, price=0.04, side=Side.BUY, size=100,
                                                             expiration=int(time.time()) + 70),
                                        options=OPTIONS, order_type=OrderType.GTD)
    assert gtc["success"] and gtc["status"] == "live" and gtd["status"] == "live"
    batch = client1.post_orders([PostOrdersV2Args(order=client1.create_order(
        OrderArgs(token_id=no, price=p, side=Side.BUY, size=100), OPTIONS), orderType=OrderType.GTC)
        for p in (0.03, 0.04)])
    assert [x["status"] for x in batch] == ["live", "live"]
    assert client1.get_order(gtc["orderID"])["price"] == "0.04"
    assert {o["id"] for o in client1.get_open_orders(OpenOrderParams(market=m["conditionId"]))} >= \
        {gtc["orderID"], gtd["orderID"], *(x["orderID"] for x in batch)}
    assert client1.get_open_orders(OpenOrderParams(asset_id=no), only_first_page=True)
    assert client1.is_order_scoring(OrderScoringParams(orderId=gtc["orderID"])) == {"scoring": False}
    assert client1.are_orders_scoring(OrdersScoringParams(orderIds=[gtc["orderID"]])) == {gtc["orderID"]: False}
    assert client1.cancel_order(OrderPayload(orderID=gtc["orderID"]))["canceled"] == [gtc["orderID"]]
    assert client1.cancel_orders([gtd["orderID"]])["canceled"] == [gtd["orderID"]]
    assert set(client1.cancel_market_orders(OrderMarketCancelParams(asset_id=no))["canceled"]) == \
        {x["orderID"] for x in batch}
    assert client1.cancel_all() == {"canceled": [], "not_canceled": {}}


def test_examples_two_wallets_match_and_market_orders(quiet_sim):
    """orders/match_orders.py, marketable_limit_sell.py, marketable_limit_buy.py, market_buy.py (FOK),
    market_sell.py (FOK), plus a market BUY capped at 1 - tick (FAK): on an empty book wallet 2 seeds and wallet 1
    takes, so every fill is against the other wallet's order (the venue never matches a wallet with itself)."""
    w1, w2 = (ClobClient(host=quiet_sim["clob"], chain_id=137, key=pk) for pk in (PK1, PK2))
    for w in (w1, w2):
        w.set_api_creds(w.create_or_derive_api_key())
    yes, no = tokens(current_market(quiet_sim))

    def order(w, token, price, side, size, kind=OrderType.GTC):
        return w.create_and_post_order(order_args=OrderArgs(token_id=token, price=price, side=side, size=size),
                                       options=OPTIONS, order_type=kind)

    def filled(w, resp):
        return w.get_order(resp["orderID"])["status"] == "MATCHED"

    # match_orders.py: a bid and the complementary bid mint a YES and a NO share per pair.
    bid = order(w1, yes, 0.5, Side.BUY, 100)
    assert bid["status"] == "live"
    minted = order(w2, no, 0.5, Side.BUY, 100)
    assert minted["status"] == "matched" and filled(w1, bid)
    # marketable_limit_sell.py: wallet 2 bids, wallet 1 sells into it at the same price.
    seed = order(w2, yes, 0.5, Side.BUY, 20)
    sold = order(w1, yes, 0.5, Side.SELL, 20)
    assert sold["status"] == "matched" and filled(w2, seed)
    # marketable_limit_buy.py: wallet 2 offers NO, wallet 1 buys it at the same price.
    ask = order(w2, no, 0.5, Side.SELL, 20)
    bought = order(w1, no, 0.5, Side.BUY, 20)
    assert bought["status"] == "matched" and filled(w2, ask)
    # market_buy.py (FOK, dollars) against wallet 1's YES offer.
    ask = order(w1, yes, 0.5, Side.SELL, 30)
    fok = w2.create_and_post_market_order(order_args=MarketOrderArgs(token_id=yes, amount=10, side=Side.BUY,
                                                                     order_type=OrderType.FOK),
                                          options=OPTIONS, order_type=OrderType.FOK)
    assert fok["status"] == "matched" and float(fok["takingAmount"]) == pytest.approx(20e6), fok
    # market_sell.py (FOK, shares) into wallet 2's bid.
    bid = order(w2, yes, 0.4, Side.BUY, 20)
    sell = w1.create_and_post_market_order(order_args=MarketOrderArgs(token_id=yes, amount=10, side=Side.SELL,
                                                                      order_type=OrderType.FOK),
                                           options=OPTIONS, order_type=OrderType.FOK)
    assert sell["status"] == "matched" and w2.get_order(bid["orderID"])["size_matched"] == "10"
    # The acceptance case: a market BUY capped at 1 - tick (signed as 0.99 + a hair) fills at the resting price.
    for w in (w1, w2):
        w.cancel_all()                   # wallet 2's remaining YES bid at 0.4 would be a NO offer at 0.6 too
    ask = order(w2, no, 0.6, Side.SELL, 10)
    capped = w1.create_and_post_market_order(
        order_args=MarketOrderArgs(token_id=no, amount=3, side=Side.BUY, price=0.99, order_type=OrderType.FAK),
        options=OPTIONS, order_type=OrderType.FAK)
    assert capped["success"] and capped["status"] == "matched", capped
    shares = int(capped["takingAmount"]) / 1e6
    assert shares == pytest.approx(3 / 0.99, abs=1e-4) and int(capped["makingAmount"]) == round(shares * 0.6 * 1e6)
    assert float(w2.get_order(ask["orderID"])["size_matched"]) == pytest.approx(shares)
    for w in (w1, w2):
        w.cancel_all()


def test_examples_account(client1, sim):
    """account/get_balance_allowance.py, update_balance_allowance.py, get_trades.py, get_trades_paginated.py,
    get_notifications.py, drop_notifications.py, market/get_prices_history.py."""
    m = current_market(sim)
    yes, no = tokens(m)
    bought = client1.create_and_post_market_order(
        order_args=MarketOrderArgs(token_id=yes, amount=2, side=Side.BUY, price=0.99, order_type=OrderType.FAK),
        options=OPTIONS, order_type=OrderType.FAK)
    assert bought["status"] == "matched"
    collateral = client1.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
    assert int(collateral["balance"]) > 0 and collateral["allowances"]
    held = client1.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=yes))
    assert int(held["balance"]) > 0
    client1.update_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
    me = Account.from_key(PK1).address
    trades = client1.get_trades(TradeParams(market=m["conditionId"], maker_address=me))
    assert trades and all(t["market"] == m["conditionId"] for t in trades)
    page = client1.get_trades_paginated(TradeParams(market=m["conditionId"], maker_address=me))
    assert page["trades"] and "next_cursor" in page
    assert client1.get_notifications() == []
    assert client1.drop_notifications(DropNotificationParams(ids=["3"])) == "OK"
    now = int(time.time())
    history = client1.get_prices_history(PricesHistoryParams(market=yes, start_ts=now - 1000, end_ts=now))
    assert history["history"] and all(0 < p["p"] < 1 and p["t"] <= now for p in history["history"])
    hourly = client1.get_prices_history(PricesHistoryParams(market=yes, interval=PriceHistoryInterval.ONE_HOUR,
                                                             fidelity=1))
    assert hourly["history"]


def test_examples_user_and_market_sockets(client1, creds, sim):
    """account/user_socket.py and market/market_socket.py: websocket-client, the examples' subscription messages,
    text PING answered; our order shows on both channels."""
    m = current_market(sim)
    yes, no = tokens(m)
    got = {"user": [], "market": []}
    c = creds[PK1]
    subs = {"user": {"auth": {"apiKey": c.api_key, "secret": c.api_secret, "passphrase": c.api_passphrase},
                     "type": "user", "markets": [m["conditionId"]], "assets_ids": [], "initial_dump": True},
            "market": {"type": "market", "markets": [], "assets_ids": [no, yes], "initial_dump": True}}
    sockets = {}
    for name, sub in subs.items():
        ws = websocket.WebSocketApp(f"{sim['clob']}".replace("http", "ws") + f"/ws/{name}",
                                    on_open=lambda ws, sub=sub: (ws.send(json.dumps(sub)), ws.send("PING")),
                                    on_message=lambda ws, msg, name=name: got[name].append(msg))
        threading.Thread(target=ws.run_forever, daemon=True).start()
        sockets[name] = ws
    try:
        eventually(lambda: "PONG" in got["user"] and "PONG" in got["market"], 10, 0.1, "both PONGs")
        order = client1.create_and_post_order(order_args=OrderArgs(token_id=no, price=0.02, side=Side.BUY, size=50),
                                              options=OPTIONS, order_type=OrderType.GTC)
        placed = eventually(lambda: [d for d in map(json.loads, (x for x in got["user"] if x.startswith("{")))
                                     if d.get("id") == order["orderID"]], 10, 0.1, "our PLACEMENT")
        assert placed[0]["type"] == "PLACEMENT" and placed[0]["side"] == "BUY"
        eventually(lambda: any(x.startswith("[") and any(e["event_type"] == "book" for e in json.loads(x))
                               for x in got["market"]), 10, 0.1, "the book dump")
        client1.cancel_order(OrderPayload(orderID=order["orderID"]))
    finally:
        for ws in sockets.values():
            ws.close()
