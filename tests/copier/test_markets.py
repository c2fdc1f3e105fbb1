"""Gamma payloads (the real recorded ones) -> MarketMeta, and the catalog's warm-up against a loopback Gamma."""
import json
from pathlib import Path

import pytest
from gevent.pywsgi import WSGIServer

from copier.clock import FakeClock
from copier.config import Config, EndpointsConfig, MarketsConfig
from copier.errors import MalformedMessage
from copier.markets import MarketCatalog, markets_from_gamma
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
