"""Positions kept while running: the positions endpoint parsed at the edge (hostile answers counted and skipped),
reconciliation with our address (drift alerted once, never overwritten), winners from Gamma and the index, and the
PnL snapshots."""
import json
import math
from dataclasses import replace

import httpx
import pytest
from helpers import RecordingMetrics
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.clock import FakeClock
from copier.config import Config
from copier.errors import MalformedMessage
from copier.pnl_report import ledger_from_store
from copier.position_watch import PositionsClient, PositionWatch
from copier.positions import SourceHoldings
from copier.schemas import parse_gamma_winner, parse_positions
from copier.store import Store
from copier.types import BookTop, MarketResolved, OrderIntent, OrderStatus, Side, Skip, SourceFill

CID = "0x" + "ab" * 32
UP, DOWN = "1111", "2222"
OURS = "0x" + "12" * 20
SOURCE = Config().copy.source_wallet
T0 = 1_800_000_000.0


def row(asset=UP, size=10.0, cur=0.5, redeemable=False, **over):
    doc = {"proxyWallet": OURS, "asset": asset, "conditionId": CID, "size": size, "avgPrice": 0.4,
           "initialValue": 4.0, "currentValue": 5.0, "cashPnl": 0.0, "curPrice": cur,
           "redeemable": redeemable, "mergeable": False, "outcome": "Up", "outcomeIndex": 0, "title": "t"}
    doc.update(over)
    return doc


class RecordingAlerts:
    def __init__(self):
        self.sent = []

    def alert(self, kind, message, **context):
        self.sent.append((kind, message, context))


class StaticBooks:
    def __init__(self, books=None):
        self.books = books or {}

    def top(self, asset):
        return self.books.get(asset)


class Venue:
    """The Data API's /positions and Gamma's /markets as a handler for a real httpx client."""

    def __init__(self):
        self.positions = {OURS: [], SOURCE: []}
        self.body: bytes | None = None         # a raw answer instead of the rows
        self.gamma = []
        self.requests = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/markets":
            # Gamma lists only open markets unless closed=true is asked for (its default since 2026-04).
            closed = request.url.params.get("closed", "false") == "true"
            rows = [m for m in self.gamma if not isinstance(m, dict) or m.get("closed", False) == closed] \
                if isinstance(self.gamma, list) else self.gamma
            return httpx.Response(200, json=rows)
        if self.body is not None:
            return httpx.Response(200, content=self.body)
        return httpx.Response(200, json=self.positions.get(request.url.params["user"], []))


def intent(iid, side=Side.BUY, size=10.0, price=0.4, asset=UP):
    return OrderIntent(intent_id=iid, condition_id=CID, asset=asset, outcome="Up", side=side, size=size,
                       price_cap=price, notional=size * price, source_price=price, fill_keys=(f"k{iid}",),
                       kind="single", decided_at=T0, opening=side is Side.BUY, market_end_ts=T0 + 900,
                       fee_rate=0.0, fee_exponent=1.0)


def source_fill(n, side=Side.BUY, size=10.0, price=0.4, t=T0):
    return SourceFill(tx_hash=f"0x{n:064x}", asset=UP, condition_id=CID, outcome="Up", outcome_index=0, side=side,
                      price=price, size=size, match_ts=t, recv_ns=int(t * 1e9), feed="rtds.trades")


def filled(store, iid, side=Side.BUY, size=10.0, price=0.4, asset=UP, at=T0, n=0):
    store.record_decision([source_fill(n or hash(iid) % 10_000, side, size, price, at)],
                          intent(iid, side, size, price, asset), int(at * 1e9))
    store.record_signed(iid, f"0xhash{iid}", "{}", int(at * 1e9))
    store.update_order(iid, int(at * 1e9), status=OrderStatus.MATCHED, filled_size=size, avg_price=price,
                       submit_ns=int(at * 1e9), ack_ns=int(at * 1e9))


