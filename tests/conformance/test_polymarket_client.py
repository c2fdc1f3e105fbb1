"""polymarket-client (the unified official Python SDK) against polysim: every operation the copier or an operator
uses, through the SDK's public API, asserting the typed objects it returns."""
import asyncio
import time
from decimal import Decimal

import httpx
import pytest
from conftest import KEY_A, KEY_B, current_market, environment, open_market, resolve, state, tokens, wallet
from eth_account import Account
from polymarket import AsyncSecureClient, SecureClient
from polymarket.errors import RequestRejectedError
from polymarket.models.clob import AcceptedOrder, PriceRequest
from polymarket.streams import MarketBookEvent, UserOrderEvent, UserTradeEvent
from polymarket.streams._specs import MarketSpec, UserSpec
from support import eventually

CAP = "0.99"                                      # 1 - tick on a 0.01 market


def _client(sim, key: str, **kw) -> SecureClient:
    return SecureClient.create(private_key=key, wallet=Account.from_key(key).address, environment=environment(sim),
                               **kw)


@pytest.fixture(scope="module")
def a(sim):
    c = _client(sim, KEY_A)
    yield c
    c.cancel_all()
    c.close()


@pytest.fixture(scope="module")
def b(sim):
    c = _client(sim, KEY_B)
    yield c
    c.cancel_all()
    c.close()


def test_polymarket_client_credentials_are_derived_validated_and_deleted(sim):
    first = _client(sim, "0x" + "c3" * 32)
    creds = first.credentials
    assert first.fetch_api_keys() == (creds.key,)
    # Stored credentials are checked with GET /auth/api-keys before use.
    again = _client(sim, "0x" + "c3" * 32, credentials=creds)
    assert again.credentials == creds and again.get_closed_only_mode() is False
    again.delete_api_key()
    with pytest.raises(RequestRejectedError) as gone:
        again.fetch_api_keys()
    assert gone.value.status == 401
    # Deleted credentials fail the check, so the SDK creates a key again and works.
    renewed = _client(sim, "0x" + "c3" * 32, credentials=creds)
    assert renewed.fetch_api_keys() == (renewed.credentials.key,)
    for c in (first, again, renewed):
        c.close()


def test_polymarket_client_reads_gamma_markets_and_events_by_every_key(a, sim):
    m = current_market(sim)
    by_slug, by_id = a.get_market(slug=m["slug"]), a.get_market(id=m["id"])
    assert by_slug.condition_id == by_id.condition_id == m["conditionId"]
    event = a.get_event(slug=m["slug"])
    assert a.get_event(id=event.id).slug == m["slug"]
    assert event.series and all(s.id for s in event.series) and all(t.id for t in event.tags)
    listed = list(a.list_markets(closed=False, page_size=2).first_page().items)
    assert 0 < len(listed) <= 2 and all(x.state.closed is False for x in listed)
    walked = [x.slug for page in a.list_events(closed=False, page_size=2) for x in page.items]
    assert m["slug"] in walked and len(walked) == len(set(walked)), "keyset pages overlap or miss"


def test_polymarket_client_market_data_prices_are_the_book(a, sim):
    up, down = tokens(current_market(sim))
    book = a.get_order_book(asset_id=up)
    bid, ask = max(level.price for level in book.bids), min(level.price for level in book.asks)
    assert [b.asset_id for b in a.get_order_books(asset_ids=[up, down])] == [up, down]
    # Both taken from the same instant would be ideal; background makers requote, so compare within the spread.
    assert a.get_price(asset_id=up, side="BUY") <= a.get_price(asset_id=up, side="SELL")
    prices = a.get_prices(requests=[PriceRequest(asset_id=up, side="BUY"), PriceRequest(asset_id=up, side="SELL")])
    assert set(prices[up]) == {"BUY", "SELL"} and prices[up]["BUY"] < prices[up]["SELL"]
    assert Decimal("0") < a.get_midpoint(asset_id=up) < Decimal("1") and a.get_midpoints(asset_ids=[up, down])
    assert a.get_spread(asset_id=up) >= 0 and set(a.get_spreads(asset_ids=[up, down])) == {up, down}
    assert bid < ask
    single = a.get_last_trade_price(asset_id=up)
    assert single is None or (Decimal("0") < single.price < Decimal("1") and single.side in ("BUY", "SELL"))
    last = a.get_last_trade_prices(asset_ids=[up, down])
    assert {x.asset_id for x in last} == {up, down} and all(x.side in ("BUY", "SELL") for x in last)


