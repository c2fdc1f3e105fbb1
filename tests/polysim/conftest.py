import calendar
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from py_clob_client_v2.client import ClobClient
from support import eventually  # noqa: F401  (re-exported to the suite)

SOURCE = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
KEY = "0x" + "3c" * 32
OTHER_KEY = "0x" + "4d" * 32


def payload(name: str):
    return json.loads((PAYLOADS / name).read_text())


def serve(workdir: Path, *args: str):
    gt = workdir / "ground_truth.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "polysim.cli", "serve", "--ground-truth", str(gt), *args],
                            stdout=subprocess.PIPE, stderr=open(workdir / "polysim.log", "wb"))
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError((workdir / "polysim.log").read_text())
    urls = json.loads(line)
    urls["ground_truth_path"] = gt
    urls["proc"] = proc
    return urls


def stop(urls) -> int:
    proc = urls["proc"]
    proc.send_signal(signal.SIGTERM)
    return proc.wait(10)


def ground_truth(urls) -> list[dict]:
    return [json.loads(x) for x in Path(urls["ground_truth_path"]).read_text().splitlines() if x.strip()]


@pytest.fixture(scope="session")
def client(sim):
    """The real SDK at L2 on the main simulator."""
    c = ClobClient(sim["clob"], chain_id=137, key=KEY)
    c.set_api_creds(c.create_or_derive_api_key())
    return c


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    """4x market clock (225 s windows), fast feeds, trades mined after 0.3 s, RTDS idle stall after 4 s."""
    urls = serve(tmp_path_factory.mktemp("sim"), "--speed", "4", "--seed", "5", "--rtds-delay", "0.3",
                 "--data-api-delay", "0.6", "--data-api-cache", "2", "--mined-after", "0.3", "--confirmed-after",
                 "0.6", "--rtds-idle-stall", "4")
    yield urls
    stop(urls)


FAST_SCENARIO = {
    "name": "fast-test", "seed": 9, "speed": 300,          # 3-second windows: rotations, closes, resolutions
    "markets": {"seconds_delay": 0.2, "resolve_after": 0.2},
    "clob": {"heartbeat_timeout_s": 1.0},
    "feeds": {"rtds_delay_s": 0.2, "data_api_user_delay_s": 0.3, "data_api_cache_s": 0, "mined_after_s": 0.1,
              "confirmed_after_s": 0.2},
    "background": {"taker_rate": 30},
    "source": {"mode": "script", "script": [{"at": 0.3, "asset": "btc", "outcome": "Up", "side": "BUY", "size": 6},
                                            {"at": 0.4, "asset": "eth", "outcome": "Down", "side": "BUY", "size": 7,
                                             "role": "maker", "every": 0.5}]},
    "faults": [{"at": 0.2, "kind": "clob_5xx", "count": 1}, {"at": 0.5, "every": 1.0, "kind": "rtds_duplicate",
                                                             "count": 1}],
}


@pytest.fixture(scope="session")
def fast_sim(tmp_path_factory):
    work = tmp_path_factory.mktemp("fast")
    path = work / "scenario.yaml"
    path.write_text(yaml.safe_dump(FAST_SCENARIO))
    urls = serve(work, "--scenario", str(path))
    yield urls
    stop(urls)


def subscribed(ws) -> None:
    """Returns once the server has handled what was sent so far: it answers messages in order, PING last."""
    ws.send("PING")
    end = time.monotonic() + 10
    while ws.recv() != "PONG":
        assert time.monotonic() < end, "no PONG: the subscription was never handled"


def taking_price(client, token: str) -> float:
    """A BUY cap that still crosses after the taker delay: background takers may have emptied the best ask by then
    (the order fills at the resting prices, not at the cap)."""
    return round(min(float(client.get_order_book(token)["asks"][-1]["price"]) + 0.05, 0.99), 2)


def current_market(urls, asset="btc", min_left_s=2.0) -> dict:
    """The Gamma market of the window trading now (waiting for the next one if this one is about to end)."""
    def pick():
        now = time.time()
        for ev in httpx.get(f"{urls['gamma']}/events", params={"closed": "false"}, timeout=5).json():
            m = ev["markets"][0]
            start = calendar.timegm(time.strptime(m["eventStartTime"], "%Y-%m-%dT%H:%M:%SZ"))
            end = calendar.timegm(time.strptime(m["endDate"], "%Y-%m-%dT%H:%M:%SZ"))
            if ev["slug"].startswith(asset) and start <= now and end - now > min_left_s:
                return m
        return None
    return eventually(pick, 30, 0.2, "a trading market")