@pytest.fixture()
def world(tmp_path):
    venue = Venue()
    http = httpx.Client(transport=httpx.MockTransport(venue), base_url="http://venue")
    store = Store.open(str(tmp_path / "s.sqlite"))
    clock = FakeClock(T0)
    metrics, alerts = RecordingMetrics(), RecordingAlerts()
    client = PositionsClient("http://venue", metrics=metrics, alerts=alerts, clock=clock, http=http)
    books = StaticBooks()
    watch = PositionWatch(Config(), store=store, books=books, client=client, clock=clock, metrics=metrics,
                          alerts=alerts, our_address=OURS, gamma=http)
    yield venue, store, clock, metrics, alerts, watch, books
    store.close()


# ---- the edge ----------------------------------------------------------------------------------------------------
def test_parse_positions_reads_the_documented_row():
    (p,) = parse_positions(json.dumps([row(size=12.5, cur=1, redeemable=True)]).encode()).positions
    assert (p.asset, p.condition_id, p.size, p.cur_price, p.redeemable, p.outcome) == (UP, CID, 12.5, 1.0, True, "Up")


@pytest.mark.parametrize("body", [
    b"<html><body>502 Bad Gateway</body></html>",
    b'{"error": "rate limited"}',
    b"[" * 5000 + b"]" * 5000,
    b"\xff\xfe not utf-8",
    b'[{"asset": "1111", "conditionId": "0x%s", "size": NaN}]' % (b"ab" * 32),
    json.dumps([row(avgPrice=float("inf"))]).encode(),
])
def test_parse_positions_hostile_documents_raise_malformed(body):
    with pytest.raises(MalformedMessage):
        parse_positions(body)


@pytest.mark.parametrize("bad", [
    {"size": "ten"}, {"size": 1e300}, {"size": -1}, {"size": None}, {"curPrice": 1.5}, {"redeemable": "true"},
    {"conditionId": "0x12"}, {"asset": {"id": 1}}, {"outcomeIndex": True}, {"size": "1e999"}, {"asset": ""},
])
def test_parse_positions_a_bad_row_is_refused_alone(bad):
    answer = parse_positions(json.dumps([row(asset=DOWN), row(**bad)], allow_nan=True).encode())
    assert [p.asset for p in answer.positions] == [DOWN] and len(answer.refused) == 1


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4)))
def test_parse_positions_garbage_never_raises_anything_but_malformed(value):
    try:
        parse_positions(json.dumps(value, allow_nan=True))
    except MalformedMessage:
        pass


def test_gamma_winner_only_for_a_closed_market_with_prices_one_and_zero():
    doc = {"conditionId": CID, "closed": True, "clobTokenIds": json.dumps([UP, DOWN]), "outcomePrices": '["0", "1"]'}
    assert parse_gamma_winner(doc) == (CID, DOWN)
    assert parse_gamma_winner({**doc, "closed": False}) is None
    assert parse_gamma_winner({**doc, "outcomePrices": '["0.5", "0.5"]'}) is None
    with pytest.raises(MalformedMessage):
        parse_gamma_winner({**doc, "outcomePrices": '["NaN", "1"]'})


# ---- the client ----------------------------------------------------------------------------------------------
def test_positions_client_bad_answers_are_counted_and_give_none(world):
    venue, _, _, metrics, _, watch, _ = world
    for body in (b"<html>oops</html>", b"[1, 2]", json.dumps([row(size=float("nan"))]).encode()):
        venue.body = body
        assert watch.client.fetch(OURS) is None
    assert metrics.counts["feed.refused.not_json"] == 2 and metrics.counts["feed.refused.malformed"] >= 1
    venue.body = None
    venue.positions[OURS] = [row()]
    assert [p.size for p in watch.client.fetch(OURS)] == [10.0]


def test_positions_client_http_error_gives_none():
    def down(request):
        raise httpx.ConnectError("refused")
    client = PositionsClient("http://x", metrics=RecordingMetrics(), alerts=None, clock=FakeClock(),
                             http=httpx.Client(transport=httpx.MockTransport(down), base_url="http://x"))
    assert client.fetch(OURS) is None and client.metrics.counts["positions.fetch_errors"] == 1


