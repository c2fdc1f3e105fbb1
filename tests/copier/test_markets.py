"""Gamma payloads (the real recorded ones) -> MarketMeta, and the catalog's warm-up against a loopback Gamma."""
import json
from pathlib import Path

import pytest
from gevent.pywsgi import WSGIServer

from copier.clock import FakeClock
from copier.config import Config, EndpointsConfig, MarketsConfig
from copier.errors import MalformedMessage
from copier.markets import MarketCatalog, markets_from_gamma
from copier.metrics import NullMetrics
from copier.schemas import parse_gamma_market

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"


def test_recorded_event_gives_tick_min_size_dates_and_tokens():
    event = json.loads((PAYLOADS / "gamma_event_btc_updown_15m_trimmed_fixture.json").read_text())
    (meta,) = markets_from_gamma(event)
    assert meta.condition_id == "0xf1331d219ad116a46a98cbea0410d76bada4a671b43a83a73be5d23c67c4e0bf"
    assert meta.token_ids == ("up-token", "down-token") and meta.outcomes == ("Up", "Down")
    assert meta.end_ts - meta.start_ts == 900
    assert meta.exchange_version == 2 and meta.slug == "btc-updown-15m-1774278900"
    assert meta.outcome_of("down-token") == "Down"


def test_trading_fields_from_the_docs_payload():
    fields = json.loads((PAYLOADS / "gamma_market_trading_fields_docs.json").read_text())
    m = parse_gamma_market({"conditionId": "0x" + "AB" * 32, "clobTokenIds": '["1","2"]', "outcomes": '["Yes","No"]',
                            "endDate": "2026-03-23T15:30:00Z", "version": "v2", "positionIds": ["7", "8"],
                            "negRisk": True, **fields})
    assert (m.tick_size, m.min_size, m.fee_rate, m.fee_exponent) == (0.01, 5.0, 0.04, 1.0)
    assert m.exchange_version == 3 and m.token_ids == ("7", "8") and m.neg_risk and m.condition_id == "0x" + "ab" * 32


@pytest.mark.parametrize("bad", [{}, {"conditionId": "0x1", "clobTokenIds": "not json", "outcomes": "[]"},
                                 {"conditionId": "0x1", "clobTokenIds": '["1"]', "outcomes": '["a","b"]'},
                                 {"conditionId": "0x1", "clobTokenIds": '["1"]', "outcomes": '["a"]',
                                  "endDate": "yesterday"}])
def test_malformed_markets_raise_one_clear_error(bad):
    with pytest.raises(MalformedMessage):
        parse_gamma_market(bad)


def test_catalog_warms_current_and_next_window_before_trades():
    event = json.loads((PAYLOADS / "gamma_event_btc_updown_15m_trimmed_fixture.json").read_text())
    asked = []

    def app(environ, start_response):
        asked.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/events/slug/btc-updown-15m-1774278900":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(event).encode()]
        start_response("404 Not Found", [])
        return [b"{}"]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        cfg = Config(markets=MarketsConfig(slug_prefixes=("btc-updown-15m",), warm_windows_ahead=1),
                     endpoints=EndpointsConfig(gamma=f"http://127.0.0.1:{server.server_port}"))
        cat = MarketCatalog(cfg, clock=FakeClock(1774278900 + 100))
        assert cat.warm() == 1
        assert asked == ["/events/slug/btc-updown-15m-1774278900", "/events/slug/btc-updown-15m-1774279800"]
        assert cat.by_asset("up-token").slug == "btc-updown-15m-1774278900"
        cat.warm()                                   # the known window is not fetched again
        assert asked.count("/events/slug/btc-updown-15m-1774278900") == 1
    finally:
        server.stop()


# ---- dates: seconds, milliseconds, ISO; the near-expiry cutoff holds whichever the venue sends ----------------
END = 1_800_000_900


@pytest.mark.parametrize("end", [END, END * 1000, str(END), str(END * 1000), "2027-01-15T08:15:00Z",
                                 "2027-01-15T08:15:00", "2027-01-15T09:15:00+01:00", float(END * 1000)])
def test_end_date_in_seconds_milliseconds_or_iso_is_one_instant(end):
    m = parse_gamma_market({"conditionId": "0x" + "ab" * 32, "clobTokenIds": '["1","2"]', "outcomes": '["Up","Down"]',
                            "endDate": end})
    assert m.end_ts == END                      # 2027-01-15T08:15:00Z


@pytest.mark.parametrize("end", [END * 1_000_000, -1, 5, "1e400", "NaN", "9999-12-31T23:59:59Z", [END], True])
def test_absurd_end_dates_are_malformed(end):
    with pytest.raises(MalformedMessage):
        parse_gamma_market({"conditionId": "0x" + "ab" * 32, "clobTokenIds": '["1","2"]', "outcomes": '["Up","Down"]',
                            "endDate": end})


