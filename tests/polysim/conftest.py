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


# ---- the chain, the relayer and the positions lifecycle -----------------------------------------------------
LIFE_SCENARIO = {
    "name": "lifecycle-test", "seed": 21, "speed": 4,                # 225-second windows; resolutions are forced
    "markets": {"assets": ["btc", "eth", "sol", "xrp"], "listed_windows": 3,   # 12 open markets to use up
                "auto_redeem_after": 0.01},                          # the venue's operator acts 2.25 s after
    "feeds": {"data_api_cache_s": 0, "mined_after_s": 0.3, "confirmed_after_s": 0.6,
              "positions_redeemable_lag_s": 8},                      # 8 market seconds = 2 s
    "chain": {"relayer_delay_s": 0.2, "relayer_confirmations": 2, "relayer_min_deadline_s": 2},
}
CTF = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"
PUSD = "0xc011a7e12a19f7b1f670d46f03b03f3342e82dfb"
ADAPTER = "0xada100db00ca00073811820692005400218fce1f"
NEG_RISK_ADAPTER = "0xada2005600dec949baf300f4c6120000bdb6eaab"
AUTO_REDEEM_OPERATOR = "0xa1200000d0002264c9a1698e001292d00e1b00af"
GWEI = 10**9


@pytest.fixture(scope="session")
def life_sim(tmp_path_factory):
    work = tmp_path_factory.mktemp("life")
    path = work / "scenario.yaml"
    path.write_text(yaml.safe_dump(LIFE_SCENARIO))
    urls = serve(work, "--scenario", str(path), "--block-time", "0.5", "--logs-delay", "0.6")
    yield urls
    stop(urls)


def rpc(urls, method: str, *params, transport: str = "http") -> dict:
    """One JSON-RPC request over HTTP POST -> the whole response object (result or error)."""
    return httpx.post(urls["rpc_http"], json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                      timeout=10).json()


def calldata(signature: str, types: list[str], args: list) -> str:
    from eth_abi import encode
    from eth_utils import keccak
    return "0x" + (keccak(text=signature)[:4] + encode(types, args)).hex()


def approve_data(operator: str) -> str:
    return calldata("setApprovalForAll(address,bool)", ["address", "bool"], [operator, True])


def redeem_data(condition_id: str) -> str:
    return calldata("redeemPositions(address,bytes32,bytes32,uint256[])", ["address", "bytes32", "bytes32",
                                                                           "uint256[]"],
                    [PUSD, b"\x00" * 32, bytes.fromhex(condition_id[2:]), [1, 2]])


def merge_data(condition_id: str, amount: int) -> str:
    return calldata("mergePositions(address,bytes32,bytes32,uint256[],uint256)",
                    ["address", "bytes32", "bytes32", "uint256[]", "uint256"],
                    [PUSD, b"\x00" * 32, bytes.fromhex(condition_id[2:]), [1, 2], amount])


def sign_tx(key: str, urls, to: str, data: str, *, nonce: int | None = None, gas: int | None = None,
            legacy: bool = False, **fields) -> str:
    """A transaction signed by eth-account the way a wallet signs it (type 2 unless legacy): its raw hex."""
    from eth_account import Account
    acct = Account.from_key(key)
    if nonce is None:
        nonce = int(rpc(urls, "eth_getTransactionCount", acct.address, "pending")["result"], 16)
    if gas is None:
        gas = int(rpc(urls, "eth_estimateGas", {"from": acct.address, "to": to, "data": data})["result"], 16)
    from eth_utils import to_checksum_address
    tx = {"to": to_checksum_address(to), "data": data, "gas": gas, "nonce": nonce, "chainId": 137, "value": 0,
          **fields}
    if legacy:
        tx.setdefault("gasPrice", 60 * GWEI)
    else:
        tx.setdefault("maxFeePerGas", 100 * GWEI)
        tx.setdefault("maxPriorityFeePerGas", 30 * GWEI)
    return "0x" + acct.sign_transaction(tx).raw_transaction.hex()


def send_tx(key: str, urls, to: str, data: str, **kw) -> str:
    out = rpc(urls, "eth_sendRawTransaction", sign_tx(key, urls, to, data, **kw))
    assert "result" in out, out
    return out["result"]


def receipt(urls, tx_hash: str) -> dict:
    return eventually(lambda: rpc(urls, "eth_getTransactionReceipt", tx_hash)["result"], 15, 0.1,
                      f"the receipt of {tx_hash}")


def wallet(urls, address: str) -> dict:
    return httpx.get(f"{urls['control']}/wallets/{address}", timeout=5).json()


def buy(urls, key: str, outcome: str, usd: float, *, market: dict | None = None, funder: str | None = None) -> dict:
    """Buy `usd` of an outcome with a FAK through the real SDK (signature type 3 when a funder is given) -> the
    market. Waits until the trade is confirmed."""
    from py_clob_client_v2.clob_types import MarketOrderArgs, OrderType
    c = ClobClient(urls["clob"], chain_id=137, key=key, signature_type=3 if funder else None, funder=funder)
    c.set_api_creds(c.create_or_derive_api_key())
    market = market or open_market(urls)
    token = json.loads(market["clobTokenIds"])[market_outcome(market, outcome)]
    out = c.create_and_post_market_order(MarketOrderArgs(token_id=token, amount=usd, side="BUY", price=0.99),
                                         order_type=OrderType.FAK)
    assert out["success"] and out["status"] == "matched", out
    return market


_USED: set[str] = set()


def open_market(urls) -> dict:
    """A Gamma market accepting orders that no other test used (each test resolves its own), with asks to buy."""
    def pick():
        for m in httpx.get(f"{urls['gamma']}/markets", params={"closed": "false"}, timeout=5).json():
            up = json.loads(m["clobTokenIds"])[0]
            end = calendar.timegm(time.strptime(m["endDate"], "%Y-%m-%dT%H:%M:%SZ"))
            if m["acceptingOrders"] and m["conditionId"] not in _USED and end - time.time() > 15 and \
                    httpx.get(f"{urls['clob']}/book", params={"token_id": up}, timeout=5).json()["asks"]:
                _USED.add(m["conditionId"])
                return m
        return None
    return eventually(pick, 60, 0.5, "an unused market accepting orders")


def market_outcome(market: dict, outcome: str) -> int:
    return json.loads(market["outcomes"]).index(outcome)


def resolve(urls, market: dict, winner: str) -> dict:
    out = httpx.post(f"{urls['control']}/resolve", json={"condition_id": market["conditionId"], "winner": winner},
                     timeout=5)
    assert out.status_code == 200, out.text
    return out.json()
