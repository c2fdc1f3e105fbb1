"""The soak verdict is proven able to fail: a recorded run whose executor re-signs on retry is caught.

Both runs go against the real simulator with an accepted-then-timed-out POST (the venue executes the order but the
answer never arrives in time). The correct executor retries the same signed bytes; the broken one signs a fresh
order on retry, as some public bots do, and the venue executes both.
"""
from copier.clock import LiveClock
from copier.config import parse_config
from copier.decision import decide
from copier.errors import UnknownOutcome
from copier.executor import ClobExecutor
from copier.exposure import ExposureBook
from copier.markets import MarketCatalog
from copier.metrics import NullMetrics
from copier.report import build_report
from copier.signing import OrderSigner
from copier.store import Store
from copier.transport import ApiCreds, ClobTransport
from copier.types import Batch, Feed, Side, SourceFill
from polylab.harness import SIM_PRIVATE_KEY, copier_config
from polylab.soak import derive_creds, ground_truth_verdict, judge_run


class ResigningExecutor(ClobExecutor):
    """The bug under test: every retry after an unanswered POST signs a new order (new salt, new hash)."""

    def submit(self, intent, market):
        signed = self.signer.sign(intent, market)
        signed_ns = self.clock.now_ns()
        self.store.record_signed(intent.intent_id, signed.order_hash, signed.body, signed_ns)
        for attempt in range(1, 4):
            try:
                resp = self.transport.request("POST", "/order", signed.body)
            except UnknownOutcome:
                signed = self.signer.sign(intent, market)
                self.store.update_order(intent.intent_id, self.clock.now_ns(), order_hash=signed.order_hash,
                                        body=signed.body)
                continue
            return self._answer(intent.intent_id, intent.side, signed.order_hash, resp, signed_ns, self.clock.now_ns(),
                                attempt)
        raise AssertionError("the simulator never answered")


def _copy_one_source_fill(sim, cfg, catalog, store, executor_cls, signer, transport, clock):
    sim.fresh_window(30)
    src = sim.source_fill(asset="btc", outcome="Up", side="BUY", size=20)
    mine = src["fills"][0]
    fill = SourceFill(tx_hash=src["tx_hash"].lower(), asset=src["token_id"], condition_id=src["condition_id"],
                      outcome="Up", outcome_index=0, side=Side(mine["side"]), price=float(mine["price"]),
                      size=float(mine["size"]), match_ts=src["match_time"], recv_ns=clock.now_ns(),
                      feed=Feed.RTDS_TRADES.value)
    market = catalog.lookup(fill.condition_id, fill.asset)
    now = clock.now()
    intent = decide(ExposureBook(), Batch(fill.condition_id, "Up", fill.asset, (fill,), "leading", now), market,
                    now, cfg)
    store.record_decision([fill], intent, clock.now_ns())
    sim.faults(post_timeout_after_accept={"count": 1, "delay_s": 2.0})
    executor = executor_cls(cfg, signer=signer, transport=transport, store=store, clock=clock, metrics=NullMetrics())
    return executor.submit(intent, market)


def _judge(sim, store, cfg, db_path):
    return judge_run(build_report(store, cfg), ground_truth_verdict(sim.ground_truth_events(), db_path))


def test_the_verdict_passes_a_retry_of_the_same_bytes_and_fails_a_re_signed_retry(sim, tmp_path):
    clock = LiveClock()
    db_path = tmp_path / "copier.sqlite"
    cfg_dict = copier_config(sim.urls, db_path, dry_run=False, speed=900 / sim.window_s,
                             overrides={"execution": {"dry_run": False, "post_timeout_s": 0.5,
                                                      "max_slippage_bps": 300}})
    cfg = parse_config(cfg_dict)
    creds = ApiCreds(*derive_creds(sim.urls["clob"]))
    signer = OrderSigner(SIM_PRIVATE_KEY, 137, 0, "", creds.api_key)
    transport = ClobTransport(sim.urls["clob"], creds, signer.address, clock=clock, timeout_s=0.5)
    catalog = MarketCatalog(cfg, clock=clock)
    store = Store.open(str(db_path))
    try:
        report = _copy_one_source_fill(sim, cfg, catalog, store, ClobExecutor, signer, transport, clock)
        assert report.status == "MATCHED" and report.attempts == 2     # same bytes -> Duplicated -> found by hash
        assert _judge(sim, store, cfg, db_path) == {}

        report = _copy_one_source_fill(sim, cfg, catalog, store, ResigningExecutor, signer, transport, clock)
        assert report.status == "MATCHED"
        problems = _judge(sim, store, cfg, db_path)
        assert list(problems) == ["ground_truth_duplicates"]
        assert len(problems["ground_truth_duplicates"]) == 1            # the first, re-signed-away order
    finally:
        transport.close()
        store.close()

