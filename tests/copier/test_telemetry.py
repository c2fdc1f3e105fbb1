"""Telemetry with real parts: UDP StatsD packets, Sentry envelopes over HTTP, JSON log lines; none may leak a secret."""
import gzip
import io
import json
import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.alerts import init_alerts
from copier.breaker import CircuitBreaker
from copier.config import RiskConfig, Secrets, TelemetryConfig
from copier.logs import JsonFormatter
from copier.metrics import Metrics

SECRETS = Secrets(private_key="0x" + "ab" * 32, api_key="k-123", api_secret="c2VjcmV0LXNlY3JldA==",
                  api_passphrase="pass-phrase-xyz")


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_statsd_packets_arrive_over_udp_with_exact_lines():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    m = Metrics.from_config(TelemetryConfig(statsd_port=sock.getsockname()[1], statsd_prefix="copier"),
                            SECRETS.values())
    m.incr("orders.status.matched")
    m.timing("stage.sign_ms", 1.5)
    m.gauge("queue_depth.ingest", 3)
    m.incr(f"bad.{SECRETS.api_key}")                 # a name carrying a secret is never sent
    lines = [sock.recv(1024).decode() for _ in range(3)]
    assert lines == ["copier.orders.status.matched:1|c", "copier.stage.sign_ms:1.500000|ms",
                     "copier.queue_depth.ingest:3|g"]
    assert m.dropped == 1
    sock.close()


def test_metrics_never_raise_even_when_the_sink_is_unresolvable():
    m = Metrics("127.0.0.1", 9, "copier")
    m._client = None                                # any failure inside the client
    m.incr("x")
    m.timing("y", 1)
    assert m.dropped == 2


class _SentryEndpoint:
    def __init__(self):
        self.bodies = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                outer.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"


def test_sentry_envelopes_carry_the_alert_and_no_secret():
    ep = _SentryEndpoint()
    secrets = Secrets(**{**{f: getattr(SECRETS, f) for f in ("private_key", "api_key", "api_secret",
                                                              "api_passphrase")}, "sentry_dsn": ep.dsn})
    alerts = init_alerts(ep.dsn, secrets)
    alerts.alert("auth_failure", f"CLOB rejected key {SECRETS.api_key} secret {SECRETS.api_secret}",
                 passphrase=SECRETS.api_passphrase)
    alerts.alert("auth_failure", "rate limited: suppressed")
    alerts.flush()
    wait_for(lambda: ep.bodies)
    raw = b"".join(ep.bodies)
    assert b"CLOB rejected key [redacted] secret [redacted]" in raw and b'"kind":"auth_failure"' in raw
    for s in secrets.values():
        assert s.encode() not in raw
    assert alerts.sent == 1 and alerts.suppressed == 1
    ep.server.shutdown()


def test_log_lines_are_json_with_correlation_id_and_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(SECRETS.values()))
    log = logging.getLogger("test.logs")
    log.addHandler(handler)
    log.setLevel("INFO")
    log.info("posting with key %s", SECRETS.private_key, extra={"cid": "intent-1", "feed": "rtds.trades"})
    line = json.loads(stream.getvalue())
    assert line["cid"] == "intent-1" and line["feed"] == "rtds.trades" and line["level"] == "INFO"
    assert line["msg"] == "posting with key [redacted]"


def test_breaker_trips_on_error_rate_and_on_latency():
    cfg = RiskConfig(breaker_window_s=60, breaker_max_error_rate=0.5, breaker_min_orders=4, breaker_max_p95_ms=800)
    b = CircuitBreaker(cfg)
    assert [b.record_order(False, 10, t) for t in range(3)] == ["", "", ""]
    assert b.record_order(False, 10, 3).startswith("error rate 1.00 > 0.50 over 4 orders")
    b = CircuitBreaker(cfg)
    reasons = [b.record_order(True, 900, t) for t in range(4)]
    assert reasons[-1].startswith("p95 copy delay 900ms > 800ms")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 2000)), min_size=1, max_size=50))
