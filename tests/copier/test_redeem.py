"""Automatic redemption: the pure selection, the write-ahead record of every signed transaction / relayer request
with a kill -9 at every step (never a second transaction for one redemption), hostile node and relayer answers (never
fatal, never a second transaction), nothing FAILED without evidence, alerts, and the funds check's redeemable value.
Against hand-written stubs of the node and the relayer (tests/copier/chain_stub.py) and a real sqlite store."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from chain_stub import GWEI, StubChain, StubRelayer
from eth_account import Account
from helpers import market
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.clock import FakeClock
from copier.config import AccountConfig, Config, ExecutionConfig, RedeemConfig
from copier.errors import MalformedMessage, TemporaryError
from copier.metrics import NullMetrics
from copier.redeem import (
    ActionStatus,
    CallKind,
    GammaTokens,
    HttpRelayer,
    HttpRpc,
    Planned,
    Redeemer,
    Resolution,
    RpcAnswerError,
    select,
)
from copier.risk import funding_refusals
from copier.store import Store
from copier.types import Funds, MarketResolved, OrderIntent, Side

KEY = "0x" + "7b" * 32
ME = Account.from_key(KEY).address.lower()
DW = "0x" + "d7" * 20
POL = 10**18
U = 10**6
CIDS = ["0x" + f"{i:02x}" * 32 for i in range(1, 7)]
TOKENS = {cid: (str(1000 + 2 * i), str(1001 + 2 * i)) for i, cid in enumerate(CIDS)}
RC = RedeemConfig()


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def alert(self, kind: str, message: str, **context: object) -> None:
        self.sent.append((kind, message))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.sent]


class Markets:
    def tokens(self, condition_id, asset):
        return TOKENS[condition_id]


class Crash(BaseException):
    """kill -9: nothing after it runs, no handler sees it."""


def _cfg(via: str = "eoa", **redeem) -> Config:
    account = AccountConfig(signature_type=3, funder=DW) if via == "relayer" else AccountConfig()
    return Config(execution=ExecutionConfig(dry_run=False), account=account, redeem=RedeemConfig(**redeem))


def _bought(store: Store, cid: str, asset: str, n: int, now: float) -> None:
    """A filled BUY in the store, as the executor leaves it."""
    intent = OrderIntent(intent_id=f"i{n}-{cid[2:8]}", condition_id=cid, asset=asset, outcome="Up", side=Side.BUY,
                         size=10, price_cap=0.5, notional=5, source_price=0.5, fill_keys=(f"k{n}{cid}",),
                         kind="single", decided_at=now - 1000, opening=True, market_end_ts=now - 100)
    store.record_remainder(intent, int(now * 1e9), int(now * 1e9))
    store.record_signed(intent.intent_id, f"0xh{n}{cid}", "{}", int(now * 1e9))
    store.update_order(intent.intent_id, int(now * 1e9), filled_size=10.0, status="MATCHED")


def _world(tmp_path, via="eoa", n_markets=3, winner_units=(7 * U, 5 * U, 3 * U), **redeem):
    clock = FakeClock(1_800_000_000.0)
    chain = StubChain()
    holder = DW if via == "relayer" else ME
    chain.pol[ME] = 2 * POL
    store = Store.open(str(tmp_path / "copier.sqlite"))
    for i, cid in enumerate(CIDS[:n_markets]):
        chain.add_market(cid, TOKENS[cid])
        chain.hold(holder, TOKENS[cid][0], winner_units[i])
        chain.hold(holder, TOKENS[cid][1], 2 * U)
        _bought(store, cid, TOKENS[cid][0], i, clock.now())
    relayer = StubRelayer(chain, DW) if via == "relayer" else None
    return clock, chain, store, relayer


def _redeemer(cfg, store, chain, relayer, clock, alerts=None) -> Redeemer:
    return Redeemer(cfg, private_key=KEY, store=store, rpc=chain, relayer=relayer, markets=Markets(), clock=clock,
                    metrics=NullMetrics(), alerts=alerts or Alerts())


def _run(r: Redeemer, chain: StubChain, relayer, clock: FakeClock, rounds: int = 40) -> None:
    """Ticks and blocks until nothing is unresolved and a pass found nothing more to do."""
    for _ in range(rounds):
        r.tick()
        chain.mine()
        if relayer is not None:
            relayer.mine()
        clock.advance(61)


# ---- the pure selection ----------------------------------------------------------------------------------------
def test_select_resolved_winners_only_largest_first_and_never_a_covered_one():
    holdings = {"a": (5 * U, 0), "b": (0, 9 * U), "c": (4 * U, 4 * U), "d": (0, 3 * U), "e": (2 * U, 0)}
    res = {"a": Resolution((1, 0), 1), "b": Resolution((0, 1), 1), "c": Resolution((1, 0), 1),
           "d": Resolution((1, 0), 1)}                 # d: we hold only the loser; e: not resolved
    out = select(holdings, res, covered={"c"}, merging=(), failures={}, cfg=RC)
    assert out == [Planned(CallKind.REDEEM, "b", payout_units=9 * U), Planned(CallKind.REDEEM, "a", payout_units=5 * U)]


def test_select_leaves_a_market_to_the_operator_after_max_failures():
    holdings, res = {"a": (5 * U, 0)}, {"a": Resolution((1, 0), 1)}
    assert select(holdings, res, (), (), {"a": 2}, RedeemConfig(max_failures=3))
    assert select(holdings, res, (), (), {"a": 3}, RedeemConfig(max_failures=3)) == []


def test_select_merges_full_sets_of_open_markets_only_when_configured():
    holdings = {"a": (5 * U, 3 * U), "b": (2 * U, 0), "c": (U // 2, U)}
    assert select(holdings, {}, (), (), {}, RC) == []
    out = select(holdings, {}, (), (), {}, RedeemConfig(merge_full_sets=True))
    assert out == [Planned(CallKind.MERGE, "a", amount_units=3 * U, payout_units=3 * U)]
    assert select(holdings, {}, (), {"a"}, {}, RedeemConfig(merge_full_sets=True)) == []


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.tuples(st.integers(0, 10**9), st.integers(0, 10**9))),
       st.dictionaries(st.sampled_from("abcdefgh"), st.sampled_from([(1, 0), (0, 1), (1, 1)])),
       st.sets(st.sampled_from("abcdefgh")), st.integers(1, 5), st.booleans())
def test_select_never_redeems_a_covered_unresolved_or_worthless_market(holdings, payouts, covered, batch, merge):
    res = {c: Resolution(p, sum(p)) for c, p in payouts.items()}
    cfg = RedeemConfig(max_per_batch=batch, merge_full_sets=merge)
    out = select(holdings, res, covered, (), {}, cfg)
    assert len(out) <= batch and len({p.condition_id for p in out}) == len(out)
    for p in out:
        if p.kind is CallKind.REDEEM:
            assert p.condition_id in res and p.condition_id not in covered
            assert p.payout_units == res[p.condition_id].payout_units(holdings[p.condition_id]) > 0
        else:
            assert merge and p.condition_id not in res and p.amount_units == min(holdings[p.condition_id]) >= U
    assert [p.payout_units for p in out] == sorted((p.payout_units for p in out), reverse=True)


# ---- EOA: end to end on the stub node ---------------------------------------------------------------------------
def test_redeemer_eoa_approves_once_then_redeems_every_winner_once_and_pays_gas(tmp_path):
    clock, chain, store, _ = _world(tmp_path)
    for i, cid in enumerate(CIDS[:3]):
        chain.resolve(cid, 0 if i != 2 else 1)           # the third market: we hold 2 of the winner (Down)
    alerts = Alerts()
    r = _redeemer(_cfg(), store, chain, None, clock, alerts)
    _run(r, chain, None, clock)
    assert sorted(chain.redeemed()) == sorted(CIDS[:3])
    assert all(len(v) == 1 for v in chain.redeemed().values())
    assert chain.pusd[ME] == 7 * U + 5 * U + 2 * U
    assert [k for _, k, _, _ in chain.applied].count("approve") == 1
    rows = store.chain_actions()
    assert [json.loads(r["calls"])[0]["kind"] for r in rows] == ["approve", "redeem", "redeem", "redeem"]
    assert {r["status"] for r in rows} == {ActionStatus.CONFIRMED.value}
    assert all(r["gas_used"] == 150_000 and r["gas_price"] == 60 * GWEI for r in rows)
    assert alerts.sent == [] and r.redeemable_units == 0
    assert [row["nonce"] for row in rows] == [0, 1, 2, 3]


def test_redeemer_waits_for_the_chains_resolution_whatever_the_websocket_said(tmp_path):
    clock, chain, store, _ = _world(tmp_path, n_markets=1)
    r = _redeemer(_cfg(), store, chain, None, clock)
    r.on_resolved(MarketResolved(CIDS[0], TOKENS[CIDS[0]], TOKENS[CIDS[0]][0], clock.now()))
    _run(r, chain, None, clock, rounds=5)
    assert chain.redeemed() == {} and store.chain_actions() == []       # unresolved on chain: nothing signed
    chain.resolve(CIDS[0], 0)
    r.on_resolved(MarketResolved(CIDS[0], TOKENS[CIDS[0]], TOKENS[CIDS[0]][0], clock.now()))
    for _ in range(6):
        clock.advance(1.0)                                           # well inside redeem.interval_s
        r.tick()
        chain.mine()
    assert list(chain.redeemed()) == [CIDS[0]]


def test_redeemer_eoa_short_of_pol_alerts_once_and_sends_nothing(tmp_path):
    clock, chain, store, _ = _world(tmp_path, n_markets=2)
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    for cid in CIDS[:2]:
        chain.resolve(cid, 0)
    chain.pol[ME] = 10**15                                           # 0.001 POL
    alerts = Alerts()
    r = _redeemer(_cfg(), store, chain, None, clock, alerts)
    _run(r, chain, None, clock, rounds=4)
    assert chain.sent == [] and store.chain_actions() == [] and alerts.kinds() == ["low_pol"]
    assert r.redeemable_units == 12 * U                              # counted by the funds check meanwhile
    chain.pol[ME] = POL
    _run(r, chain, None, clock, rounds=4)
    assert sorted(chain.redeemed()) == sorted(CIDS[:2])


def test_redeemer_a_reverted_redemption_is_failed_alerted_and_tried_again_as_a_new_one(tmp_path):
    clock, chain, store, _ = _world(tmp_path, n_markets=1)
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    chain.resolve(CIDS[0], 0)
    chain.paused = True
    alerts = Alerts()
    r = _redeemer(_cfg(max_failures=2), store, chain, None, clock, alerts)
    _run(r, chain, None, clock, rounds=2)
    assert [row["status"] for row in store.chain_actions()] == ["FAILED"]
    assert "receipt status 0" in store.chain_actions()[0]["error"] and alerts.kinds() == ["redemption_failed"]
    chain.paused = False
    _run(r, chain, None, clock, rounds=3)
    assert [row["status"] for row in store.chain_actions()] == ["FAILED", "CONFIRMED"]
    assert len(chain.redeemed()[CIDS[0]]) == 1


# ---- kill -9 at every step: never a second transaction -----------------------------------------------------------
EOA_POINTS = ["after_record", "send_applied_answer_lost", "after_send_before_status", "after_receipt_before_status"]


def _arm(r: Redeemer, chain: StubChain, store: Store, point: str) -> None:
    if point == "after_record":
        real = store.record_chain_actions

        def record_then_die(rows):
            real(rows)
            raise Crash(point)
        store.record_chain_actions = record_then_die
    elif point == "send_applied_answer_lost":
        real_call = chain.call

        def call(method, *params):
            out = real_call(method, *params)
            if method == "eth_sendRawTransaction":
                raise Crash(point)
            return out
        r.rpc = type("R", (), {"call": staticmethod(call)})()
    else:
        want = ActionStatus.SENT.value if point == "after_send_before_status" else ActionStatus.CONFIRMED.value
        real_update = store.update_chain_action

        def update(action_id, now_ns, **fields):
            if fields.get("status") == want:
                raise Crash(point)
            real_update(action_id, now_ns, **fields)
        store.update_chain_action = update


@pytest.mark.parametrize("point", EOA_POINTS)
def test_redeemer_eoa_kill_at_every_step_redeems_each_market_with_one_transaction(tmp_path, point):
    clock, chain, store, _ = _world(tmp_path)
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    for cid in CIDS[:3]:
        chain.resolve(cid, 0)
    first = _redeemer(_cfg(), store, chain, None, clock)
    _arm(first, chain, store, point)
    with pytest.raises(Crash):
        for _ in range(10):
            first.tick()
            chain.mine()
            clock.advance(61)
    store.close()
    store = Store.open(str(tmp_path / "copier.sqlite"))             # the restarted process
    signed_before = {row["tx_hash"] for row in store.chain_actions()}
    again = _redeemer(_cfg(), store, chain, None, clock)
    _run(again, chain, None, clock)
    redeemed = chain.redeemed()
    assert sorted(redeemed) == sorted(CIDS[:3]) and all(len(v) == 1 for v in redeemed.values())
    rows = store.chain_actions()
    assert len(rows) == 3 and {r["status"] for r in rows} == {"CONFIRMED"}
    assert signed_before <= {r["tx_hash"] for r in rows}              # what was signed before the kill was kept
    assert len({raw for raw in chain.sent}) == len(chain.sent) == 3   # no other transaction ever reached the node
    assert chain.pusd[ME] == 15 * U


RELAYER_POINTS = ["after_record", "submit_applied_answer_lost", "after_submit_before_status",
                  "after_confirmed_before_status"]


@pytest.mark.parametrize("point", RELAYER_POINTS)
def test_redeemer_relayer_kill_at_every_step_sends_one_batch(tmp_path, point):
    clock, chain, store, relayer = _world(tmp_path, via="relayer")
    for cid in CIDS[:3]:
        chain.resolve(cid, 0)
    first = _redeemer(_cfg("relayer"), store, chain, relayer, clock)
    if point == "submit_applied_answer_lost":
        real = relayer.submit

        def submit_then_die(body):
            real(body)
            raise Crash(point)
        relayer.submit = submit_then_die
    elif point == "after_record":
        _arm(first, chain, store, point)
    else:
        want = "SENT" if point == "after_submit_before_status" else "CONFIRMED"
        real_update = store.update_chain_action

        def update(action_id, now_ns, **fields):
            if fields.get("status") == want:
                raise Crash(point)
            real_update(action_id, now_ns, **fields)
        store.update_chain_action = update
    with pytest.raises(Crash):
        for _ in range(10):
            first.tick()
            relayer.mine()
            clock.advance(61)
    if point == "submit_applied_answer_lost":
        relayer.submit = real
    store.close()
    store = Store.open(str(tmp_path / "copier.sqlite"))
    again = _redeemer(_cfg("relayer"), store, chain, relayer, clock)
    _run(again, chain, relayer, clock)
    assert len(relayer.batches) == 1                                  # one signed batch, however often submitted
    redeemed = chain.redeemed()
    assert sorted(redeemed) == sorted(CIDS[:3]) and all(v == ["rel-1"] for v in redeemed.values())
    assert [r["status"] for r in store.chain_actions()] == ["CONFIRMED"]
    assert chain.pusd[DW] == 15 * U and ME not in chain.pusd
    assert [k for _, k, _, _ in chain.applied].count("approve") == 1


def test_redeemer_relayer_failed_batch_is_failed_and_alerted(tmp_path):
    clock, chain, store, relayer = _world(tmp_path, via="relayer", n_markets=1)
    chain.resolve(CIDS[0], 0)
    relayer.fail_on_chain = True
    alerts = Alerts()
    r = _redeemer(_cfg("relayer", max_failures=1), store, chain, relayer, clock, alerts)
    _run(r, chain, relayer, clock, rounds=5)
    assert [row["status"] for row in store.chain_actions()] == ["FAILED"]
    assert alerts.kinds() == ["redemption_failed"] and "OnlyUnpaused" in alerts.sent[0][1]
    assert len(relayer.batches) == 1                                  # max_failures 1: left to the operator


def test_redeemer_relayer_batch_whose_nonce_moved_on_is_failed_a_busy_wallet_is_not(tmp_path):
    clock, chain, store, relayer = _world(tmp_path, via="relayer", n_markets=1)
    chain.resolve(CIDS[0], 0)
    relayer.wallet_nonce = 0
    r = _redeemer(_cfg("relayer"), store, chain, relayer, clock)
    real = relayer.submit
    relayer.submit = lambda body: (400, {"error": "wallet busy: active action"})
    for _ in range(5):
        r.tick()
        clock.advance(30)
    assert [row["status"] for row in store.chain_actions()] == ["SIGNED"]   # busy proves nothing
    relayer.wallet_nonce = 1                                              # the nonce went to another batch
    relayer.submit = real
    for _ in range(5):
        r.tick()
        relayer.mine()
        clock.advance(61)
    first, second = store.chain_actions()
    assert first["status"] == "FAILED" and "does not match on-chain nonce" in first["error"]
    assert (second["status"], second["nonce"]) == ("CONFIRMED", 1)          # a new batch, signed for nonce 1
    assert chain.redeemed() == {CIDS[0]: ["rel-1"]}


# ---- hostile answers ------------------------------------------------------------------------------------------
class Hostile:
    """The stub node behind answers that go wrong for the first `n` calls of `method`."""

    def __init__(self, chain: StubChain, method: str, answer, n: int = 3):
        self.chain, self.method, self.answer, self.n = chain, method, answer, n

    def call(self, method: str, *params):
        if method == self.method and self.n > 0:
            self.n -= 1
            if isinstance(self.answer, Exception):
                if method == "eth_sendRawTransaction":
                    self.chain.call(method, *params)               # applied, then the answer is lost
                raise self.answer
            return self.answer
        return self.chain.call(method, *params)


@pytest.mark.parametrize("method,answer", [
    ("eth_call", "<html>502</html>"), ("eth_call", {"not": "hex"}), ("eth_call", "0x12"),
    ("eth_getTransactionCount", None), ("eth_getTransactionCount", "0xzz"), ("eth_estimateGas", 7),
    ("eth_sendRawTransaction", TemporaryError("eth_sendRawTransaction: ReadTimeout")),
    ("eth_sendRawTransaction", RpcAnswerError(-32603, "internal error")),
    ("eth_getTransactionReceipt", {"status": "0x7", "gasUsed": "0x1"}),
    ("eth_getTransactionReceipt", ["not", "an", "object"]),
    ("eth_getTransactionReceipt", TemporaryError("HTTP 500, not JSON")),
    ("eth_getBalance", float("nan")),
])
def test_redeemer_hostile_node_answers_are_never_fatal_nor_a_second_transaction(tmp_path, method, answer):
    clock, chain, store, _ = _world(tmp_path, n_markets=2)
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    for cid in CIDS[:2]:
        chain.resolve(cid, 0)
    r = _redeemer(_cfg(), store, chain, None, clock)
    r.rpc = Hostile(chain, method, answer)
    for _ in range(30):
        try:
            r.tick()
        except Exception as exc:      # the runtime's error policy counts a failed pass; the state must stay sound
            assert isinstance(exc, (TemporaryError, ValueError, TypeError)) or "Malformed" in type(exc).__name__
        chain.mine()
        clock.advance(61)
    redeemed = chain.redeemed()
    assert sorted(redeemed) == sorted(CIDS[:2]) and all(len(v) == 1 for v in redeemed.values())
    assert len(store.chain_actions()) == 2 and {row["status"] for row in store.chain_actions()} == {"CONFIRMED"}


def test_redeemer_a_receipt_that_never_comes_stays_pending_resends_the_same_bytes_and_alerts(tmp_path):
    clock, chain, store, _ = _world(tmp_path, n_markets=1)
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    chain.resolve(CIDS[0], 0)
    alerts = Alerts()
    r = _redeemer(_cfg(stuck_alert_s=300), store, chain, None, clock, alerts)
    for _ in range(40):                      # never mined
        r.tick()
        clock.advance(30)
    (row,) = store.chain_actions()
    assert row["status"] == "SENT" and len(chain.sent) == 1 and len(chain.pool) == 1
    assert alerts.kinds() == ["redemption_stuck"]
    chain.mine()
    clock.advance(61)
    r.tick()
    assert store.chain_actions()[0]["status"] == "CONFIRMED" and len(chain.redeemed()[CIDS[0]]) == 1


def test_redeemer_a_refused_send_keeps_the_same_bytes_until_the_node_takes_them(tmp_path):
    clock, chain, store, _ = _world(tmp_path, n_markets=1)
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    chain.resolve(CIDS[0], 0)
    alerts = Alerts()
    r = _redeemer(_cfg(), store, chain, None, clock, alerts)
    r.tick()                                  # signed and sent
    (row,) = store.chain_actions()
    raw = row["payload"]
    chain.pool.clear()                        # the node dropped it ...
    chain.pol[ME] = 0                         # ... and now refuses it: insufficient funds
    for _ in range(5):
        clock.advance(61)
        r.tick()
    assert store.chain_actions()[0]["status"] == "SENT" and "insufficient funds" in store.chain_actions()[0]["error"]
    assert alerts.kinds() == ["redemption_not_sent"]
    chain.pol[ME] = POL
    _run(r, chain, None, clock, rounds=4)
    assert chain.sent == [raw, raw] and len(chain.redeemed()[CIDS[0]]) == 1


def test_redeemer_nonce_taken_by_another_transaction_fails_only_after_it_stays_unknown(tmp_path):
    clock, chain, store, _ = _world(tmp_path, n_markets=1)
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    chain.resolve(CIDS[0], 0)
    alerts = Alerts()
    r = _redeemer(_cfg(), store, chain, None, clock, alerts)
    r.tick()
    chain.pool.clear()
    chain.nonces[ME] = 1                      # something else (another tool with this key) used nonce 0
    clock.advance(61)
    r.tick()
    assert store.chain_actions()[0]["status"] == "SENT"                  # not yet: the node may lag
    for _ in range(4):
        clock.advance(61)
        r.tick()
    assert store.chain_actions()[0]["status"] == "FAILED" and alerts.kinds() == ["redemption_failed"]


def _stub_http(handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://node")


@pytest.mark.parametrize("reply", [
    lambda req: httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"),
    lambda req: httpx.Response(200, text="[1, 2"),
    lambda req: httpx.Response(200, json=[1, 2]),
    lambda req: httpx.Response(200, json={"jsonrpc": "2.0", "id": 1}),
    lambda req: httpx.Response(500, json={"jsonrpc": "2.0", "id": 1}),
    lambda req: httpx.Response(200, content=b"\xff\xfe\x00garbage"),
    lambda req: httpx.Response(200, text="[" * 100_000 + "]" * 100_000),
])
def test_http_rpc_unusable_answers_are_temporary_errors(reply):
    rpc = HttpRpc("http://node/", client=_stub_http(reply))
    with pytest.raises(TemporaryError):
        rpc.call("eth_blockNumber")


def test_http_rpc_timeouts_are_temporary_and_error_objects_are_the_nodes_words():
    def timeout(req):
        raise httpx.ReadTimeout("timed out", request=req)
    with pytest.raises(TemporaryError):
        HttpRpc("http://node/", client=_stub_http(timeout)).call("eth_blockNumber")
    err = HttpRpc("http://node/", client=_stub_http(lambda req: httpx.Response(200, json={
        "jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "nonce too low: next nonce 3, tx nonce 2"}})))
    with pytest.raises(RpcAnswerError) as e:
        err.call("eth_sendRawTransaction", "0x00")
    assert e.value.code == -32000 and e.value.message.startswith("nonce too low")


def test_http_relayer_answers_keep_status_and_never_raise_on_bad_bodies():
    def reply(req):
        if req.url.path == "/submit":
            return httpx.Response(503, text="<html>503</html>")
        if req.url.path.startswith("/v1/account/transactions/"):
            return httpx.Response(400, text="<html>bad</html>")
        raise httpx.ConnectError("refused", request=req)
    rel = HttpRelayer("http://relayer", "k", "0x" + "11" * 20, client=_stub_http(reply))
    assert rel.submit({"a": 1}) == (503, None)
    assert rel.transaction("x") == (400, {"error": "<html>bad</html>"})
    with pytest.raises(TemporaryError):
        rel.transactions()


@pytest.mark.parametrize("status,doc", [(503, None), (200, "<html>"), (200, {"transactionID": 5}),
                                        (200, {"transactionID": ""}), (400, None), (404, {"error": 7})])
def test_redeemer_hostile_relayer_answers_keep_the_batch_pending_and_unique(tmp_path, status, doc):
    clock, chain, store, relayer = _world(tmp_path, via="relayer", n_markets=2)
    for cid in CIDS[:2]:
        chain.resolve(cid, 0)
    real = relayer.submit
    bad = {"n": 3}

    def submit(body):
        if bad["n"]:
            bad["n"] -= 1
            real(body)                       # taken, and the answer is garbage
            return status, doc
        return real(body)
    relayer.submit = submit
    r = _redeemer(_cfg("relayer"), store, chain, relayer, clock)
    for _ in range(20):
        try:
            r.tick()
        except TemporaryError:
            pass
        relayer.mine()
        clock.advance(61)
    assert len(relayer.batches) == 1 and [row["status"] for row in store.chain_actions()] == ["CONFIRMED"]
    assert sorted(chain.redeemed()) == sorted(CIDS[:2])


# ---- merge, the funds check, the store ---------------------------------------------------------------------------
def test_redeemer_merges_full_sets_when_configured_with_the_same_write_ahead(tmp_path):
    clock, chain, store, _ = _world(tmp_path, n_markets=1, winner_units=(7 * U,))
    chain.approved.add((ME, "0xada100db00ca00073811820692005400218fce1f"))
    r = _redeemer(_cfg(merge_full_sets=True), store, chain, None, clock)
    _run(r, chain, None, clock, rounds=4)
    assert chain.redeemed("merge") == {CIDS[0]: [store.chain_actions()[0]["tx_hash"]]}
    assert chain.pusd[ME] == 2 * U and chain.balances[(ME, TOKENS[CIDS[0]][0])] == 5 * U
    chain.resolve(CIDS[0], 0)
    _run(r, chain, None, clock, rounds=4)
    assert chain.pusd[ME] == 7 * U and len(chain.redeemed()[CIDS[0]]) == 1


def test_funding_refusals_count_redeemable_winnings():
    cfg = Config()
    funds = Funds(balance_usd=10.0, allowances_usd=())
    assert [r for r, _ in funding_refusals(funds, cfg)] == ["low_balance"]
    assert funding_refusals(funds, cfg, redeemable_usd=20.0) == []
    (reason, detail), = funding_refusals(funds, cfg, redeemable_usd=5.0)
    assert "+ 5.00 redeemable" in detail


def test_store_bought_markets_lists_filled_buys_of_ended_markets_only(tmp_path):
    store = Store.open(str(tmp_path / "s.sqlite"))
    now = 1_800_000_000.0
    _bought(store, CIDS[0], "7", 1, now)
    assert store.bought_markets(now - 3600, now) == [(CIDS[0], "7")]
    assert store.bought_markets(now - 3600, now - 200) == []              # not ended by then
    assert store.bought_markets(now - 10, now) == []                       # decided before the lookback


RECORDED = json.loads((Path(__file__).parents[1] / "payloads" / "polymarket" /
                       "gamma_event_btc_updown_15m_trimmed_fixture.json").read_text())
RECORDED_CID = RECORDED["markets"][0]["conditionId"]


class Catalog:
    def __init__(self, known=()):
        self.known = {t: m for m in known for t in m.token_ids}

    def by_asset(self, asset):
        return self.known.get(asset)


def test_gamma_tokens_ask_for_closed_markets_once_and_prefer_the_catalog():
    asked = []

    def gamma(req):
        asked.append(dict(req.url.params))
        closed = {**RECORDED["markets"][0], "closed": True}
        return httpx.Response(200, json=[closed] if req.url.params["condition_ids"] == RECORDED_CID else [])
    tokens = GammaTokens(Catalog([market(cid=CIDS[0], tokens=TOKENS[CIDS[0]])]), "http://gamma",
                         client=_stub_http(gamma))
    assert tokens.tokens(CIDS[0], TOKENS[CIDS[0]][0]) == TOKENS[CIDS[0]] and asked == []
    assert tokens.tokens(RECORDED_CID, "up-token") == ("up-token", "down-token")
    assert tokens.tokens(RECORDED_CID, "up-token") == ("up-token", "down-token")
    assert asked == [{"condition_ids": RECORDED_CID, "closed": "true"}]          # closed ones too; kept after
    assert tokens.tokens(CIDS[1], "x") is None
    assert asked[1:] == [{"condition_ids": CIDS[1], "closed": "true"}, {"condition_ids": CIDS[1], "closed": "false"}]


@pytest.mark.parametrize("reply", [lambda req: httpx.Response(500, text="<html>"),
                                   lambda req: httpx.Response(200, text="<html>"),
                                   lambda req: httpx.Response(200, json={"markets": "nope"})])
def test_gamma_tokens_unusable_answers_are_temporary_or_unknown_never_fatal(reply):
    tokens = GammaTokens(Catalog(), "http://gamma", client=_stub_http(reply))
    try:
        assert tokens.tokens(RECORDED_CID, "up-token") is None
    except (TemporaryError, MalformedMessage):
        pass
