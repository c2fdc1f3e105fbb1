"""Confirm / retract of source fills across feeds, the confirmation gate, their records and the report (fake clock)."""
from dataclasses import replace

import pytest
from helpers import T0, fill, market

from copier.chain import ChainLogFeed, MempoolFeed, RpcAnswer, pad_topic
from copier.clock import FakeClock
from copier.config import Config, FeedsConfig
from copier.decision import decide
from copier.dedupe import Deduper
from copier.detection import CONFIRMED, PENDING, REMOVED, ConfirmationGate, Detection
from copier.exposure import ExposureBook
from copier.metrics import NullMetrics
from copier.report import build_report, render_text
from copier.store import MIGRATIONS, Store
from copier.types import Batch, Feed

MEMPOOL, RTDS, LOGS = Feed.MEMPOOL.value, Feed.RTDS_TRADES.value, Feed.CHAIN_LOGS.value
FEEDS = FeedsConfig(confirm_timeout_s=10.0, reinclude_timeout_s=5.0)


class RecordingAlerts:
    def __init__(self):
        self.sent = []

    def alert(self, kind, message, **context):
        self.sent.append((kind, message, context))


@pytest.fixture()
def clock():
    return FakeClock(T0 + 1.0)


@pytest.fixture()
def store(tmp_path):
    s = Store.open(str(tmp_path / "d.sqlite"))
    yield s
    s.close()


@pytest.fixture()
def alerts():
    return RecordingAlerts()


@pytest.fixture()
def det(clock, store, alerts):
    return Detection(Deduper(), FEEDS, clock=clock, metrics=NullMetrics(), alerts=alerts, store=store)


def _seen(f, feed, clock, match_ts=None):
    """The fill as `feed` delivers it now."""
    return replace(f, feed=feed, recv_ns=clock.now_ns(), confirmed=feed != MEMPOOL,
                   match_ts=f.match_ts if match_ts is None else match_ts)


def _copy(store, f, status="MATCHED"):
    """Record f as decided into an order that reached the venue."""
    b = Batch(f.condition_id, f.outcome, f.asset, (f,), "leading", T0)
    d = decide(ExposureBook(), b, market(), T0, Config())
    assert store.record_decision([f], d, f.recv_ns)
    store.record_signed(d.intent_id, f"0xorder{d.intent_id}", "{}", f.recv_ns)
    store.update_order(d.intent_id, f.recv_ns, status=status)
    return d


def _events(store):
    return [(e["dedupe_key"], e["kind"], e["reason"], e["copied"]) for e in store.fill_events_since(0)]


# ---- confirm / retract ----------------------------------------------------------------------------------------
def test_mempool_first_triggers_and_rtds_only_confirms(det, clock, store):
    # Arrange
    f = fill(1, t=T0 + 0.35)
    # Act
    first = det.sight(_seen(f, MEMPOOL, clock), f"chain-mempool:{f.tx_hash}", "0")
    clock.advance(1.4)
    again = det.sight(_seen(f, RTDS, clock, match_ts=T0), "rtds-a#1:rtds.trades")
    clock.advance(30)
    det.step()
    # Assert
    assert first is not None and not first.confirmed and again is None
    t = det.track(first.dedupe_key)
    assert (t.status, t.confirm_feed, t.confirm_recv_ns) == (CONFIRMED, RTDS, int((T0 + 2.4) * 1e9))
    rows = list(store.sightings_since(0))
    assert [(r["feed"], r["first"], r["dedupe_key"]) for r in rows] == [(MEMPOOL, True, first.dedupe_key),
                                                                          (RTDS, False, first.dedupe_key)]
    assert _events(store) == []


