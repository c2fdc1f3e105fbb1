"""Deferred StatsD (the running copier's mode): nothing is sent by the caller; counters are summed, gauges keep the
last value, timings are all kept, and they leave shortly after in multi-line packets. Still never raises, still
never sends a name carrying a secret."""
import socket

import gevent

from copier.metrics import Metrics


def _sink():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def _lines(sock, until: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < until:
        lines += sock.recv(65536).decode().split("\n")
    return lines


def test_deferred_metrics_are_aggregated_and_sent_together_after_the_caller_yields():
    sock = _sink()
    m = Metrics("127.0.0.1", sock.getsockname()[1], "copier", secrets=("s3cret",), defer_s=0.01)
    sock.setblocking(False)
    for _ in range(3):
        m.incr("feed.duplicates")
    m.timing("stage.sign_ms", 0.5)
    m.timing("stage.sign_ms", 0.25)
    m.gauge("queue_depth.ingest", 4)
    m.gauge("queue_depth.ingest", 2)
    m.incr("leak.s3cret")
    try:                                         # the caller sent nothing
        sock.recv(65536)
        raise AssertionError("a metric was sent synchronously")
    except BlockingIOError:
        pass
    sock.settimeout(2)
    gevent.sleep(0.05)
    lines = _lines(sock, 4)
    assert sorted(lines) == sorted(["copier.feed.duplicates:3|c", "copier.stage.sign_ms:0.500000|ms",
                                    "copier.stage.sign_ms:0.250000|ms", "copier.queue_depth.ingest:2|g"])
    assert m.dropped == 1
    sock.close()


def test_deferred_packets_stay_under_the_mtu_and_flush_sends_what_is_held():
    sock = _sink()
    m = Metrics("127.0.0.1", sock.getsockname()[1], "copier", defer_s=60.0)
    for i in range(300):
        m.timing("stage.parse_ms", i / 1000)
    m.flush()
    lines, packets = [], 0
    while len(lines) < 300:
        data = sock.recv(65536)
        assert len(data) <= 1400
        packets += 1
        lines += data.decode().split("\n")
    assert packets > 1 and len(lines) == 300
    sock.close()


def test_deferred_metrics_never_raise_when_the_client_fails():
    m = Metrics("127.0.0.1", 9, "copier", defer_s=0.01)
    m._client = None
    m.incr("x")
    m.timing("y", 1)
    m.flush()
    assert m.dropped == 2
