"""Scenario files: validation with the offending key named, and unattended runs driven only by the file."""
import json
import subprocess
import sys
import time

import httpx
import pytest
import websocket
import yaml
from conftest import KEY, SOURCE, eventually, ground_truth, serve, stop
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import OrderArgsV2, PartialCreateOrderOptions

from polysim import scenario


@pytest.mark.parametrize("doc,message", [
    ({"markets": {"tick": 0.01}}, "markets.tick: unknown key"),
    ({"feeds": {"rtds_delay_s": "fast"}}, "feeds.rtds_delay_s: expected a number"),
    ({"source": {"mode": "sometimes"}}, "source.mode: 'sometimes' is not one of"),
    ({"source": {"script": [{"at": 1, "outcome": "Maybe"}], "mode": "script"}}, "source.script[0].outcome"),
    ({"faults": [{"at": 3, "kind": "meteor"}]}, "faults[0].kind: unknown fault 'meteor'"),
    ({"background": {"taker_size": [40, 5]}}, "background.taker_size: the range [40.0, 5.0] is reversed"),
    ({"speed": -2}, "speed: must not be negative"),
    ({"background": {"makers_per_level": 0}}, "background.makers_per_level: at least 1"),
    ({"background": {"maker_levels": 0}}, "background.maker_levels: at least 1"),
    ({"background": {"touch_size": [0, 10]}}, "background.touch_size: sizes must be positive"),
    ({"background": {"impact_per_share": 0.5}}, "background.impact_per_share: at most 0.01"),
    ({"background": {"requote_mean_s": float("nan")}}, "background.requote_mean_s: expected a finite number"),
    ({"background": {"requote_min_s": float("inf")}}, "background.requote_min_s: expected a finite number"),
    ({"background": {"requote_min_s": -0.1}}, "background.requote_min_s: must not be negative"),
    ({"background": {"informed_flow": "yes"}}, "background.informed_flow: expected true/false"),
    ({"background": {"makers_per_level": 2.5}}, "background.makers_per_level: expected a whole number"),
])
def test_a_bad_scenario_is_refused_naming_the_key(doc, message):
    with pytest.raises(scenario.ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        scenario.from_dict(doc)


def test_files_presets_and_overrides(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"speed": 15, "source": {"mode": "random", "bursts_per_window": 20},
                                "faults": [{"at": 1, "kind": "clob_429", "count": 2, "retry_after": 3}]}))
    s = scenario.load(str(path), {"seed": 4})
    assert (s.speed, s.window_s, s.seed, s.source.mode) == (15, 60, 4, "random")
    assert s.faults[0].params == {"count": 2, "retry_after": 3}
    assert scenario.load("prd").source.mode == "random" and scenario.load("chaos").faults
    yaml_off = tmp_path / "off.yaml"
    yaml_off.write_text("source:\n  mode: off\n")                       # YAML reads a bare off as false
    assert scenario.load(str(yaml_off)).source.mode == "off"