def test_an_end_date_in_milliseconds_keeps_the_near_expiry_cutoff():
    from helpers import fill

    from copier.decision import decide
    from copier.exposure import ExposureBook
    from copier.types import Batch, Skip
    # Arrange: a market ending in 10 s, its end date written in epoch milliseconds
    m = parse_gamma_market({"conditionId": "0x" + "ab" * 32, "clobTokenIds": '["1111","2222"]',
                            "outcomes": '["Up","Down"]', "endDate": END * 1000})
    f = fill(1, t=END - 10)
    # Act
    d = decide(ExposureBook(), Batch(f.condition_id, "Up", "1111", (f,), "leading", END - 10), m, END - 10, Config())
    # Assert
    assert isinstance(d, Skip) and d.reason == "near_expiry_cutoff"


# ---- the tick follows the venue ------------------------------------------------------------------------------
def _catalog_with(event, clob_app=None, alerts=None):
    cfg = Config(markets=MarketsConfig(slug_prefixes=("btc-updown-15m",), warm_windows_ahead=0))
    cat = MarketCatalog(cfg, clock=FakeClock(1774278900 + 100), http=_StaticHttp(event),
                        clob_http=clob_app, metrics=NullMetrics(), alerts=alerts)
    cat.warm()
    return cat


class _StaticHttp:
    def __init__(self, body, status=200):
        self.body, self.status, self.asked = body, status, []

    def get(self, path, params=None):
        self.asked.append((path, params))
        body = self.body(path, params) if callable(self.body) else self.body
        return _Answer(self.status, body if isinstance(body, bytes) else json.dumps(body).encode())


class _Answer:
    def __init__(self, status, content):
        self.status_code, self.content = status, content

    def raise_for_status(self):
        if self.status_code >= 400:
            import httpx
            raise httpx.HTTPStatusError(str(self.status_code), request=None, response=None)


def _event():
    return json.loads((PAYLOADS / "gamma_event_btc_updown_15m_trimmed_fixture.json").read_text())


def test_tick_size_change_on_the_market_channel_updates_the_catalog_for_both_outcomes():
    from copier.books import BookCache
    cat = _catalog_with(_event())
    books = BookCache(Config(), clock=FakeClock(), metrics=NullMetrics(), http=_StaticHttp({}),
                      on_tick_size=cat.on_tick_size_change)
    change = json.loads((PAYLOADS / "ws_market_tick_size_change.json").read_text())
    assert cat.by_asset("up-token").tick_size == 0.01
    books._on_message(json.dumps({**change, "asset_id": "up-token"}).encode())
    assert cat.by_asset("up-token").tick_size == 0.001 and cat.by_asset("down-token").tick_size == 0.001
    cat._fetched_slugs.clear()
    cat.warm()                                   # Gamma's copy, refreshed later, does not undo the venue's word
    assert cat.by_asset("up-token").tick_size == 0.001


def test_fresh_tick_rereads_the_clob_and_the_catalog_follows():
    clob = _StaticHttp(lambda path, params: {"minimum_tick_size": 0.001} if params["token_id"] == "down-token" else {})
    cat = _catalog_with(_event(), clob)
    assert cat.fresh_tick("down-token") == 0.001 and cat.by_asset("up-token").tick_size == 0.001
    assert clob.asked == [("/tick-size", {"token_id": "down-token"})]
    assert cat.fresh_tick("up-token") is None and cat.by_asset("up-token").tick_size == 0.001    # {} is no answer
    assert cat.edge.by_reason == {"malformed": 1}


def test_fresh_tick_without_an_answer_is_none_and_changes_nothing():
    for clob in (_StaticHttp(b"<html>502</html>"), _StaticHttp({"minimum_tick_size": 0.01}, status=503),
                 _StaticHttp({"minimum_tick_size": 0.37}), _StaticHttp({"minimum_tick_size": "NaN"})):
        cat = _catalog_with(_event(), clob)
        assert cat.fresh_tick("up-token") is None and cat.by_asset("up-token").tick_size == 0.01


def test_market_resolved_closes_the_market_whatever_gamma_says_later():
    from copier.books import BookCache
    cat = _catalog_with(_event())
    books = BookCache(Config(), clock=FakeClock(), metrics=NullMetrics(), http=_StaticHttp({}),
                      on_resolved=cat.on_resolved)
    resolved = json.loads((PAYLOADS / "ws_market_market_resolved.json").read_text())
    cid = cat.by_asset("up-token").condition_id
    books._on_message(json.dumps({**resolved, "market": cid, "assets_ids": ["up-token", "down-token"],
                                  "winning_asset_id": "up-token"}).encode())
    cat._fetched_slugs.clear()
    cat.warm()
    assert cat.by_asset("up-token").accepting_orders is False