def test_polymarket_client_buy_capped_at_one_minus_tick_is_accepted_and_matched(a, sim):
    up, _ = tokens(current_market(sim))
    resp = a.place_market_order(asset_id=up, side="BUY", amount="2", max_price=CAP, order_type="FAK")
    assert isinstance(resp, AcceptedOrder) and resp.status == "matched" and resp.trade_ids, resp
    assert resp.taking_amount > 0
    trade = eventually(lambda: next((t for t in a.list_account_trades().first_page().items
                                     if t.id == resp.trade_ids[0]), None), 10, 0.2, "the trade in /data/trades")
    assert trade.trader_side == "TAKER" and trade.side == "BUY" and trade.asset_id == up
    assert trade.maker_orders and all(mo.side in ("BUY", "SELL") for mo in trade.maker_orders)
    history = eventually(lambda: a.list_price_history(asset_id=up, interval="1h").first_page().items, 10, 0.3,
                         "the trade in the price history")
    assert all(Decimal("0") < p.price < Decimal("1") for p in history)


def test_polymarket_client_every_order_type_and_cancel(a, sim):
    m = current_market(sim)
    up, down = tokens(m)
    gtc = a.place_limit_order(asset_id=up, price="0.02", size="10", side="BUY")
    gtd = a.place_limit_order(asset_id=up, price="0.03", size="10", side="BUY", expiration=int(time.time()) + 600)
    post_only = a.place_limit_order(asset_id=down, price="0.02", size="10", side="BUY", post_only=True)
    batch = a.post_orders([a.create_limit_order(asset_id=down, price=p, size="6", side="BUY")
                           for p in ("0.04", "0.05")])
    live = [gtc, gtd, post_only, *batch]
    assert all(isinstance(r, AcceptedOrder) and r.status == "live" for r in live), live
    order = a.get_order(order_id=gtd.order_id)
    assert order.side == "BUY" and order.price == Decimal("0.03") and order.original_size == Decimal("10")
    open_ids = {o.id for o in a.list_open_orders(market=m["conditionId"]).first_page().items}
    assert {r.order_id for r in live} <= open_ids
    assert a.get_order_scoring(order_id=gtc.order_id) is False
    assert a.get_orders_scoring(order_ids=[gtc.order_id, gtd.order_id]) == {gtc.order_id: False, gtd.order_id: False}
    assert a.cancel_order(order_id=gtc.order_id).canceled == (gtc.order_id,)
    assert set(a.cancel_orders(order_ids=[gtd.order_id]).canceled) == {gtd.order_id}
    assert set(a.cancel_market_orders(asset_id=down).canceled) == {post_only.order_id, *(r.order_id for r in batch)}
    assert a.cancel_all().canceled == ()
    fok = a.place_market_order(asset_id=up, side="BUY", amount="5", max_price=CAP, order_type="FOK")
    assert isinstance(fok, AcceptedOrder) and fok.status == "matched"
    held = a.get_balance_allowance(asset_type="CONDITIONAL", asset_id=up).balance
    assert held >= 5 * 10**6, "a $5 buy below 0.99 holds more than 5 shares"
    sold = a.place_market_order(asset_id=up, side="SELL", shares="5", min_price="0.01", order_type="FAK")
    assert isinstance(sold, AcceptedOrder) and sold.status == "matched"
    assert a.get_balance_allowance(asset_type="CONDITIONAL", asset_id=up).balance == held - 5 * 10**6