def test_a_mempool_fill_nobody_confirms_is_retracted_and_alerted_only_when_copied(det, clock, store, alerts):
    copied, ignored = fill(1), fill(2)
    a = det.sight(_seen(copied, MEMPOOL, clock), "m:1", "0")
    b = det.sight(_seen(ignored, MEMPOOL, clock), "m:2", "0")
    _copy(store, a)
    clock.advance(9.9)
    det.step()
    assert det.track(a.dedupe_key).status == PENDING
    clock.advance(0.2)
    det.step()
    assert {(k, kind, reason, c) for k, kind, reason, c in _events(store)} == {
        (a.dedupe_key, "retracted", "never_confirmed", True), (b.dedupe_key, "retracted", "never_confirmed", False)}
    assert [(kind, ctx["dedupe_key"], ctx["reason"]) for kind, _, ctx in alerts.sent] == [
        ("source_fill_retracted", a.dedupe_key, "never_confirmed")]


def test_a_late_confirmation_reinstates_a_retracted_mempool_fill_without_a_second_admission(det, clock, store):
    f = fill(1)
    a = det.sight(_seen(f, MEMPOOL, clock), "m:1", "0")
    clock.advance(11)
    det.step()
    assert det.sight(_seen(f, RTDS, clock), "rtds-a#1:rtds.trades") is None
    det.step()
    assert det.track(a.dedupe_key).status == CONFIRMED
    assert [kind for _, kind, _, _ in _events(store)] == ["retracted", "reinstated"]


def test_a_reorged_log_reincluded_in_another_block_is_the_same_fill(det, clock, store):
    f = fill(1)
    a = det.sight(_seen(f, LOGS, clock), "chain-logs:0xblockA", "3")
    clock.advance(2)
    det.removed(_seen(f, LOGS, clock))
    assert det.track(a.dedupe_key).status == REMOVED
    clock.advance(2)
    assert det.sight(_seen(f, LOGS, clock), "chain-logs:0xblockB", "0") is None
    clock.advance(20)
    det.step()
    assert det.track(a.dedupe_key).status == CONFIRMED
    assert [kind for _, kind, _, _ in _events(store)] == ["removed", "reincluded"]


def test_a_copied_fill_reorged_out_for_good_is_retracted_and_alerted(det, clock, store, alerts):
    f = fill(1)
    a = det.sight(_seen(f, LOGS, clock), "chain-logs:0xblockA", "3")
    det.sight(_seen(f, RTDS, clock), "rtds-a#1:rtds.trades")
    _copy(store, a)
    det.removed(_seen(f, LOGS, clock))
    clock.advance(4.9)
    det.step()
    assert alerts.sent == []
    clock.advance(0.2)
    det.step()
    assert _events(store)[-1] == (a.dedupe_key, "retracted", "reorged_out", True)
    assert alerts.sent[0][0] == "source_fill_retracted" and "reorged out" in alerts.sent[0][1]


def test_not_mined_is_judged_only_when_the_logs_feed_was_live_before_the_match(det, clock, store):
    live = {"since": None}
    det.logs_live_since = lambda: live["since"]
    mined, unmined, early = fill(1, t=T0), fill(2, t=T0), fill(3, t=T0 - 60)
    for f in (mined, unmined, early):
        det.sight(_seen(f, RTDS, clock), "rtds-a#1:rtds.trades")
    det.sight(_seen(mined, LOGS, clock), "chain-logs:0xblockA", "0")
    clock.advance(11)
    det.step()
    assert _events(store) == []                       # logs feed down: no verdict
    live["since"] = T0 - 30
    det.step()
    assert [(k, reason) for k, _, reason, _ in _events(store)] == [(unmined.dedupe_key, "not_mined")]


# ---- the gate ----------------------------------------------------------------------------------------------
def _batch(kind, *fills):
    return Batch(fills[0].condition_id, fills[0].outcome, fills[0].asset, tuple(fills), kind, T0)