def test_breaker_never_trips_on_a_clean_fast_window(outcomes):
    b = CircuitBreaker(RiskConfig(breaker_max_p95_ms=2001))
    assert all(b.record_order(True, d, i) == "" for i, (_, d) in enumerate(outcomes))


def test_alert_listener_speaks_the_supervisor_protocol_and_alerts_on_unexpected_exit():
    import os
    import subprocess
    import sys
    ep = _SentryEndpoint()
    proc = subprocess.Popen([sys.executable, "-m", "copier.alert_listener"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "SENTRY_DSN": ep.dsn})

    def send(event, body):
        proc.stdin.write(f"ver:3.0 server:supervisor serial:1 pool:alerts poolserial:1 eventname:{event} "
                         f"len:{len(body)}\n{body}".encode())
        proc.stdin.flush()

    assert proc.stdout.readline() == b"READY\n"
    send("PROCESS_STATE_EXITED", "processname:copier groupname:copier from_state:RUNNING expected:0 pid:42")
    assert proc.stdout.read(len("RESULT 2\nOK")) == b"RESULT 2\nOK"
    assert proc.stdout.readline() == b"READY\n"
    proc.stdin.write(b"garbage without a length\n")
    proc.stdin.flush()
    assert proc.stdout.read(len("RESULT 2\nOK")) == b"RESULT 2\nOK"
    proc.stdin.close()
    proc.wait(10)
    wait_for(lambda: ep.bodies)
    assert b"copier exited unexpectedly (pid 42)" in b"".join(ep.bodies)
    ep.server.shutdown()


def test_alert_listener_alerts_on_a_death_during_startup_and_on_fatal_only_for_the_copier():
    from copier.alert_listener import alert_for
    assert "died while starting (attempt 2)" in alert_for(
        "PROCESS_STATE_BACKOFF", {"processname": "copier", "from_state": "STARTING", "tries": "2"})
    assert "FATAL" in alert_for("PROCESS_STATE_FATAL", {"processname": "copier"})
    assert alert_for("PROCESS_STATE_EXITED", {"processname": "copier", "expected": "1"}) is None
    assert alert_for("PROCESS_STATE_BACKOFF", {"processname": "other"}) is None


def test_alert_listener_takes_only_the_dsn_from_the_copier_env_file(tmp_path, monkeypatch):
    from copier.alert_listener import sentry_dsn
    from copier.errors import ConfigError
    env = tmp_path / "copier.env"
    env.write_text("POLY_PRIVATE_KEY=" + "ab" * 32 + "\nSENTRY_DSN=http://k@127.0.0.1:9/1\n")
    os.chmod(env, 0o600)
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    assert sentry_dsn(["--env-file", str(env)]) == "http://k@127.0.0.1:9/1"
    os.chmod(env, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        sentry_dsn(["--env-file", str(env)])


def test_the_breaker_sees_a_backlog_in_the_ingest_queue_but_not_the_coalescers_designed_wait():
    from dataclasses import replace as _replace

    from helpers import T0, fill

    from copier.runtime import our_delay_ms
    from copier.types import Batch
    # Arrange: a trailing batch released at its deadline, 1.5 s after its first fill arrived (the designed wait);
    # one of its fills sat 900 ms in the ingest queue before the pipeline took it.
    early = _replace(fill(1), recv_ns=int(T0 * 1e9), picked_ns=int((T0 + 0.001) * 1e9))
    backlogged = _replace(fill(2), recv_ns=int((T0 + 0.3) * 1e9), picked_ns=int((T0 + 1.2) * 1e9))
    batch = Batch(early.condition_id, "Up", early.asset, (early, backlogged), "trailing", released_at=T0 + 1.5)
    # Act: submitted 2 ms after its release
    delay = our_delay_ms(batch, int((T0 + 1.502) * 1e9))
    # Assert: the 900 ms backlog and the 2 ms of processing; not the 1.5 s wait
    assert abs(delay - 902.0) < 1e-3