# ---- a hostile Gamma never stops the catalog ----------------------------------------------------------------
@pytest.mark.parametrize("fee", ["0.07", [0.07], 7, True])
def test_a_market_whose_fee_schedule_is_not_an_object_is_refused_and_the_others_still_load(fee):
    event = _event()
    bad = {**event["markets"][0], "feeSchedule": fee, "conditionId": "0x" + "ee" * 32,
           "clobTokenIds": '["bad-up", "bad-down"]'}
    event["markets"].append(bad)
    alerts = RecordingAlerts()
    cat = _catalog_with(event, alerts=alerts)
    assert cat.by_asset("up-token") is not None and cat.by_asset("bad-up") is None
    assert cat.edge.by_reason == {"malformed": 1} and cat.edge.errors == 0 and alerts.sent == []


@pytest.mark.parametrize("body", [b"\xff\xfe", b"[" * 50_000, b"<html>Cloudflare</html>", b"", b"null", b"[1, 2]",
                                  b'{"markets": [{"conditionId": NaN}]}', b'{"markets": "x"}'])
def test_hostile_gamma_answers_never_raise_out_of_warm_or_lookup(body):
    cat = _catalog_with(body)
    assert cat.assets() == [] and cat.edge.errors == 0 and cat.edge.refusals >= 1
    assert cat.lookup("0x" + "ab" * 32, "up-token") is None and cat.edge.errors == 0


class RecordingAlerts:
    def __init__(self):
        self.sent = []

    def alert(self, kind, message, **context):
        self.sent.append((kind, message, context))


class _ScriptedSocket:
    """A market channel whose frames are produced by the test, one per receive; records what the copier sends."""

    def __init__(self, frames):
        self.frames, self.sent = frames, []

    def send(self, text):
        self.sent.append(json.loads(text))


def test_the_book_cache_follows_the_markets_in_play_and_forgets_the_ended_ones():
    from copier.books import BookCache

    book = json.loads((PAYLOADS / "ws_market_book.json").read_text())
    frame = book[0] if isinstance(book, list) else book

    def book_of(asset):
        return json.dumps({**frame, "asset_id": asset}).encode()

    class Scripted(BookCache):
        def _connect(self, url):
            return self.sock

        def _recv(self, ws):
            return next(ws.frames, None)

        def _disconnect(self, ws):
            pass

    books = Scripted(Config(), clock=FakeClock(), metrics=NullMetrics(), http=_StaticHttp({}))
    books.watch(["101", "202"])

    def frames():
        yield book_of("101")
        yield book_of("202")
        books.watch(["202", "303"])                  # the next window: the first market ended
        yield book_of("303")
        books.watch(["303"])
        yield book_of("303")

    books.sock = _ScriptedSocket(frames())
    books._session(stopping=type("Never", (), {"is_set": staticmethod(lambda: False)})())
    assert [(m.get("operation", "initial"), m["assets_ids"]) for m in books.sock.sent] == [
        ("initial", ["101", "202"]), ("subscribe", ["303"]), ("unsubscribe", ["101"]), ("unsubscribe", ["202"])]
    assert books.top("101") is None and books.top("202") is None and books.top("303") is not None
    assert set(books._books) == {"303"}


@pytest.mark.parametrize("window_s", [900, 4])
def test_the_catalog_forgets_a_market_four_windows_after_its_end(window_s):
    """An hour live; 16 s for a simulator's 4-second windows (a week of them would otherwise all stay known)."""
    cfg = Config(markets=MarketsConfig(slug_prefixes=("btc-updown-15m",), warm_windows_ahead=0,
                                       window_seconds=window_s))
    clock = FakeClock(1774278900 + 100)
    cat = MarketCatalog(cfg, clock=clock, http=_StaticHttp(_event()), metrics=NullMetrics())
    cat.warm()
    end = cat.by_asset("up-token").end_ts
    clock.advance(end + 4 * window_s - 1 - clock.now())
    cat.refresh()
    assert cat.by_asset("up-token") is not None
    clock.advance(2)
    cat.refresh()
    assert cat.by_asset("up-token") is None and "up-token" not in cat.assets()


def test_the_catalog_remembers_only_the_windows_it_still_wants_fetched():
    """A week of 4-second windows: the slugs asked for stay those of the windows warmed now, and none is asked for
    twice while wanted."""
    cfg = Config(markets=MarketsConfig(slug_prefixes=("btc-updown-15m", "eth-updown-15m"), warm_windows_ahead=1,
                                       window_seconds=4))
    clock = FakeClock(1774278900)
    http = _StaticHttp(_event())
    cat = MarketCatalog(cfg, clock=clock, http=http, metrics=NullMetrics())
    for _ in range(7 * 96 * 4):
        cat.refresh()
        cat.refresh()
        assert cat._fetched_slugs <= set(cat.wanted_slugs(clock.now()))
        clock.advance(1)
    paths = [path for path, _ in http.asked]
    assert len(paths) == len(set(paths)) == (7 * 96 + 1) * 2         # every window once, the last one ahead too