def test_unconfirmed_fills_lead_but_trailing_batches_wait_for_their_confirmation(det, clock):
    gate = ConfirmationGate(det, may_trigger=True)
    lead = det.sight(_seen(fill(1), MEMPOOL, clock), "m:1", "0")
    trail = [det.sight(_seen(fill(n), MEMPOOL, clock), f"m:{n}", "0") for n in (2, 3)]
    assert gate.pass_or_park(_batch("leading", lead)) is not None
    assert gate.pass_or_park(_batch("trailing", *trail)) is None and gate.parked() == 1
    clock.advance(1.3)
    det.sight(_seen(fill(2), RTDS, clock), "rtds-a#1:rtds.trades")
    assert gate.due(clock.now()) == []                 # fill 3 still pending
    clock.advance(0.2)
    det.sight(_seen(fill(3), LOGS, clock), "chain-logs:0xb", "0")
    [out] = gate.due(clock.now())
    assert [f.dedupe_key for f in out.fills] == [f.dedupe_key for f in trail]
    assert [(f.confirmed, f.feed, f.recv_ns) for f in out.fills] == [
        (True, MEMPOOL, int((T0 + 2.3) * 1e9)), (True, MEMPOOL, int((T0 + 2.5) * 1e9))]
    assert out.released_at == clock.now() and gate.parked() == 0


def test_without_mempool_triggering_even_the_leading_batch_waits_and_retractions_drop_out(det, clock):
    gate = ConfirmationGate(det, may_trigger=False)
    kept, dropped = (det.sight(_seen(fill(n), MEMPOOL, clock), f"m:{n}", "0") for n in (1, 2))
    assert gate.pass_or_park(_batch("leading", kept, dropped)) is None
    det.sight(_seen(fill(1), RTDS, clock), "rtds-a#1:rtds.trades")
    clock.advance(11)
    det.step()
    [out] = gate.due(clock.now())
    assert [f.dedupe_key for f in out.fills] == [kept.dedupe_key]


def test_a_batch_whose_fills_are_all_retracted_is_never_decided(det, clock):
    gate = ConfirmationGate(det, may_trigger=True)
    f = det.sight(_seen(fill(1), MEMPOOL, clock), "m:1", "0")
    assert gate.pass_or_park(_batch("trailing", f)) is None
    clock.advance(11)
    det.step()
    assert gate.due(clock.now()) == [] and gate.parked() == 0


# ---- store and report ----------------------------------------------------------------------------------------
def test_report_shows_first_share_lag_per_feed_and_retracted_copies(det, clock, store):
    # Arrange: three fills matched at T0 + 0.35 (the clock is at T0 + 1); the mempool is 0.65 s late, RTDS (whole
    # seconds) 2.0 s, logs 2.2 s; the third is never confirmed.
    fills = [fill(n, t=T0 + 0.35) for n in (1, 2, 3)]
    admitted = [det.sight(_seen(f, MEMPOOL, clock), f"m:{n}", "0") for n, f in enumerate(fills)]
    keys = [a.dedupe_key for a in admitted]
    _copy(store, admitted[2])
    clock.advance(1.35)
    for f in fills[:2]:
        det.sight(_seen(f, RTDS, clock, match_ts=T0), "rtds-a#1:rtds.trades")
    clock.advance(0.2)
    for f in fills[:2]:
        det.sight(_seen(f, LOGS, clock, match_ts=T0), "chain-logs:0xb", str(f.tx_hash[-1]))
    clock.advance(10)
    det.step()
    # Act
    rep = build_report(store, Config())
    text = render_text(rep)
    # Assert
    det_rep = rep["detection"]
    assert det_rep["fills"] == 3 and det_rep["feeds"][MEMPOOL]["first"] == 3
    assert det_rep["feeds"][MEMPOOL]["first_share"] == 1.0 and det_rep["feeds"][RTDS]["confirmed_only"] == 2
    assert det_rep["feeds"][MEMPOOL]["lag_ms"]["p50"] == pytest.approx(650, abs=1)
    assert det_rep["feeds"][RTDS]["lag_ms"]["p50"] == pytest.approx(2000, abs=1)
    assert det_rep["feeds"][LOGS]["lag_ms"]["p50"] == pytest.approx(2200, abs=1)
    assert rep["detection_lag_ms"]["p50"] == pytest.approx(650, abs=1)
    assert det_rep["retracted"] == {"never_confirmed": 1}
    assert det_rep["retracted_copied"][0]["dedupe_key"] == keys[2]
    assert "chain.mempool" in text and f"RETRACTED COPIED  {keys[2]}" in text