def test_polymarket_client_account_balance_heartbeat_positions(a, sim):
    up, _ = tokens(current_market(sim))
    assert a.get_balance_allowance(asset_type="COLLATERAL").balance > 0
    first = a.send_order_heartbeat()
    assert a.send_order_heartbeat(heartbeat_id=first.heartbeat_id).heartbeat_id
    assert a.get_notifications() == ()
    bought = a.place_market_order(asset_id=up, side="BUY", amount="2", max_price=CAP, order_type="FAK")
    assert isinstance(bought, AcceptedOrder)
    position = eventually(lambda: next((p for p in a.list_positions(user=a.wallet).first_page().items
                                        if p.asset_id == up), None), 10, 0.2, "the position")
    assert position.status == "OPEN" and position.current_size > 0 and position.wallet.lower() == a.wallet.lower()
    trades = eventually(lambda: a.list_trades(user=a.wallet, taker_only=False).first_page().items, 10, 0.3,
                        "our Data API trades")
    assert all(t.wallet.lower() == a.wallet.lower() for t in trades)
    activity = a.list_activity(user=a.wallet).first_page().items
    assert activity and all(x.wallet.lower() == a.wallet.lower() for x in activity)


async def _until(handle, want, timeout: float, what: str):
    """Events from a subscription until want(events) holds (bounded)."""
    got = []

    async def read():
        async for event in handle:
            got.append(event)
            if want(got):
                return got
    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; got {[type(e).__name__ for e in got]}") from None


def test_polymarket_client_user_channel_receives_our_fills_typed(quiet_sim):
    """Acceptance: our own fills arrive on the SDK's user subscription, typed, every maker order with its side and
    wallet; once as taker (a BUY capped at 1 - tick into the other wallet's bid) and once as maker (our resting bid
    minted against the other wallet's complementary bid). On an empty book, so each fill is against the other wallet."""
    a, b = _client(quiet_sim, KEY_A), _client(quiet_sim, KEY_B)
    m = current_market(quiet_sim)
    up, down = tokens(m)

    async def run():
        client = await AsyncSecureClient.create(private_key=KEY_A, wallet=a.wallet,
                                                environment=environment(quiet_sim), credentials=a.credentials)
        before = state(quiet_sim)["user_ws_authenticated"]
        async with await client.subscribe(UserSpec(markets=[m["conditionId"]])) as handle:
            await asyncio.to_thread(eventually, lambda: state(quiet_sim)["user_ws_authenticated"] > before, 10, 0.1,
                                    "the server to register the subscription")
            b_bid = await asyncio.to_thread(b.place_limit_order, asset_id=down, price="0.4", size="10", side="BUY")
            taken = await asyncio.to_thread(a.place_market_order, asset_id=up, side="BUY", amount="3",
                                            max_price=CAP, order_type="FAK")
            resting = await asyncio.to_thread(a.place_limit_order, asset_id=up, price="0.5", size="6", side="BUY")
            await asyncio.to_thread(b.place_market_order, asset_id=down, side="BUY", amount="3", max_price="0.5",
                                    order_type="FAK")
            events = await _until(handle, lambda got: {e.payload.trader_side for e in got
                                                       if isinstance(e, UserTradeEvent)
                                                       and e.payload.status == "CONFIRMED"} >= {"TAKER", "MAKER"},
                                  20, "CONFIRMED trades as taker and as maker")
        await client.close()
        return b_bid, taken, resting, events

    try:
        b_bid, taken, resting, events = asyncio.run(run())
    finally:
        for c in (a, b):
            c.cancel_all()
            c.close()
    assert isinstance(taken, AcceptedOrder) and taken.status == "matched", taken
    trades = [e.payload for e in events if isinstance(e, UserTradeEvent)]
    as_taker = [t for t in trades if t.taker_order_id == taken.order_id]
    assert as_taker and all(t.trader_side == "TAKER" and t.side == "BUY" and t.asset_id == up for t in as_taker)
    theirs = next(mo for t in as_taker for mo in t.maker_orders)
    assert theirs.order_id == b_bid.order_id and theirs.side == "BUY" and theirs.asset_id == down
    assert theirs.maker_address.lower() == b.wallet.lower()
    as_maker = [t for t in trades if t.trader_side == "MAKER"]
    assert as_maker and all(resting.order_id in {mo.order_id for mo in t.maker_orders} for t in as_maker)
    for t in trades:
        assert t.maker_orders, t
        for mo in t.maker_orders:
            assert mo.side in ("BUY", "SELL") and mo.maker_address and mo.maker_address.startswith("0x"), mo
    assert {t.status for t in trades} >= {"MATCHED", "CONFIRMED"}
    ours = next(mo for t in as_maker for mo in t.maker_orders if mo.order_id == resting.order_id)
    assert ours.maker_address.lower() == a.wallet.lower() and ours.side == "BUY" and ours.asset_id == up
    assert ours.matched_amount == Decimal("6") and ours.price == Decimal("0.5")
    placed = [e.payload for e in events if isinstance(e, UserOrderEvent) and e.payload.id == resting.order_id]
    assert placed and placed[0].order_event_type == "PLACEMENT" and placed[0].status == "LIVE"
    assert placed[0].maker_address.lower() == a.wallet.lower() and placed[0].order_type == "GTC"


