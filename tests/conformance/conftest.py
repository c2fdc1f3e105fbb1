"""The conformance suite: polysim driven by the official clients, unmodified, the way their users call them.

polysim runs in its own process from the project's venv (POLYSIM_PYTHON); the clients run here, in the conformance
venv (tests/conformance/requirements.txt), or under Node (tests/conformance/node). Every check asserts what the
client parsed, not only that a request went through.
"""
import calendar
import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support import eventually

ROOT = Path(__file__).resolve().parents[2]
POLYSIM_PYTHON = os.environ.get("POLYSIM_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
NODE_DIR = Path(__file__).parent / "node"
# Distinct wallets per concern: the venue never matches a wallet against itself.
KEY_A = "0x" + "a1" * 32
KEY_B = "0x" + "b2" * 32


def serve(workdir: Path, *args: str) -> dict:
    proc = subprocess.Popen([POLYSIM_PYTHON, "-m", "polysim.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=open(workdir / "polysim.log", "wb"))
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError((workdir / "polysim.log").read_text())
    return {**json.loads(line), "proc": proc}


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    """4x market clock (225 s windows), fast feeds: trades mined after 0.3 s, confirmed after 0.6 s."""
    urls = serve(tmp_path_factory.mktemp("sim"), "--speed", "4", "--seed", "12", "--rtds-delay", "0.3",
                 "--data-api-delay", "0.6", "--data-api-cache", "0", "--mined-after", "0.3",
                 "--confirmed-after", "0.6", "--block-time", "0.5", "--logs-delay", "0.6",
                 "--mempool-delay", "0.1")
    yield urls
    urls["proc"].send_signal(signal.SIGTERM)
    urls["proc"].wait(10)


@pytest.fixture(scope="session")
def quiet_sim(tmp_path_factory):
    """No background traders: an empty book, where two wallets trade only with each other (as in the SDK
    examples that seed a resting order from a second wallet)."""
    urls = serve(tmp_path_factory.mktemp("quiet"), "--speed", "4", "--seed", "13", "--no-background",
                 "--mined-after", "0.3", "--confirmed-after", "0.6", "--data-api-cache", "0")
    yield urls
    urls["proc"].send_signal(signal.SIGTERM)
    urls["proc"].wait(10)


@pytest.fixture(scope="session")
def life_sim(tmp_path_factory):
    """Markets the tests resolve themselves (four assets, so that every test has its own), a fast relayer, the
    positions index a second behind the chain."""
    work = tmp_path_factory.mktemp("life")
    scenario = work / "scenario.json"
    scenario.write_text(json.dumps({
        "name": "conformance-life", "seed": 31, "speed": 4, "markets": {"assets": ["btc", "eth", "sol", "xrp"]},
        "feeds": {"data_api_cache_s": 0, "mined_after_s": 0.3, "confirmed_after_s": 0.6,
                  "positions_redeemable_lag_s": 4},
        "chain": {"relayer_delay_s": 0.2}}))
    urls = serve(work, "--scenario", str(scenario), "--block-time", "0.5", "--logs-delay", "0.6")
    yield urls
    urls["proc"].send_signal(signal.SIGTERM)
    urls["proc"].wait(10)


_USED: set[str] = set()


def open_market(urls) -> dict:
    """A Gamma market accepting orders for a while yet that no other test took (each test resolves its own)."""
    def pick():
        for m in httpx.get(f"{urls['gamma']}/markets", params={"closed": "false"}, timeout=5).json():
            end = calendar.timegm(time.strptime(m["endDate"], "%Y-%m-%dT%H:%M:%SZ"))
            if m["acceptingOrders"] and m["conditionId"] not in _USED and end - time.time() > 20:
                _USED.add(m["conditionId"])
                return m
        return None
    return eventually(pick, 60, 0.5, "an unused market accepting orders")


def resolve(urls, market: dict, winner: str | None = None) -> str:
    body = {"condition_id": market["conditionId"], **({"winner": winner} if winner else {})}
    out = httpx.post(f"{urls['control']}/resolve", json=body, timeout=5)
    assert out.status_code == 200, out.text
    return out.json()["winner"]


def wallet(urls, address: str) -> dict:
    return httpx.get(f"{urls['control']}/wallets/{address}", timeout=5).json()


def state(urls) -> dict:
    return httpx.get(f"{urls['control']}/state", timeout=5).json()


def current_market(urls, asset="btc", min_left_s=30.0) -> dict:
    """The Gamma market of the window trading now, with at least min_left_s to go (else the next one)."""
    def pick():
        now = time.time()
        for ev in httpx.get(f"{urls['gamma']}/events", params={"closed": "false"}, timeout=5).json():
            m = ev["markets"][0]
            start = calendar.timegm(time.strptime(m["eventStartTime"], "%Y-%m-%dT%H:%M:%SZ"))
            end = calendar.timegm(time.strptime(m["endDate"], "%Y-%m-%dT%H:%M:%SZ"))
            if ev["slug"].startswith(asset) and start <= now and end - now > min_left_s:
                return m
        return None
    return eventually(pick, 240, 0.5, "a trading market with time left")


def tokens(market: dict) -> list[str]:
    return json.loads(market["clobTokenIds"])


def environment(urls):
    """The official SDK pointed at polysim: its own environment type with our URLs, nothing patched (the relayer and
    the Polygon node over HTTP included; the relayer is polled every 0.25 s instead of 2 s)."""
    from polymarket._internal.environment import PRODUCTION_CONFIG, create_environment
    dead = "http://127.0.0.1:9"                      # RFQ: not simulated, never reached
    return create_environment(name="polysim", config=dataclasses.replace(
        PRODUCTION_CONFIG, clob_url=urls["clob"], gamma_url=urls["gamma"], data_url=urls["data_api"],
        clob_market_ws_url=urls["market_ws"], clob_user_ws_url=urls["user_ws"], rtds_ws_url=urls["rtds"],
        relayer_url=urls["relayer"], rfq_url=dead, rpc_url=urls["rpc_http"], relayer_poll_frequency_ms=250))


def node(script: str, config: dict, timeout: float = 60) -> list[dict]:
    """Run one Node check; it prints one JSON object per line. A non-zero exit fails with its stderr."""
    done = subprocess.run(["node", str(NODE_DIR / script), json.dumps(config)], capture_output=True, text=True,
                          timeout=timeout, cwd=NODE_DIR)
    assert done.returncode == 0, f"{script} exited {done.returncode}: {done.stderr[-2000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
