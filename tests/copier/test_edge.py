"""The edge's one error policy (alerts.EdgeErrors) and how the feeds apply it: a peer's bad input is counted by reason
and skipped, an unexpected exception is counted and alerted (rate-limited), and neither ends a feed or a loop."""
import json
import subprocess
import sys

from gevent.event import Event
from helpers import T0

from copier.alerts import Alerts, EdgeErrors
from copier.clock import FakeClock
from copier.config import Config, FeedsConfig
from copier.errors import MalformedMessage
from copier.metrics import NullMetrics
from copier.schemas import check_match_ts
from copier.types import BadInput
from copier.watcher import RtdsFeed
from copier.wsfeed import ReconnectingFeed

SOURCE = Config().copy.source_wallet


class RecordingAlerts:
    def __init__(self):
        self.sent = []

    def alert(self, kind, message, **context):
        self.sent.append((kind, message, context))


class FlakyFeed(ReconnectingFeed):
    """A session that fails in a way no socket error describes, `failures` times, then asks to stop."""
    name = "flaky"

    def __init__(self, failures, stopping, **kw):
        super().__init__(Config(feeds=FeedsConfig(backoff_initial_s=0.0, backoff_max_s=0.0)), **kw)
        self.failures, self.stopping, self.sessions = failures, stopping, 0

    def _session(self, stopping):
        self.sessions += 1
        if self.sessions <= self.failures:
            raise KeyError("a peer nobody foresaw")
        stopping.set()


def test_feed_session_that_raises_anything_is_counted_alerted_and_reconnected():
    # Arrange
    stopping, metrics, alerts = Event(), NullMetrics(), RecordingAlerts()
    feed = FlakyFeed(3, stopping, clock=FakeClock(T0), metrics=metrics, alerts=alerts)
    # Act
    feed.run(stopping)
    # Assert: three failed sessions, each reconnected; run() returned because it was asked to, not because it died
    assert feed.sessions == 4 and feed.reconnects == 3 and feed.edge.errors == 3
    assert metrics.counts["feed.flaky.errors"] == 3 and metrics.counts["feed.flaky.reconnects"] == 3
    assert [a[0] for a in alerts.sent] == ["feed_error.flaky"] * 3
    assert alerts.sent[0][2] == {"source": "flaky", "where": "session", "error": "KeyError"}


def test_repeated_failures_alert_once_per_interval_through_the_real_alerts():
    clock = FakeClock(T0)
    alerts = Alerts(enabled=False, secrets=(), min_interval_s=60.0, clock=clock.monotonic)
    edge = EdgeErrors("rtds-a", metrics=NullMetrics(), alerts=alerts, clock=clock)
    for _ in range(5):
        edge.failed("message", RuntimeError("boom"))
    clock.advance(61)
    edge.failed("message", RuntimeError("boom"))
    assert edge.errors == 6 and alerts.suppressed == 4


def test_refusals_are_counted_by_reason_and_logged_sparingly(caplog):
    clock, metrics = FakeClock(T0), NullMetrics()
    edge = EdgeErrors("market_ws", metrics=metrics, clock=clock)
    for _ in range(50):
        edge.malformed(MalformedMessage("frame is not valid UTF-8", BadInput.NOT_UTF8))
    edge.refused("future_timestamp", "fill dated 3600s in the future")
    assert metrics.counts["feed.malformed"] == 51 and metrics.counts["feed.refused.not_utf8"] == 50
    assert edge.by_reason == {"not_utf8": 50, "future_timestamp": 1}
    assert len([r for r in caplog.records if "skipped a message" in r.getMessage()]) == 2


def _rtds_feed(clock, got, metrics):
    class EveryFillIsNew:
        def sight(self, fill, stream, frame_id=None):
            return fill
    return RtdsFeed("rtds-a", Config(), detection=EveryFillIsNew(), on_fill=got.append, clock=clock, metrics=metrics)


def _frame(ts, tx="0x" + "ab" * 32) -> bytes:
    payload = {"asset": "1111", "conditionId": "0x" + "cd" * 32, "outcome": "Up", "outcomeIndex": 0, "price": 0.5,
               "proxyWallet": SOURCE, "side": "BUY", "size": 10, "timestamp": ts, "transactionHash": tx}
    return json.dumps({"payload": payload, "timestamp": 1, "topic": "activity", "type": "trades"}).encode()


def test_rtds_frames_that_used_to_stop_the_process_are_skipped_and_the_next_fill_still_arrives():
    # Arrange: the three frames that killed the feed greenlet (and so the process), then a real one
    clock, got, metrics = FakeClock(T0), [], NullMetrics()
    feed = _rtds_feed(clock, got, metrics)
    hostile = [b'{"topic": "activity", "payload": "\xff"}', b"[" * 30_000, b'{"topic": "activity", "type": []}']
    # Act
    for data in hostile + [_frame(int(T0))]:
        feed._guarded(feed._on_frame, data, "rtds-a#1")
    # Assert
    assert len(got) == 1 and got[0].match_ts == T0
    assert feed.edge.by_reason == {"not_utf8": 1, "too_deep": 1} and feed.edge.errors == 0


def test_a_fill_dated_in_the_future_or_past_the_horizon_is_refused_on_rtds():
    clock, got, metrics = FakeClock(T0), [], NullMetrics()
    feed = _rtds_feed(clock, got, metrics)
    for ts in (T0 * 1_000_000, (T0 + 3600) * 1000, T0 + 60, T0 - 2 * 86_400):
        feed._guarded(feed._on_frame, _frame(int(ts)), "rtds-a#1")
    assert got == [] and feed.edge.by_reason == {"future_timestamp": 3, "old_timestamp": 1}
    feed._guarded(feed._on_frame, _frame(int(T0) + 5), "rtds-a#1")     # a venue clock a few seconds ahead
    assert len(got) == 1


def test_match_ts_window_edges():
    check_match_ts(T0 + 10, T0)
    check_match_ts(T0 - 86_400, T0)
    for ts, reason in ((T0 + 10.5, "future_timestamp"), (T0 - 86_401, "old_timestamp")):
        try:
            check_match_ts(ts, T0)
        except MalformedMessage as exc:
            assert exc.reason == reason
        else:
            raise AssertionError(f"{ts} admitted")


def test_deep_nesting_is_refused_even_where_the_recursion_limit_was_raised():
    """py_ecc (imported with eth-account, so in every copier process) raises the recursion limit to 100000; the C
    JSON scanner then recursed a megabyte of "[" deep on the C stack and the process died of SIGSEGV. Run in a
    child process: without the fix it is the child that crashes, not the test run."""
    code = """
import sys, gevent, copier, py_ecc
from copier.chain import parse_rpc_message
from copier.errors import MalformedMessage
from copier.schemas import parse_gamma, parse_market_message, parse_rtds_frame, parse_trades_page
assert sys.getrecursionlimit() >= 100000
deep = b"[" * 5_000_000
def parse_all():
    for parse in (parse_market_message, parse_gamma, lambda d: parse_trades_page(d, 1),
                  lambda d: parse_rpc_message(d[:1_000_000]),
                  lambda d: parse_rtds_frame(d[:60000], "0x" + "1" * 40, 1)):
        try:
            parse(deep)
        except MalformedMessage as exc:
            print(exc.reason)
gevent.spawn(parse_all).join()
print("limit", sys.getrecursionlimit())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split() == ["too_deep"] * 5 + ["limit", "100000"]