def test_polymarket_client_market_channel_book_and_changes(a, sim):
    up, down = tokens(current_market(sim))

    async def run():
        client = await AsyncSecureClient.create(private_key=KEY_A, wallet=a.wallet, environment=environment(sim),
                                                credentials=a.credentials)
        async with await client.subscribe(MarketSpec(asset_ids=[up, down], custom_feature_enabled=True)) as handle:
            events = await _until(handle, lambda got: any(isinstance(e, MarketBookEvent) for e in got), 10,
                                  "the book dump")
            order = await asyncio.to_thread(a.place_limit_order, asset_id=up, price="0.02", size="9", side="BUY")
            events += await _until(handle, lambda got: any(
                any(ch.price == Decimal("0.02") and ch.asset_id == up for ch in getattr(e.payload, "price_changes", ()))
                for e in got), 10, "our level in a price_change")
            await asyncio.to_thread(a.cancel_order, order_id=order.order_id)
        await client.close()
        return events

    events = asyncio.run(run())
    books = [e.payload for e in events if isinstance(e, MarketBookEvent)]
    assert {b.asset_id for b in books} >= {up} and all(b.bids or b.asks for b in books)


def test_polymarket_client_rejections_are_typed_errors(a, sim):
    up, _ = tokens(current_market(sim))
    with pytest.raises(RequestRejectedError) as bad:
        a.place_limit_order(asset_id=up, price="0.5", size="1", side="BUY")      # below the 5-share minimum
    assert bad.value.status == 400 and "lower than the minimum" in str(bad.value)
    unknown = httpx.get(f"{sim['clob']}/book", params={"token_id": "123"})
    assert unknown.status_code == 404


def test_polymarket_client_rtds_chainlink_prices(a, sim):
    """The SDK's RTDS stream (Chainlink topic): typed updates for the filtered symbol; the subscribe snapshot frame
    polysim sends first does not disturb it."""
    from polymarket.models.rtds_events import CryptoPricesChainlinkEvent
    from polymarket.streams._specs import CryptoPricesSpec

    async def run():
        client = await AsyncSecureClient.create(private_key=KEY_A, wallet=a.wallet, environment=environment(sim),
                                                credentials=a.credentials)
        spec = CryptoPricesSpec(topic="prices.crypto.chainlink", symbols=["btc/usd"])
        async with await client.subscribe(spec) as handle:
            events = await _until(handle, lambda got: len(got) >= 2, 15, "two Chainlink updates")
        await client.close()
        return events

    events = asyncio.run(run())
    assert all(isinstance(e, CryptoPricesChainlinkEvent) and e.payload.symbol == "btc/usd" for e in events), events
    assert all(e.payload.value > 0 for e in events) and events[0].payload.timestamp <= events[1].payload.timestamp


# ---- after the resolution: redeem and merge, from an EOA (node) and from a deposit wallet (relayer) ----------
KEY_EOA = "0x" + "a7" * 32
KEY_OWNER = "0x" + "a8" * 32


def _approve_adapter(client) -> None:
    """The one approval a redemption needs: the CTF's operator approval of the collateral adapter."""
    from polymarket._internal.environment import PRODUCTION_CONFIG
    from polymarket.calls import erc1155_set_approval_for_all_call
    call = erc1155_set_approval_for_all_call(token_address=PRODUCTION_CONFIG.conditional_tokens,
                                             operator=PRODUCTION_CONFIG.collateral_adapter)
    assert client.execute_transaction(calls=[call]).wait().transaction_hash