def test_serve_exits_2_with_one_line_naming_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"feeds": {"rtds_delay": 2}}))
    out = subprocess.run([sys.executable, "-m", "polysim.cli", "serve", "--scenario", str(bad)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.strip() == "polysim: feeds.rtds_delay: unknown key"
    assert "fault kinds" in subprocess.run([sys.executable, "-m", "polysim.cli", "serve", "--help"],
                                           capture_output=True, text=True, timeout=30).stdout


def test_the_scenario_drives_source_fills_faults_and_market_rotation(fast_sim):
    events = eventually(lambda: (e := ground_truth(fast_sim)) and
                        {x.get("role") for x in e if x["kind"] == "source_fill"} >= {"taker", "maker"} and
                        any(x["kind"] == "market" and x["state"] == "resolved" for x in e) and e, 10,
                        what="scripted fills of both roles and a resolved window")
    fills = [e for e in events if e["kind"] == "source_fill"]
    assert {(f["role"], f["side"]) for f in fills} >= {("taker", "BUY"), ("maker", "BUY")}
    assert all(f["match_time"] <= f["ts"] + 0.001 and f["tx_hash"].startswith("0x") for f in fills)
    faults = [(e["fault"], e["source"]) for e in events if e["kind"] == "fault"]
    assert ("clob_5xx", "scenario") in faults and ("rtds_duplicate", "scenario") in faults
    assert httpx.get(f"{fast_sim['control']}/state").json()["scenario"] == "fast-test"


def test_the_dead_man_switch_cancels_orders_after_the_scenarios_heartbeat_timeout(fast_sim):
    c = ClobClient(fast_sim["clob"], chain_id=137, key=KEY)
    c.set_api_creds(c.create_or_derive_api_key())
    later = [e for e in httpx.get(f"{fast_sim['gamma']}/events").json() if not e["closed"]][-1]["markets"][0]
    c.post_heartbeat()
    placed = eventually(lambda: _try(lambda: c.create_and_post_order(
        OrderArgsV2(token_id=json.loads(later["clobTokenIds"])[0], price=0.05, size=10, side="BUY"),
        PartialCreateOrderOptions(tick_size="0.01", neg_risk=False))), 3, what="a resting order")
    assert placed["status"] == "live"
    status = eventually(lambda: (s := c.get_order(placed["orderID"])["status"]) != "LIVE" and s, 4,
                        what="the dead-man switch")
    assert status == "CANCELED"


def _try(call):
    try:
        return call()
    except Exception:  # the scheduled one-shot 500 of this scenario
        return None


def test_unattended_run_at_speed_15_writes_ground_truth_and_stops_on_sigterm(tmp_path):
    path = tmp_path / "prd.yaml"
    path.write_text(yaml.safe_dump({"name": "prd-fast", "markets": {"price_model": "walk"},
                                    "source": {"mode": "random", "bursts_per_window": 120, "maker_p": 0.3,
                                               "burst_gap_ms": [20, 80]},
                                    "feeds": {"rtds_delay_s": 0.2}}))
    urls = serve(tmp_path, "--scenario", str(path), "--speed", "15")
    ws = websocket.create_connection(urls["rtds"], timeout=5)
    try:
        ws.send(json.dumps({"action": "subscribe", "subscriptions": [{"topic": "activity", "type": "trades"}]}))
        assert set(urls) >= {"clob", "gamma", "data_api", "rtds", "market_ws", "user_ws", "control", "ground_truth"}
        fills = eventually(lambda: len(f := [e for e in ground_truth(urls) if e["kind"] == "source_fill"]) >= 8 and f,
                           15, 0.2, "the source wallet's random bursts")
        seen = set()
        eventually(lambda: seen.update(json.loads(ws.recv())["payload"]["proxyWallet"] for _ in range(20)) or
                   SOURCE in seen, 10, what="the source on RTDS")
        slugs = {f["slug"] for f in fills}
        assert all(s.split("-")[0] in ("btc", "eth") and "-updown-15m-" in s for s in slugs)
        assert httpx.get(f"{urls['control']}/state").json()["speed"] == 15
        t0 = time.monotonic()
    finally:
        code = stop(urls)                                   # with a websocket client still connected
        ws.close()
    assert code == 0 and time.monotonic() - t0 < 5
    lines = (tmp_path / "ground_truth.jsonl").read_text().splitlines()
    assert lines and all({"kind", "ts"} <= set(json.loads(x)) for x in lines)


def test_a_paused_random_source_trades_no_more_until_resumed_and_bad_requests_are_refused(tmp_path):
    path = tmp_path / "busy.yaml"
    path.write_text(yaml.safe_dump({"name": "busy", "source": {"mode": "random", "bursts_per_window": 120,
                                                                "burst_gap_ms": [10, 30]}}))
    urls = serve(tmp_path, "--scenario", str(path), "--speed", "15")
    try:
        def fills() -> int:
            return httpx.get(f"{urls['control']}/state").json()["counters"]["source_fills"]

        eventually(lambda: fills() >= 3, 15, 0.1, "the random source trading")
        for bad in ({"paused": "yes"}, {}, [True]):
            assert httpx.post(f"{urls['control']}/source", json=bad).status_code == 400
        assert httpx.post(f"{urls['control']}/source", content=b"\xff{").status_code == 400
        answer = httpx.post(f"{urls['control']}/source", json={"paused": True}).json()
        assert answer["paused"] is True
        time.sleep(0.1)                                     # a fill already matching completes
        frozen = fills()
        time.sleep(1.5)                                     # ~3 bursts would start in this time unpaused
        assert fills() == frozen
        httpx.post(f"{urls['control']}/source", json={"paused": False}).raise_for_status()
        eventually(lambda: fills() > frozen, 15, 0.1, "the source trading again")
    finally:
        stop(urls)
