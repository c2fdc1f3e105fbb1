"""`copier probe`: how far this host is from every configured endpoint, and whether the venue lets it trade.

Each endpoint is measured N times on a fresh connection (DNS lookup, TCP connect, TLS handshake, first byte of the
answer to a plain GET) and the medians are printed. The venue's geoblock endpoint is asked for its verdict on this
host's address; `copier run` asks it too before a live start and refuses a blocked (or unknown) answer.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from copier.clock import Clock
from copier.config import Config

DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
TLS_SCHEMES = ("https", "wss")
MAX_ANSWER_BYTES = 64 * 1024
MAX_REDIRECTS = 3
# The answer is one flat object. Nesting is refused before parsing: the process runs with a raised recursion limit
# (py_ecc sets 100000 on import), where a deeply nested document overflows the C stack inside json instead of
# raising RecursionError.
MAX_BRACKETS = 32
EXIT_UNREACHABLE = 1
EXIT_BLOCKED = 3     # the venue refuses this host (or could not be asked): never trade live from here


class ProbeError(Exception):
    """One step of a measurement failed; the message names the step."""


class GeoblockError(Exception):
    """The geoblock endpoint could not be asked, or its answer is not the documented shape."""


@dataclass(frozen=True, slots=True)
class Geoblock:
    """The venue's answer for this host: {"blocked": bool, "ip": str, "country": str, "region": str}."""
    blocked: bool
    ip: str
    country: str
    region: str

    def describe(self) -> str:
        where = " ".join(v for v in (self.country, self.region) if v) or "unknown region"
        return f"{'BLOCKED' if self.blocked else 'not blocked'} (ip {self.ip or '?'}, {where})"


@dataclass(frozen=True, slots=True)
class Sample:
    """One fresh connection, milliseconds per step; tls_ms is None without TLS."""
    address: str
    dns_ms: float
    connect_ms: float
    tls_ms: float | None
    first_byte_ms: float


@dataclass(frozen=True)
class EndpointReport:
    name: str
    url: str
    samples: tuple[Sample, ...]
    errors: tuple[str, ...]

    def median(self, step: str) -> float | None:
        values = [getattr(s, step) for s in self.samples if getattr(s, step) is not None]
        return statistics.median(values) if values else None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "url": self.url, "address": self.samples[-1].address if self.samples else None,
                "samples": len(self.samples), "failed": len(self.errors), "errors": sorted(set(self.errors)),
                **{f"{step}_median": self.median(step) for step in ("dns_ms", "connect_ms", "tls_ms",
                                                                    "first_byte_ms")}}


def public_url(url: str) -> str:
    """scheme://host[:port] only: a path or query may carry a provider's key."""
    u = urlsplit(url)
    host = f"[{u.hostname}]" if u.hostname and ":" in u.hostname else (u.hostname or "")
    return f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")


def _target(url: str) -> tuple[str, str, int, str, str]:
    u = urlsplit(url)
    if u.scheme not in DEFAULT_PORTS or not u.hostname:
        raise ProbeError(f"not an http(s) or ws(s) URL: {public_url(url)}")
    port = u.port or DEFAULT_PORTS[u.scheme]
    host_header = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
    if u.port:
        host_header += f":{u.port}"
    return u.scheme, u.hostname, port, host_header, (u.path or "/") + (f"?{u.query}" if u.query else "")


def measure(url: str, *, timeout_s: float, clock: Clock) -> Sample:
    """DNS, TCP connect, TLS handshake and first byte of one plain GET, on a new connection."""
    scheme, host, port, host_header, path = _target(url)
    t0 = clock.monotonic()
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, IndexError) as exc:
        raise ProbeError(f"dns: {type(exc).__name__}: {exc}") from None
    t1 = clock.monotonic()
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(addr)
        except OSError as exc:
            raise ProbeError(f"connect: {type(exc).__name__}") from None
        t2 = clock.monotonic()
        t3 = None
        if scheme in TLS_SCHEMES:
            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            except (OSError, ssl.SSLError) as exc:
                raise ProbeError(f"tls: {type(exc).__name__}: {exc}") from None
            t3 = clock.monotonic()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: copier-probe\r\n"
                   f"Connection: close\r\n\r\n").encode()
        try:
            sock.sendall(request)
            if not sock.recv(1):
                raise ProbeError("first byte: the server closed the connection without answering")
        except OSError as exc:
            raise ProbeError(f"first byte: {type(exc).__name__}") from None
        t4 = clock.monotonic()
    finally:
        sock.close()
    def ms(start: float, end: float) -> float:
        return (end - start) * 1000.0
    return Sample(address=str(addr[0]), dns_ms=ms(t0, t1), connect_ms=ms(t1, t2),
                  tls_ms=ms(t2, t3) if t3 is not None else None, first_byte_ms=ms(t3 if t3 is not None else t2, t4))


def probe_endpoint(name: str, url: str, *, samples: int, timeout_s: float, clock: Clock) -> EndpointReport:
    done, errors = [], []
    for _ in range(samples):
        try:
            done.append(measure(url, timeout_s=timeout_s, clock=clock))
        except ProbeError as exc:
            errors.append(str(exc))
    return EndpointReport(name, public_url(url), tuple(done), tuple(errors))


