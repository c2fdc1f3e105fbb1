"""The redeemer of a deposit wallet (signature type 3) against the simulator's relayer, node and Gamma: the owner's
EIP-712 batch (approval and redemption) is accepted once, executed gas-free, and pays the wallet exactly its winning
tokens (ground truth); a lost submit answer is recovered by the same signed request, never a second batch."""
import json
import time

import httpx
from eth_account import Account
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import MarketOrderArgs, OrderType

from copier.alerts import NullAlerts
from copier.clock import LiveClock
from copier.config import AccountConfig, Config, EndpointsConfig, ExecutionConfig, RedeemConfig, Secrets
from copier.metrics import NullMetrics
from copier.redeem import Redeemer
from copier.store import Store
from copier.types import OrderIntent, Side
from polylab.harness import SimProcess, eventually

OWNER_KEY = "0x" + "c4" * 32
OWNER = Account.from_key(OWNER_KEY).address
DW = "0x" + "c4" * 19 + "03"


class NoCatalog:
    def by_asset(self, asset):
        return None


def _buy(sim, market: dict) -> str:
    c = ClobClient(sim.urls["clob"], chain_id=137, key=OWNER_KEY, signature_type=3, funder=DW)
    c.set_api_creds(c.create_or_derive_api_key())
    up = json.loads(market["clobTokenIds"])[0]
    out = c.create_and_post_market_order(MarketOrderArgs(token_id=up, amount=10, side="BUY", price=0.99),
                                         order_type=OrderType.FAK)
    assert out["success"] and out["status"] == "matched", out
    return up


def _open_market(sim) -> dict:
    def pick():
        for m in httpx.get(f"{sim.urls['gamma']}/markets", params={"closed": "false"}, timeout=5).json():
            up = json.loads(m["clobTokenIds"])[0]
            if m["acceptingOrders"] and httpx.get(f"{sim.urls['clob']}/book", params={"token_id": up},
                                                  timeout=5).json()["asks"]:
                return m
        return None
    return eventually(pick, 30, 0.3, "a market with asks")


def test_deposit_wallet_redemption_through_the_relayer_once_despite_a_lost_answer(tmp_path):
    sim = SimProcess(tmp_path / "sim", speed=6.0, seed=31, extra_args=("--block-time", "0.5"))
    try:
        r = httpx.post(f"{sim.urls['control']}/wallets/fund", json={"address": DW, "owner": OWNER, "pusd": 100},
                       timeout=5)
        assert r.status_code == 200, r.text
        market = _open_market(sim)
        up = _buy(sim, market)
        held = eventually(lambda: next((p["units"] for p in httpx.get(f"{sim.urls['control']}/wallets/{DW}")
                                        .json()["positions"] if p["token_id"] == up and p["units"] > 0), None),
                          15, 0.2, "the tokens in the deposit wallet")
        cid = market["conditionId"]
        assert httpx.post(f"{sim.urls['control']}/resolve", json={"condition_id": cid, "winner": "Up"},
                          timeout=5).status_code == 200
        store = Store.open(str(tmp_path / "copier.sqlite"))
        now = time.time()
        intent = OrderIntent(intent_id="i1", condition_id=cid, asset=up, outcome="Up", side=Side.BUY, size=10,
                             price_cap=0.99, notional=10, source_price=0.5, fill_keys=("k1",), kind="single",
                             decided_at=now - 5, opening=True, market_end_ts=now - 1)
        store.record_remainder(intent, int(now * 1e9), int(now * 1e9))
        store.record_signed("i1", "0xh1", "{}", int(now * 1e9))
        store.update_order("i1", int(now * 1e9), filled_size=10.0, status="MATCHED")
        cfg = Config(execution=ExecutionConfig(dry_run=False), account=AccountConfig(signature_type=3, funder=DW),
                     endpoints=EndpointsConfig(gamma=sim.urls["gamma"], polygon_rpc=sim.urls["rpc_http"],
                                               relayer=sim.urls["relayer"]),
                     redeem=RedeemConfig(interval_s=1.0))
        secrets = Secrets(private_key=OWNER_KEY, relayer_api_key="00000000-0000-4000-8000-0000000000c4",
                          relayer_api_key_address=OWNER)
        redeemer = Redeemer.from_config(cfg, secrets, store=store, markets=NoCatalog(), clock=LiveClock(),
                                        metrics=NullMetrics(), alerts=NullAlerts())
        sim.faults(relayer_lost_answer={"count": 1})          # the first submit is taken, its answer lost (502)

        def confirmed():
            redeemer.tick()
            return [a for a in store.chain_actions() if a["status"] == "CONFIRMED"]
        (action,) = eventually(confirmed, 40, 0.3, "the relayer batch confirmed")
        time.sleep(2)
        for _ in range(5):                                     # more passes find nothing left to redeem
            redeemer.tick()
            time.sleep(0.3)
        events = sim.ground_truth_events()
    finally:
        sim.stop()
    reds = [e for e in events if e["kind"] == "redemption" and e["wallet"] == DW]
    assert [(e["via"], e["payout_units"], e["gas_paid_wei"]) for e in reds] == [("relayer", held, "0")]
    accepted = [e for e in events if e["kind"] == "relayer" and e["event"] == "accepted"]
    assert len(accepted) == 1 and reds[0]["relayer_id"] == accepted[0]["relayer_id"] == action["relayer_id"]
    assert [json.loads(action["calls"])[i]["kind"] for i in range(2)] == ["approve", "redeem"]
    assert [a["status"] for a in store.chain_actions()] == ["CONFIRMED"]


