"""The websocket feeds' data watchdog, on a fake clock: keepalive answers do not keep a stalled feed alive."""
import websocket
from helpers import T0

from copier.clock import FakeClock
from copier.config import Config, FeedsConfig
from copier.metrics import NullMetrics
from copier.watcher import RtdsFeed


class ScriptedSocket:
    """recv_data() takes one ping interval of (fake) time and returns the next scripted text frame."""

    connected = True

    def __init__(self, clock, messages):
        self.clock, self.messages = clock, list(messages)

    def recv_data(self):
        self.clock.advance(1.0)
        return websocket.ABNF.OPCODE_TEXT, (self.messages.pop(0) if self.messages else "").encode()


def _feed(clock):
    cfg = Config(feeds=FeedsConfig(ping_interval_s=1.0, data_watchdog_s=3.0))
    feed = RtdsFeed("rtds-a", cfg, detection=None, on_fill=None, clock=clock, metrics=NullMetrics())
    feed._last_data = clock.monotonic()
    return feed


def test_pong_answers_alone_trip_the_data_watchdog():
    clock = FakeClock(T0)
    feed = _feed(clock)
    assert feed._recv(ScriptedSocket(clock, ["", "PONG", ""])) is None
    assert clock.now() - T0 == 4.0 and feed.metrics.counts["feed.rtds-a.watchdog"] == 1


def test_a_data_frame_resets_the_watchdog_and_is_returned():
    clock = FakeClock(T0)
    feed = _feed(clock)
    ws = ScriptedSocket(clock, ["", "", '{"topic":"activity"}', "", ""])
    assert feed._recv(ws) == b'{"topic":"activity"}'
    assert feed._recv(ws) is None and clock.now() - T0 == 7.0