def endpoints_of(cfg: Config) -> list[tuple[str, str]]:
    e = cfg.endpoints
    named = [("clob", e.clob), ("market_ws", e.market_ws), ("user_ws", e.user_ws), ("rtds_ws", e.rtds_ws),
             ("data_api", e.data_api), ("gamma", e.gamma), ("polygon_ws", e.polygon_ws), ("polygon_rpc", e.polygon_rpc),
             ("geoblock", e.geoblock)]
    return [(name, url) for name, url in named if url]


# ---- geoblock ---------------------------------------------------------------------------------------------------
def fetch(url: str, *, timeout_s: float) -> tuple[int, bytes]:
    """GET url (following a few redirects): status and at most MAX_ANSWER_BYTES of the body."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            scheme, host, port, _, path = _target(url)
        except ProbeError as exc:
            raise GeoblockError(str(exc)) from None
        cls = http.client.HTTPSConnection if scheme in TLS_SCHEMES else http.client.HTTPConnection
        conn = cls(host, port, timeout=timeout_s)
        try:
            conn.request("GET", path, headers={"User-Agent": "copier", "Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read(MAX_ANSWER_BYTES + 1)
            location = resp.getheader("Location")
        except (OSError, http.client.HTTPException) as exc:
            raise GeoblockError(f"{public_url(url)}: {type(exc).__name__}") from None
        finally:
            conn.close()
        if resp.status in (301, 302, 303, 307, 308) and location:
            url = location if "://" in location else f"{scheme}://{urlsplit(url).netloc}{location}"
            if scheme in TLS_SCHEMES and urlsplit(url).scheme not in TLS_SCHEMES:
                raise GeoblockError("redirected from TLS to plain HTTP")
            continue
        if len(body) > MAX_ANSWER_BYTES:
            raise GeoblockError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        return resp.status, body
    raise GeoblockError(f"more than {MAX_REDIRECTS} redirects")


def parse_geoblock(status: int, body: bytes) -> Geoblock:
    """The documented answer shape, or GeoblockError: anything unexpected is never read as "not blocked"."""
    if status != 200:
        raise GeoblockError(f"HTTP {status}")
    if body.count(b"[") + body.count(b"{") > MAX_BRACKETS:
        raise GeoblockError("the answer is nested too deeply")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise GeoblockError("the answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("blocked"), bool):
        raise GeoblockError('the answer has no boolean "blocked"')
    def word(key: str) -> str:
        value = data.get(key)
        return "".join(ch for ch in value[:64] if ch.isprintable()) if isinstance(value, str) else ""
    return Geoblock(blocked=data["blocked"], ip=word("ip"), country=word("country"), region=word("region"))


def ask_geoblock(url: str, *, timeout_s: float = 5.0) -> Geoblock:
    return parse_geoblock(*fetch(url, timeout_s=timeout_s))


def geoblock_refusal(url: str, *, sleep: Callable[[float], None], attempts: int = 3,
                     timeout_s: float = 5.0) -> str | None:
    """Why this host must not trade live, or None: blocked, or no readable answer after a few attempts."""
    error = ""
    for attempt in range(attempts):
        if attempt:
            sleep(1.0)
        try:
            verdict = ask_geoblock(url, timeout_s=timeout_s)
        except GeoblockError as exc:
            error = str(exc)
            continue
        if verdict.blocked:
            return f"the venue's geoblock endpoint ({public_url(url)}) reports this host {verdict.describe()}"
        return None
    return f"could not confirm with the venue's geoblock endpoint ({public_url(url)}) that this host may trade: {error}"


# ---- report -----------------------------------------------------------------------------------------------------
def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_table(reports: list[EndpointReport], verdict: Geoblock | None, verdict_error: str, samples: int) -> str:
    header = ("endpoint", "url", "address", "dns ms", "connect ms", "tls ms", "first byte ms", "ok")
    rows = [header]
    for r in reports:
        rows.append((r.name, r.url, r.samples[-1].address if r.samples else "-", _cell(r.median("dns_ms")),
                     _cell(r.median("connect_ms")), _cell(r.median("tls_ms")), _cell(r.median("first_byte_ms")),
                     f"{len(r.samples)}/{samples}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(f"medians of {samples} fresh connections per endpoint")
    for r in reports:
        for error in sorted(set(r.errors)):
            lines.append(f"{r.name}: {error}")
    lines.append(f"geoblock: {verdict.describe() if verdict else 'UNKNOWN: ' + verdict_error}")
    return "\n".join(lines)


def run_probe(cfg: Config, *, samples: int, timeout_s: float, clock: Clock, as_json: bool) -> tuple[str, int]:
    """The report text and the exit code: 0 all measured and allowed, 1 an endpoint failed, 3 blocked or unknown."""
    reports = [probe_endpoint(name, url, samples=samples, timeout_s=timeout_s, clock=clock)
               for name, url in endpoints_of(cfg)]
    verdict, verdict_error = None, ""
    try:
        verdict = ask_geoblock(cfg.endpoints.geoblock, timeout_s=timeout_s)
    except GeoblockError as exc:
        verdict_error = str(exc)
    code = 0
    if any(r.errors for r in reports):
        code = EXIT_UNREACHABLE
    if verdict is None or verdict.blocked:
        code = EXIT_BLOCKED
    if as_json:
        text = json.dumps({"samples": samples, "endpoints": [r.to_dict() for r in reports],
                           "geoblock": asdict(verdict) if verdict else None, "geoblock_error": verdict_error or None},
                          sort_keys=True)
    else:
        text = render_table(reports, verdict, verdict_error, samples)
    return text, code