EOA_KEY = "0x" + "c5" * 32


def test_eoa_merges_full_sets_back_to_pusd_when_configured(tmp_path):
    """redeem.merge_full_sets: an EOA holding both outcomes of an open market merges the full sets (approval first),
    once, and pays the gas itself."""
    sim = SimProcess(tmp_path / "sim", speed=6.0, seed=32, extra_args=("--block-time", "0.5"))
    me = Account.from_key(EOA_KEY).address.lower()
    try:
        market = _open_market(sim)
        c = ClobClient(sim.urls["clob"], chain_id=137, key=EOA_KEY)
        c.set_api_creds(c.create_or_derive_api_key())
        tokens = json.loads(market["clobTokenIds"])
        for token in tokens:
            out = c.create_and_post_market_order(MarketOrderArgs(token_id=token, amount=6, side="BUY", price=0.99),
                                                 order_type=OrderType.FAK)
            assert out["success"] and out["status"] == "matched", out

        def units():
            held = {p["token_id"]: p["units"] for p in httpx.get(f"{sim.urls['control']}/wallets/{me}").json()
                    ["positions"]}
            return [held.get(t, 0) for t in tokens] if all(held.get(t, 0) > 0 for t in tokens) else None
        held = eventually(units, 15, 0.2, "both outcomes held")
        store = Store.open(str(tmp_path / "copier.sqlite"))
        now = time.time()
        for n, token in enumerate(tokens):
            intent = OrderIntent(intent_id=f"i{n}", condition_id=market["conditionId"], asset=token, outcome="x",
                                 side=Side.BUY, size=6, price_cap=0.99, notional=6, source_price=0.5,
                                 fill_keys=(f"k{n}",), kind="single", decided_at=now - 5, opening=True,
                                 market_end_ts=now + 600)
            store.record_remainder(intent, int(now * 1e9), int(now * 1e9))
            store.record_signed(f"i{n}", f"0xh{n}", "{}", int(now * 1e9))
            store.update_order(f"i{n}", int(now * 1e9), filled_size=6.0, status="MATCHED")
        cfg = Config(execution=ExecutionConfig(dry_run=False),
                     endpoints=EndpointsConfig(gamma=sim.urls["gamma"], polygon_rpc=sim.urls["rpc_http"]),
                     redeem=RedeemConfig(interval_s=1.0, merge_full_sets=True))
        redeemer = Redeemer.from_config(cfg, Secrets(private_key=EOA_KEY), store=store, markets=NoCatalog(),
                                        clock=LiveClock(), metrics=NullMetrics(), alerts=NullAlerts())

        def merged():
            redeemer.tick()
            return [a for a in store.chain_actions() if '"merge"' in a["calls"] and a["status"] == "CONFIRMED"]
        eventually(merged, 40, 0.3, "the merge confirmed")
        for _ in range(5):
            redeemer.tick()
            time.sleep(0.3)
        events = sim.ground_truth_events()
    finally:
        sim.stop()
    merges = [e for e in events if e["kind"] == "merge" and e["wallet"] == me]
    assert [(e["amount_units"], e["via"]) for e in merges] == [(min(held), "eoa")]
    assert int(merges[0]["gas_paid_wei"]) > 0
    assert [json.loads(a["calls"])[0]["kind"] for a in store.chain_actions()] == ["approve", "merge"]