def test_migration_2_upgrades_a_version_1_store_in_place(tmp_path):
    path = str(tmp_path / "old.sqlite")
    s = Store.open(path)
    f = fill(1)
    _copy(s, f)
    s.db.execute_sql("DROP TABLE sightings")
    s.db.execute_sql("DROP TABLE fill_events")
    s.db.execute_sql("PRAGMA user_version = 1")
    s.close()
    s = Store.open(path)
    try:
        assert s.db.execute_sql("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert s.copy_of(f.dedupe_key)["status"] == "MATCHED"
        s.record_sightings([{"dedupe_key": f.dedupe_key, "feed": RTDS, "stream": "s", "recv_ns": 1, "match_ts": 1.0,
                             "first": True}])
        assert [r["feed"] for r in s.sightings_since(0)] == [RTDS]
    finally:
        s.close()


# ---- feed edges ----------------------------------------------------------------------------------------------
class _Catalog:
    def __init__(self, known=True):
        self.known = known

    def by_asset(self, asset):
        return market(tokens=(asset, "2222")) if self.known else None

    def lookup(self, condition_id, asset):
        return None


def _feed(cls, det, clock, catalog=None):
    cfg = Config()
    got = []
    feed = cls(cfg, url="ws://127.0.0.1:9/", detection=det, on_fill=got.append, catalog=catalog or _Catalog(),
               clock=clock, metrics=NullMetrics())
    return feed, got


def test_a_malformed_chain_message_is_counted_and_skipped(det, clock):
    feed, got = _feed(ChainLogFeed, det, clock)
    feed._guarded(feed.on_result, {"topics": "nope"}, clock.now_ns())
    feed._guarded(feed.on_result, ["not", "a", "log"], clock.now_ns())
    assert feed.malformed == 2 and got == []


def test_a_log_on_an_unknown_market_only_confirms_and_is_retried(det, clock):
    from eth_abi import encode
    wallet = Config().copy.source_wallet
    feed, got = _feed(ChainLogFeed, det, clock, catalog=_Catalog(known=False))
    data = encode(["uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"],
                  [0, 1111, 5_000_000, 10_000_000, 0, b"\0" * 32, b"\0" * 32])
    log = {"address": "0xe111180000d2663c0091e4f400237545b87b996b",
           "topics": ["0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee", "0x" + "77" * 32,
                      pad_topic(wallet), pad_topic("0xe111180000d2663c0091e4f400237545b87b996b")],
           "data": "0x" + data.hex(), "transactionHash": "0x" + "ab" * 32, "blockHash": "0x" + "cd" * 32,
           "logIndex": "0x0", "removed": False}
    feed.on_result(log, clock.now_ns())
    assert got == [] and len(feed._unresolved) == 1 and list(det._tracks) == []
    det.sight(replace(fill(1, tx="0x" + "ab" * 32, asset="1111"), size=10.0, price=0.5), "rtds-a#1:rtds.trades")
    feed._retry_unresolved()
    assert got == [] and len(feed._unresolved) == 0 and det.track(next(iter(det._tracks))).mined


def test_a_node_whose_head_stops_moving_is_left_for_another_connection(det, clock):
    feed, _ = _feed(MempoolFeed, det, clock)
    watchdog = feed.cfg.feeds.data_watchdog_s
    assert not feed._head_stalled(RpcAnswer(2, "0x10", ""))
    clock.advance(watchdog - 1)
    assert not feed._head_stalled(RpcAnswer(2, "0x10", ""))
    assert not feed._head_stalled(RpcAnswer(2, "0x11", ""))             # it moved: the clock restarts
    clock.advance(watchdog + 1)
    assert feed._head_stalled(RpcAnswer(2, "0x11", ""))
    assert not feed._head_stalled(RpcAnswer(2, None, "")) and feed.malformed == 1


def test_an_unexpected_failure_on_one_message_never_kills_the_feed(det, clock):
    class Exploding:
        def admit(self, *args, **kwargs):
            raise RuntimeError("boom")
    wallet = Config().copy.source_wallet
    feed, got = _feed(MempoolFeed, Exploding(), clock)
    from test_chain import _match_tx, _order
    now_ms = int(clock.now() * 1000)
    tx = _match_tx(_order(wallet, 1111, 5_000_000, 10_000_000, 0, now_ms),
                   [_order("0x" + "a1" * 20, 1111, 10_000_000, 5_000_000, 1, now_ms)], 5_000_000, [10_000_000])
    feed._guarded(feed.on_result, tx, clock.now_ns())
    assert feed.metrics.counts["feed.chain-mempool.errors"] == 1 and got == [] and feed.malformed == 0


def test_an_aggregated_feed_a_per_maker_feed_and_a_replaced_transaction_copy_each_source_fill_once(det, clock):
    """The source takes 30 shares from three makers (10 each) in one transaction. The mempool sees it, then its
    gas-bumped replacement; the logs show the replacement's aggregate; RTDS and the Data API show a row per maker.
    Decided as the pipeline decides: one copy of 30 shares."""
    import json

    from test_chain import _match_tx, _order, _order_filled_log

    from copier.coalescer import Coalescer
    from copier.schemas import parse_data_api_trade, parse_rtds_frame
    wallet = Config().copy.source_wallet
    ts_ms = int(T0 * 1000)
    makers = [_order("0x" + f"a{k}" * 20, 1111, 10_000_000, 5_000_000, 1, ts=ts_ms) for k in range(1, 4)]
    pending = _match_tx(_order(wallet, 1111, 15_000_000, 30_000_000, 0, ts=ts_ms), makers, 15_000_000,
                        [10_000_000] * 3)
    original, replacement = pending["hash"], "0x" + "bc" * 32
    pending.update(nonce="0x7")
    mempool, got = _feed(MempoolFeed, det, clock)
    logs, got_logs = _feed(ChainLogFeed, det, clock)
    mempool.on_result(pending, clock.now_ns())
    clock.advance(0.4)
    mempool.on_result({**pending, "hash": replacement, "maxPriorityFeePerGas": "0x77359400"}, clock.now_ns())
    clock.advance(0.8)
    log = _order_filled_log(wallet, "0xe111180000d2663c0091e4f400237545b87b996b", 0, 1111, 15_000_000, 30_000_000, 0,
                            tx=replacement)
    logs.on_result({**log, "blockTimestamp": hex(int(T0))}, clock.now_ns())
    rows = [{"proxyWallet": wallet, "side": "BUY", "asset": "1111", "conditionId": market().condition_id,
             "size": 10, "price": 0.5, "timestamp": int(T0), "outcome": "Up", "outcomeIndex": 0,
             "transactionHash": replacement, "maker": k} for k in range(3)]
    for row in rows:
        frame = json.dumps({"topic": "activity", "type": "trades", "timestamp": 1, "payload": row})
        [f], frame_id = parse_rtds_frame(frame, wallet, clock.now_ns())
        got += [a] if (a := det.sight(f, "rtds-a#1:rtds.trades", frame_id)) else []
    for row in rows:
        got += [a] if (a := det.sight(parse_data_api_trade(row, clock.now_ns()), "data_api#1")) else []
    admitted = got + got_logs
    assert sum(f.size for f in admitted) == 30.0 and {f.tx_hash for f in admitted} == {original}
    # the pipeline's decisions on what was admitted
    coalescer, book = Coalescer(Config().copy), ExposureBook()
    orders = []
    for f in admitted:
        for b in coalescer.add(f, f.match_ts):
            orders.append(decide(book, b, market(), b.released_at, Config()))
    for b in coalescer.flush(T0 + 10):
        orders.append(decide(book, b, market(), b.released_at, Config()))
    assert sum(o.size for o in orders) == 30.0
    assert det.track(admitted[0].dedupe_key).status == CONFIRMED


def test_the_mempool_remembers_a_senders_transaction_for_the_replay_horizon_only(det, clock):
    from test_chain import _match_tx, _order

    from copier.config import replay_horizon_s
    wallet = Config().copy.source_wallet
    mempool, _ = _feed(MempoolFeed, det, clock)
    horizon = replay_horizon_s(mempool.cfg)

    def pending(nonce, tx_hash):
        now_ms = int(clock.now() * 1000)
        tx = _match_tx(_order(wallet, 1111, 5_000_000, 10_000_000, 0, now_ms),
                       [_order("0x" + "a1" * 20, 1111, 10_000_000, 5_000_000, 1, now_ms)], 5_000_000, [10_000_000])
        return {**tx, "nonce": hex(nonce), "hash": tx_hash}

    for n in range(12):
        mempool._guarded(mempool.on_result, pending(n, "0x" + f"{n:02x}" * 32), clock.now_ns())
        clock.advance(horizon / 4)
    assert len(mempool._senders) == 5                     # those seen within the horizon, its edge included
    mempool._guarded(mempool.on_result, pending(11, "0x" + "ff" * 32), clock.now_ns())
    assert mempool.metrics.counts["chain.replaced"] == 1 and det.deduper.aliases() == [("0x" + "ff" * 32,
                                                                                        "0x" + "0b" * 32)]


def test_detection_past_the_horizon_forgets_settled_tracks_and_dedupe_entries(clock, store, alerts):
    """A week of windows with every fill seen twice: tracks and dedupe entries stay within what the horizon spans."""
    horizon = 3600.0
    det = Detection(Deduper(clock=clock), FEEDS, clock=clock, metrics=NullMetrics(), alerts=alerts, store=store,
                    horizon_s=horizon)
    most = 0
    for w in range(7 * 96):
        for i in range(5):
            f = fill(w * 5 + i)
            det.sight(_seen(f, RTDS, clock), "rtds#1:trades", f"{w}:{i}")
            det.sight(_seen(f, LOGS, clock), f"chain-logs:{w}", str(i))
        clock.advance(900.0)
        det.step()
        most = max(most, len(det._tracks), len(det.deduper._groups))
    assert most <= 5 * (horizon // 900 + 1)
    assert det.track(fill(7 * 96 * 5 - 1).dedupe_key).status == CONFIRMED
    assert det.track(fill(0).dedupe_key) is None and not det.deduper.seen(fill(0).dedupe_key)


def test_detection_keeps_a_pending_track_past_the_horizon_until_its_timer_settles_it(clock, store, alerts):
    det = Detection(Deduper(clock=clock), FeedsConfig(confirm_timeout_s=100.0), clock=clock, metrics=NullMetrics(),
                    alerts=alerts, store=store, horizon_s=10.0)
    f = fill(1)
    det.sight(_seen(f, MEMPOOL, clock), "chain-mempool:x", "0")
    clock.advance(50.0)
    det.step()
    assert det.track(f.dedupe_key).status == PENDING
    clock.advance(60.0)
    det.step()                                  # retracted (never confirmed) first, forgotten at a later pass
    clock.advance(1.0)
    det.step()
    assert det.track(f.dedupe_key) is None