def test_polymarket_client_eoa_merges_and_redeems_through_the_node(life_sim):
    s = life_sim
    me = Account.from_key(KEY_EOA).address
    eoa = SecureClient.create(private_key=KEY_EOA, wallet=me, environment=environment(s))
    m = open_market(s)
    up, down = tokens(m)
    for token in (up, down):
        assert eoa.place_market_order(asset_id=token, side="BUY", amount="5", max_price=CAP,
                                      order_type="FAK").status == "matched"
    held = {p["token_id"]: p["units"] for p in wallet(s, me)["positions"]}
    sets = min(held[up], held[down])
    _approve_adapter(eoa)
    before = wallet(s, me)
    merged = eoa.merge_positions(condition_id=m["conditionId"], amount="max").wait()
    assert merged.transaction_hash and merged.transaction_id is None            # sent by the wallet itself
    after_merge = wallet(s, me)
    assert after_merge["pusd_units"] == before["pusd_units"] + sets
    assert int(after_merge["pol_wei"]) < int(before["pol_wei"])                   # it paid the gas
    winner = resolve(s, m)
    redeemed = eoa.redeem_positions(condition_id=m["conditionId"]).wait()
    left = {p["token_id"]: p["units"] for p in wallet(s, me)["positions"]}
    assert left == {up: 0, down: 0} and redeemed.transaction_hash
    won = held[up if winner == "Up" else down] - sets
    assert wallet(s, me)["pusd_units"] == after_merge["pusd_units"] + won
    closed = eoa.list_positions(user=me, condition_id=m["conditionId"], status="CLOSED").first_page().items
    assert {p.asset_id for p in closed} == {up, down} and all(p.current_size == 0 for p in closed)
    eoa.close()


def test_polymarket_client_deposit_wallet_redeems_gas_free_through_the_relayer(life_sim):
    from polymarket._internal.environment import PRODUCTION_CONFIG
    from polymarket._internal.wallet import derive_beacon_deposit_wallet_address
    from polymarket.auth import RelayerApiKey
    s = life_sim
    owner = Account.from_key(KEY_OWNER).address
    deposit_wallet = derive_beacon_deposit_wallet_address(owner, PRODUCTION_CONFIG.wallet_derivation)
    httpx.post(f"{s['control']}/wallets/fund", json={"address": deposit_wallet, "owner": owner, "pusd": 50},
               timeout=5)
    # The SDK's own flow: no wallet given, so it derives the owner's deposit wallet and asks the relayer about it.
    dw = SecureClient.create(private_key=KEY_OWNER, environment=environment(s),
                             api_key=RelayerApiKey(key="00000000-0000-4000-8000-0000000000a8", address=owner))
    assert str(dw._ctx.wallet).lower() == deposit_wallet.lower() and dw._ctx.wallet_type == "DEPOSIT_WALLET"
    m = open_market(s)
    up, _ = tokens(m)
    bought = dw.place_market_order(asset_id=up, side="BUY", amount="5", max_price=CAP, order_type="FAK")
    assert bought.status == "matched"
    held = next(p["units"] for p in wallet(s, deposit_wallet)["positions"] if p["token_id"] == up)
    _approve_adapter(dw)
    resolve(s, m, "Up")
    # The positions index sees the resolution a little later; then the SDK's typed Position says redeemable.
    (row,) = eventually(lambda: dw.list_positions(user=deposit_wallet, status="REDEEMABLE").first_page().items,
                        15, 0.3, "the position to be redeemable")
    assert row.asset_id == up and row.redeemable is True and row.current_price == 1
    before = wallet(s, deposit_wallet)
    outcome = dw.redeem_positions(condition_id=m["conditionId"]).wait()
    assert outcome.transaction_id and outcome.transaction_hash                  # the relayer's id and its tx
    after = wallet(s, deposit_wallet)
    assert after["pusd_units"] == before["pusd_units"] + held and after["pol_wei"] == before["pol_wei"] == "0"
    assert after["deposit_wallet"]["nonce"] == before["deposit_wallet"]["nonce"] + 1
    dw.close()
