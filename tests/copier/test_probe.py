"""copier probe and the live-start geoblock gate: real sockets and a real TLS handshake against local servers, the
recorded geoblock answer, and hostile answers that must never read as "not blocked"."""
from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from copier.clock import LiveClock
from copier.config import parse_config
from copier.probe import (
    EXIT_BLOCKED,
    Geoblock,
    GeoblockError,
    ProbeError,
    fetch,
    geoblock_refusal,
    measure,
    parse_geoblock,
    probe_endpoint,
    public_url,
    run_probe,
)

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
RECORDED = (PAYLOADS / "geoblock_response.json").read_bytes()
ALLOWED = json.dumps({"blocked": False, "ip": "203.0.113.10", "country": "NL", "region": "NH"}).encode()


class Stub:
    """A local HTTP server answering each path with (status, headers, body); unknown paths get 404."""

    def __init__(self, routes: dict, *, tls: ssl.SSLContext | None = None):
        self.routes = routes
        self.hits: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                stub.hits.append(self.path)
                status, headers, body = stub.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    servers = []

    def make(routes, **kw):
        servers.append(Stub(routes, **kw))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


@pytest.fixture
def tls_context(tmp_path, monkeypatch):
    """A server context with a self-signed certificate for localhost, trusted through SSL_CERT_FILE."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, cert_file


def test_measure_plain_http_times_dns_connect_and_first_byte_without_tls(stub):
    s = stub({"/": (200, {}, b"ok")})
    sample = measure(s.url + "/", timeout_s=5, clock=LiveClock())
    assert sample.address == "127.0.0.1" and sample.tls_ms is None
    assert sample.dns_ms >= 0 and sample.connect_ms >= 0 and sample.first_byte_ms > 0
    assert s.hits == ["/"]


def test_measure_tls_times_the_handshake_with_a_trusted_certificate(stub, tls_context, monkeypatch):
    ctx, cert_file = tls_context
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    s = stub({"/api/geoblock": (200, {}, ALLOWED)}, tls=ctx)
    sample = measure(s.url + "/api/geoblock", timeout_s=5, clock=LiveClock())
    assert sample.tls_ms is not None and sample.tls_ms > 0
    assert s.hits == ["/api/geoblock"]


def test_measure_untrusted_certificate_fails_at_the_tls_step(stub, tls_context):
    ctx, _ = tls_context
    s = stub({"/": (200, {}, b"ok")}, tls=ctx)
    with pytest.raises(ProbeError, match="^tls: SSLCertVerificationError"):
        measure(s.url + "/", timeout_s=5, clock=LiveClock())


def test_probe_endpoint_closed_port_reports_every_sample_failed_at_connect():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]      # bound, never listening: connections are refused
        report = probe_endpoint("clob", f"http://127.0.0.1:{port}", samples=3, timeout_s=2, clock=LiveClock())
    assert report.samples == () and report.errors == ("connect: ConnectionRefusedError",) * 3
    assert report.median("connect_ms") is None


def test_probe_endpoint_silent_server_times_out_at_first_byte():
    with socket.create_server(("127.0.0.1", 0)) as silent:     # accepts (backlog) and never answers
        report = probe_endpoint("gamma", f"ws://127.0.0.1:{silent.getsockname()[1]}/", samples=1, timeout_s=0.3,
                                clock=LiveClock())
    assert report.errors == ("first byte: TimeoutError",)


def test_public_url_drops_paths_queries_and_credentials():
    assert public_url("wss://user:pw@node.example:8546/v2/provider-key?x=1") == "wss://node.example:8546"
    assert public_url("https://[2001:db8::1]/api") == "https://[2001:db8::1]"


def test_parse_geoblock_recorded_answer_is_blocked():
    g = parse_geoblock(200, RECORDED)
    assert g == Geoblock(blocked=True, ip="203.0.113.42", country="US", region="NY")
    assert g.describe() == "BLOCKED (ip 203.0.113.42, US NY)"


@pytest.mark.parametrize("status, body", [
    (200, b"<html><body>Just a moment...</body></html>"),
    (200, b"\xff\xfe{\"blocked\": false}"),
    (200, b"[" * 100_000 + b"]" * 100_000),
    (200, b'{"blocked": "false"}'),
    (200, b'{"blocked": 0}'),
    (200, b'{"blocked": null}'),
    (200, b'{"blocked": NaN}'),
    (200, b'{"ip": "1.2.3.4"}'),
    (200, b"[false]"),
    (200, b""),
    (404, ALLOWED),
    (503, ALLOWED),
])
def test_parse_geoblock_hostile_answer_is_an_error_never_a_verdict(status, body):
    with pytest.raises(GeoblockError):
        parse_geoblock(status, body)


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=20))
def test_parse_geoblock_any_json_is_a_verdict_only_with_a_boolean_blocked(value):
    body = json.dumps(value).encode()
    try:
        g = parse_geoblock(200, body)
    except GeoblockError:
        assert not (isinstance(value, dict) and isinstance(value.get("blocked"), bool))
        return
    assert g.blocked is value["blocked"]
    assert all(ch.isprintable() and len(v) <= 64 for v in (g.ip, g.country, g.region) for ch in v)


def test_parse_geoblock_deep_nesting_is_refused_in_a_process_with_the_copiers_recursion_limit():
    """The copier imports py_ecc, which raises the recursion limit to 100000: json would overflow the C stack."""
    code = ("import sys, copier.executor, copier.probe as p\n"
            "assert sys.getrecursionlimit() >= 100000\n"
            "try:\n    p.parse_geoblock(200, b'{\"blocked\": false, \"x\": ' + b'[' * 100000 + b']' * 100000 + b'}')\n"
            "except p.GeoblockError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "the answer is nested too deeply", done


def test_parse_geoblock_control_characters_are_stripped_from_the_words():
    g = parse_geoblock(200, json.dumps({"blocked": False, "ip": "1.2.3.4\nFAKE: ok", "country": "N\x1bL"}).encode())
    assert g.ip == "1.2.3.4FAKE: ok" and g.country == "NL" and g.region == ""


def test_fetch_follows_a_redirect_and_refuses_a_loop(stub):
    s = stub({"/old": (302, {"Location": "/api/geoblock"}, b""), "/api/geoblock": (200, {}, ALLOWED),
              "/loop": (301, {"Location": "/loop"}, b"")})
    assert fetch(s.url + "/old", timeout_s=5) == (200, ALLOWED)
    with pytest.raises(GeoblockError, match="redirects"):
        fetch(s.url + "/loop", timeout_s=5)


def test_fetch_refuses_a_redirect_from_tls_to_plain_http(stub, tls_context, monkeypatch):
    ctx, cert_file = tls_context
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    plain = stub({"/api/geoblock": (200, {}, ALLOWED)})
    s = stub({"/api/geoblock": (302, {"Location": plain.url + "/api/geoblock"}, b"")}, tls=ctx)
    with pytest.raises(GeoblockError, match="plain HTTP"):
        fetch(s.url + "/api/geoblock", timeout_s=5)
    assert plain.hits == []


def test_fetch_refuses_an_oversized_answer(stub):
    s = stub({"/api/geoblock": (200, {}, b" " * (64 * 1024) + ALLOWED)})
    with pytest.raises(GeoblockError, match="larger than"):
        fetch(s.url + "/api/geoblock", timeout_s=5)


def test_geoblock_refusal_blocked_answer_names_the_verdict_without_retrying(stub):
    s = stub({"/api/geoblock": (200, {}, RECORDED)})
    sleeps = []
    reason = geoblock_refusal(s.url + "/api/geoblock", sleep=sleeps.append)
    assert reason == (f"the venue's geoblock endpoint ({s.url}) reports this host BLOCKED (ip 203.0.113.42, US NY)")
    assert sleeps == [] and len(s.hits) == 1


def test_geoblock_refusal_unreadable_answers_refuse_after_every_attempt(stub):
    s = stub({"/api/geoblock": (200, {}, b"<html>captcha</html>")})
    sleeps = []
    reason = geoblock_refusal(s.url + "/api/geoblock", sleep=sleeps.append, attempts=3)
    assert reason.startswith("could not confirm") and reason.endswith("the answer is not JSON")
    assert len(s.hits) == 3 and sleeps == [1.0, 1.0]


def test_geoblock_refusal_allowed_after_a_transient_error_is_none(stub):
    s = stub({"/api/geoblock": (503, {}, b"")})
    sleeps = []

    def recover(seconds):
        sleeps.append(seconds)
        s.routes["/api/geoblock"] = (200, {}, ALLOWED)
    assert geoblock_refusal(s.url + "/api/geoblock", sleep=recover) is None
    assert sleeps == [1.0]


def _config(stub_url: str, **execution) -> dict:
    return {"endpoints": {"clob": stub_url, "data_api": stub_url, "gamma": stub_url,
                          "rtds_ws": stub_url.replace("http", "ws") + "/", "market_ws": stub_url.replace("http", "ws")
                          + "/ws/market", "user_ws": stub_url.replace("http", "ws") + "/ws/user",
                          "geoblock": stub_url + "/api/geoblock"},
            "execution": execution}


def test_run_probe_prints_a_row_per_endpoint_and_the_verdict(stub):
    s = stub({"/": (200, {}, b"ok"), "/api/geoblock": (200, {}, ALLOWED)})
    text, code = run_probe(parse_config(_config(s.url)), samples=3, timeout_s=5, clock=LiveClock(), as_json=False)
    lines = text.splitlines()
    assert lines[0].split() == ["endpoint", "url", "address", "dns", "ms", "connect", "ms", "tls", "ms", "first",
                                "byte", "ms", "ok"]
    rows = {line.split()[0]: line.split() for line in lines[1:8]}
    assert set(rows) == {"clob", "market_ws", "user_ws", "rtds_ws", "data_api", "gamma", "geoblock"}
    assert all(row[-1] == "3/3" and row[5] == "-" for row in rows.values())   # no TLS on loopback
    assert lines[-1] == "geoblock: not blocked (ip 203.0.113.10, NL NH)" and code == 0


def test_run_probe_blocked_region_exits_3_and_json_carries_the_answer(stub):
    s = stub({"/": (200, {}, b"ok"), "/api/geoblock": (200, {}, RECORDED)})
    text, code = run_probe(parse_config(_config(s.url)), samples=1, timeout_s=5, clock=LiveClock(), as_json=True)
    report = json.loads(text)
    assert code == EXIT_BLOCKED and report["geoblock"]["blocked"] is True
    assert {e["name"]: e["failed"] for e in report["endpoints"]}["clob"] == 0


def _write(tmp_path, cfg: dict) -> tuple[Path, Path]:
    config, env = tmp_path / "copier.yaml", tmp_path / "copier.env"
    config.write_text(yaml.safe_dump({**cfg, "store": {"path": str(tmp_path / "copier.sqlite")},
                                      "telemetry": {"ntp_server": ""}}))
    env.write_text("POLY_PRIVATE_KEY=0x" + "5a" * 32 + "\n")
    env.chmod(0o600)
    return config, env


def test_cli_run_live_from_a_blocked_region_exits_3_with_one_line_and_no_store(stub, tmp_path):
    s = stub({"/api/geoblock": (200, {}, RECORDED)})
    live = _config(s.url, dry_run=False)
    live["endpoints"]["polygon_rpc"] = s.url          # a live EOA redeems through a node
    config, env = _write(tmp_path, live)
    done = subprocess.run([sys.executable, "-m", "copier", "run", "--config", str(config), "--env-file", str(env)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        (f"copier: refusing to trade live: the venue's geoblock endpoint ({s.url}) reports this host BLOCKED "
         "(ip 203.0.113.42, US NY)")]
    assert not (tmp_path / "copier.sqlite").exists(), "nothing may start before the region is allowed"


def test_cli_probe_bad_sample_count_exits_2(tmp_path):
    config, _ = _write(tmp_path, {})
    done = subprocess.run([sys.executable, "-m", "copier", "probe", "--config", str(config), "--samples", "0"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--samples" in done.stderr