# ---- reconciliation ------------------------------------------------------------------------------------------
def test_reconcile_agreement_alerts_nothing(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    clock.advance(600)
    venue.positions[OURS] = [row(size=10.0)]
    watch.reconcile()
    assert alerts.sent == [] and metrics.gauges["positions.drift_tokens"] == 0


def test_reconcile_drift_is_alerted_once_and_never_overwritten(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    clock.advance(600)
    venue.positions[OURS] = [row(size=7.0), row(asset=DOWN, size=3.0)]
    watch.reconcile()
    watch.reconcile()
    (alert,) = alerts.sent                                     # one per pass that found new drift, not per pass
    assert alert[0] == "position_drift" and "on 2 token(s)" in alert[1] and "store 10.000000 / venue 7.000000" \
        in alert[1]
    assert metrics.gauges["positions.drift_tokens"] == 2 and metrics.counts["positions.drift"] == 2
    assert watch.ledger.positions[UP].size == 10.0             # the store's account stands
    assert ledger_from_store(store).positions[UP].size == 10.0
    venue.positions[OURS] = [row(size=10.0)]
    watch.reconcile()
    assert metrics.gauges["positions.drift_tokens"] == 0 and len(alerts.sent) == 1


def test_reconcile_skips_tokens_traded_within_the_grace_and_redeemed_winners(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    venue.positions[OURS] = []                                  # the index has not seen the fill yet
    watch.reconcile()
    assert alerts.sent == []
    clock.advance(600)
    store.record_resolution(CID, UP, clock.now(), "market_ws")
    watch.reconcile()                                           # resolved and gone from the index: redeemed
    assert alerts.sent == []


def test_reconcile_on_paper_asks_nothing(world):
    venue, store, clock, metrics, alerts, watch, books = world
    watch.our_address = ""
    watch.reconcile()
    assert venue.requests == []


def test_reconcile_a_redeemable_row_at_one_is_a_resolution(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    clock.advance(600)
    venue.positions[OURS] = [row(size=10.0, cur=1.0, redeemable=True)]
    watch.reconcile()
    assert store.resolutions()[0]["origin"] == "positions" and watch.ledger.positions[UP].redeemable


# ---- winners, marks, snapshots -------------------------------------------------------------------------------
def test_market_resolved_and_gamma_record_the_first_winner_only(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    clock.advance(1000)                                         # past the market's end
    venue.gamma = [{"conditionId": CID, "closed": True, "clobTokenIds": json.dumps([UP, DOWN]),
                    "outcomePrices": '["1", "0"]'}]
    watch.check_resolutions()
    assert [r["origin"] for r in store.resolutions()] == ["gamma"]
    watch.on_resolved(MarketResolved(CID, (UP, DOWN), DOWN, clock.now()))
    assert [(r["origin"], r["winning_asset"]) for r in store.resolutions()] == [("gamma", UP)]
    assert math.isclose(watch.refresh().realized_total(), 10 - 4.0)


def test_check_resolutions_asks_gamma_only_for_held_markets_past_their_end(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    watch.check_resolutions()
    assert venue.requests == []
    clock.advance(1000)
    watch.check_resolutions()
    assert [r.url.params["condition_ids"] for r in venue.requests] == [CID]


def test_snapshot_marks_on_the_book_and_writes_a_row_when_the_valuation_changes(world):
    venue, store, clock, metrics, alerts, watch, books = world
    filled(store, "a")
    filled(store, "b", side=Side.SELL, size=4.0, price=0.6, at=T0 + 1, n=77)
    books.books[UP] = BookTop(UP, ((0.54, 10),), ((0.56, 10),))
    watch.snapshot()
    (r,) = store.latest_pnl_snapshot()
    assert r["size"] == 6.0 and r["mark"] == 0.55 and math.isclose(r["cost"], 2.4)
    assert math.isclose(r["unrealized"], 6 * 0.55 - 2.4) and math.isclose(r["realized"], 4 * 0.6 - 1.6)
    assert math.isclose(metrics.gauges["pnl.realized_usd"], 0.8)
    clock.advance(60)
    watch.snapshot()                                            # nothing moved: nothing written
    assert [r["at"] for r in store.latest_pnl_snapshot()] == [T0]
    books.books[UP] = BookTop(UP, ((0.58, 10),), ((0.60, 10),))
    clock.advance(60)
    watch.snapshot()
    (r,) = store.latest_pnl_snapshot()
    assert r["at"] == T0 + 120 and r["mark"] == 0.59
    store.record_resolution(CID, DOWN, clock.now(), "market_ws")
    clock.advance(60)
    watch.snapshot()
    (r,) = store.latest_pnl_snapshot()
    assert r["mark"] == 0.0 and r["unrealized"] == 0 and math.isclose(r["realized"], 0.8 - 2.4)
    assert metrics.gauges["positions.open"] == 0


def test_seed_source_from_the_endpoint_or_else_from_the_stored_fills(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    venue.positions[SOURCE] = [row(size=300.0)]
    holdings = SourceHoldings()
    watch.seed_source(holdings, SOURCE)
    assert holdings.held(UP) == 300.0
    store.record_decision([source_fill(5, size=40.0, t=T0 - 10)], Skip("s", CID, UP, "Up", Side.BUY, "x", "",
                                                                       ("k",), "single", T0), int(T0 * 1e9))
    venue.body = b"<html>down</html>"
    watch.seed_source(holdings, SOURCE)
    assert holdings.held(UP) == 40.0


def test_refresh_incremental_passes_agree_with_one_fold_of_the_whole_store(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a", at=clock.now())
    watch.refresh()
    clock.advance(1)
    filled(store, "b", side=Side.SELL, size=3.0, price=0.5, at=clock.now(), n=51)
    filled(store, "c", asset=DOWN, size=5.0, price=0.6, at=clock.now(), n=52)
    watch.refresh()
    clock.advance(1)
    store.record_resolution(CID, UP, clock.now(), "market_ws")
    watch.refresh()
    whole = ledger_from_store(store)
    assert watch.refresh().positions == whole.positions
    assert math.isclose(watch.ledger.realized_total(), whole.realized_total())
    assert math.isclose(whole.realized_total(), (3 * 0.5 - 1.2) + (7 * 1.0 - 2.8) + (0 - 3.0))


@pytest.mark.parametrize("status", [404, 429, 500, 503])
def test_positions_client_an_error_status_gives_none_and_is_counted(status):
    client = PositionsClient("http://x", metrics=RecordingMetrics(), alerts=None, clock=FakeClock(), http=httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(status, text="<html>no</html>")), base_url="http://x"))
    assert client.fetch(OURS) is None and client.metrics.counts["positions.fetch_errors"] == 1


def test_check_resolutions_a_hostile_gamma_answer_is_counted_and_records_nothing(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    clock.advance(1000)
    for gamma in ("<html>", [{"conditionId": CID, "closed": True, "clobTokenIds": "[", "outcomePrices": "[1, 0]"}],
                  [{"conditionId": CID, "closed": True, "clobTokenIds": json.dumps([UP, DOWN]),
                    "outcomePrices": json.dumps(["1", "1"])}]):
        venue.gamma = gamma
        watch.check_resolutions()
    assert store.resolutions() == [] and metrics.counts["feed.malformed"] >= 1


def test_positions_client_pages_until_a_short_page(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    venue.positions[OURS] = [row(asset=str(1000 + n), size=1.0) for n in range(501)]

    def paged(request):
        rows = venue.positions[OURS]
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        return httpx.Response(200, json=rows[offset:offset + limit])
    client = PositionsClient("http://x", metrics=metrics, alerts=None, clock=clock,
                             http=httpx.Client(transport=httpx.MockTransport(paged), base_url="http://x"))
    assert len(client.fetch(OURS)) == 501


def test_seed_source_is_recorded_for_replay(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    venue.positions[SOURCE] = [row(size=300.0), row(asset=DOWN, size=0.0)]
    watch.seed_source(SourceHoldings(), SOURCE)
    clock.advance(5)
    venue.positions[SOURCE] = []
    watch.seed_source(SourceHoldings(), SOURCE)
    assert store.source_seeds() == [{"at": T0, "held": {UP: 300.0}}, {"at": T0 + 5, "held": {}}]


def test_held_assets_are_the_open_positions_only(world):
    venue, store, clock, metrics, alerts, watch, _ = world
    filled(store, "a")
    filled(store, "b", asset=DOWN, size=5.0, n=61)
    filled(store, "c", asset=DOWN, side=Side.SELL, size=5.0, n=62, at=T0 + 1)
    assert watch.held_assets() == [UP]
    store.record_resolution(CID, UP, clock.now(), "market_ws")
    assert watch.held_assets() == []


def _traded_market(store, m, at):
    """Market m: 10 shares bought at 0.4 and sold at 0.6 (nothing left), then resolved."""
    cid, up = f"0x{m:064x}", f"{m}-up"
    for iid, side, price, n in ((f"b{m}", Side.BUY, 0.4, 2 * m + 1), (f"s{m}", Side.SELL, 0.6, 2 * m + 2)):
        fill = replace(source_fill(n, side, 10.0, price, at), asset=up, condition_id=cid)
        store.record_decision([fill], replace(intent(iid, side, 10.0, price, up), condition_id=cid, decided_at=at),
                              int(at * 1e9))
        store.record_signed(iid, f"0xhash{iid}", "{}", int(at * 1e9))
        store.update_order(iid, int(at * 1e9), status=OrderStatus.MATCHED, filled_size=10.0, avg_price=price,
                           submit_ns=int(at * 1e9), ack_ns=int(at * 1e9))
    store.record_resolution(cid, up, at + 1, "market_ws")


def test_snapshot_forgets_resolved_positions_that_hold_nothing_and_keeps_their_pnl(world):
    venue, store, clock, metrics, alerts, watch, books = world
    filled(store, "open")                                        # an open position is kept throughout
    for m in range(1, 60):
        _traded_market(store, m, clock.now())
        clock.advance(900)
        watch.snapshot()
        assert len(watch.ledger.positions) <= 2 and len(watch._written) <= 2 and len(watch._market_end) <= 2
        assert len(watch._last_trade) <= 2
    assert UP in watch.ledger.positions
    assert math.isclose(metrics.gauges["pnl.realized_usd"], 59 * 2.0)
    assert metrics.gauges["positions.open"] == 1
    snaps = {r["asset"]: r for r in store.latest_pnl_snapshot()}
    assert snaps["59-up"]["size"] == 0 and math.isclose(snaps["59-up"]["realized"], 2.0)


def test_snapshot_a_late_fill_of_a_forgotten_market_is_realised_at_its_winner(world):
    venue, store, clock, metrics, alerts, watch, books = world
    _traded_market(store, 1, clock.now())
    clock.advance(900)
    watch.snapshot()
    assert "1-up" not in watch.ledger.positions
    late = replace(source_fill(99, Side.BUY, 5.0, 0.5, clock.now()), asset="1-up", condition_id=f"0x{1:064x}")
    store.record_decision([late], replace(intent("late", Side.BUY, 5.0, 0.5, "1-up"), condition_id=f"0x{1:064x}"),
                          clock.now_ns())
    store.record_signed("late", "0xhashlate", "{}", clock.now_ns())
    store.update_order("late", clock.now_ns(), status=OrderStatus.MATCHED, filled_size=5.0, avg_price=0.5,
                       submit_ns=clock.now_ns(), ack_ns=clock.now_ns())
    watch.snapshot()
    p = watch.ledger.positions["1-up"]
    assert p.size == 5.0 and p.payout == 1.0
    assert math.isclose(metrics.gauges["pnl.realized_usd"], 2.0 + 5 * (1 - 0.5))


def _restarted(world_watch: PositionWatch, store, clock, metrics) -> PositionWatch:
    w = world_watch
    return PositionWatch(w.cfg, store=store, books=w.books, client=w.client, clock=clock, metrics=metrics,
                         alerts=w.alerts, our_address=OURS, gamma=w.gamma)


def test_markets_close_a_day_after_resolution_and_a_start_reads_only_the_open_ones(world):
    """A week of markets, four a day: the gauges stay those of one fold of the whole store while the ledger, the
    intents it remembers and what a restart reads cover only the open markets and a day of resolved ones."""
    venue, store, clock, metrics, alerts, watch, books = world
    filled(store, "open")                                        # never resolves: stays open throughout
    store.record_resolution("0x" + "cd" * 32, "9-up", clock.now(), "market_ws")   # resolved, never traded
    for m in range(1, 29):
        _traded_market(store, m, clock.now())
        clock.advance(6 * 3600)
        watch.snapshot()
        assert len(watch.ledger.winners) <= 5 and len(watch.ledger.realized) <= 5 and len(watch._applied) <= 11
    whole = ledger_from_store(store)
    today = int(clock.now() // 86400) * 86400
    assert math.isclose(metrics.gauges["pnl.realized_usd"], whole.realized_total())
    assert math.isclose(whole.realized_total(), 28 * 2.0)
    assert math.isclose(metrics.gauges["pnl.realized_today_usd"], whole.realized_by_day().get(today, 0.0))
    open_markets = set(watch.ledger.winners)
    closed = {r[0] for r in store.db.execute_sql('SELECT "condition_id" FROM "closed_markets"').fetchall()}
    assert len(closed) == 29 - len(open_markets) and "0x" + "cd" * 32 in closed and not closed & open_markets
    assert CID not in closed                                    # the open position's market

    again_metrics = RecordingMetrics()
    again = _restarted(watch, store, clock, again_metrics)
    assert len(store.own_fills(open_only=True)) == 1 + 2 * len(open_markets)
    assert {r["condition_id"] for r in store.resolutions(open_only=True)} == open_markets
    again.snapshot()
    for gauge in ("pnl.realized_usd", "pnl.realized_today_usd", "positions.open"):
        assert math.isclose(again_metrics.gauges[gauge], metrics.gauges[gauge]), gauge
    assert again.ledger.positions.keys() == watch.ledger.positions.keys()


def test_a_market_closes_with_its_losing_tokens_which_reconciliation_still_expects(world):
    venue, store, clock, metrics, alerts, watch, books = world
    filled(store, "lose", asset=DOWN, size=5.0)
    store.record_resolution(CID, UP, clock.now(), "market_ws")
    clock.advance(86400 - 1)
    watch.snapshot()
    assert CID in watch.ledger.winners and watch.ledger.positions[DOWN].size == 5.0    # not a day yet
    clock.advance(1)
    watch.snapshot()
    assert watch.ledger.positions == {} and CID not in watch.ledger.winners
    assert store.closed_holdings([DOWN, UP]) == {DOWN: 5.0}
    assert math.isclose(metrics.gauges["pnl.realized_usd"], -2.0)
    venue.positions[OURS] = [row(asset=DOWN, size=5.0, cur=0.0)]        # the index lists the losing tokens
    watch.reconcile()
    assert alerts.sent == [] and metrics.gauges["positions.drift_tokens"] == 0
    venue.positions[OURS] = [row(asset=DOWN, size=9.0, cur=0.0)]
    watch.reconcile()
    assert [kind for kind, _, _ in alerts.sent] == ["position_drift"]


def test_a_market_with_winning_tokens_unredeemed_stays_open_until_they_are_redeemed(world):
    venue, store, clock, metrics, alerts, watch, books = world
    filled(store, "lose", asset=DOWN, size=5.0)
    filled(store, "win", asset=UP, size=2.0, n=71)
    store.record_resolution(CID, UP, clock.now(), "market_ws")
    clock.advance(3 * 86400)
    watch.snapshot()
    assert store.db.execute_sql('SELECT COUNT(*) FROM "closed_markets"').fetchone()[0] == 0
    store.record_chain_actions([dict(action_id="r1", via="eoa", nonce=0, payload="0x", status="CONFIRMED",
                                     calls=json.dumps([{"kind": "redeem", "condition_id": CID}]),
                                     created_ns=clock.now_ns(), updated_ns=clock.now_ns())])
    watch.snapshot()
    assert watch.ledger.positions == {} and CID not in watch.ledger.winners
    assert store.closed_holdings([DOWN, UP]) == {}                         # the redemption burnt both sides
    assert math.isclose(metrics.gauges["pnl.realized_usd"], -2.0 + (2.0 - 0.8))
    assert math.isclose(_restarted(watch, store, clock, RecordingMetrics()).refresh().realized_total(), 0.0)
