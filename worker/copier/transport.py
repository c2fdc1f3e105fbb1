"""CLOB HTTP transport: one persistent keep-alive connection per greenlet slot, L2 HMAC headers per request.

The SDK's post_order is not used: it blocks polling trades after a match, and it re-serializes the order. Here the
body is the exact string persisted before sending, and only the headers (timestamp, HMAC) change per attempt.
"""
from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gevent.monkey import get_original
from py_clob_client_v2.signing.hmac import build_hmac_signature

from copier.errors import MalformedMessage, TemporaryError, UnknownOutcome
from copier.schemas import loads

_poll = get_original("select", "select")  # a zero-timeout readiness check that never yields to the hub
MAX_ANSWER_BYTES = 8 * 1024 * 1024      # a trade history page is the largest answer we read
if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.ports import Metrics

MAX_TEXT_BYTES = 4096                   # what is kept of an answer that is not JSON (for the error text)


@dataclass(frozen=True)
class ApiCreds:
    api_key: str
    api_secret: str
    api_passphrase: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: object           # parsed JSON, or the raw text when it is not JSON
    headers: dict[str, str]

    @property
    def error(self) -> str:
        return str(self.body.get("error", "")) if isinstance(self.body, dict) else str(self.body)[:200]


class ClobTransport:
    def __init__(self, base_url: str, creds: ApiCreds, address: str, *, clock: Clock, timeout_s: float,
                 metrics: Metrics | None = None) -> None:
        u = urlsplit(base_url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or (443 if self._https else 80)
        self._creds = creds
        self._address = address
        self._clock = clock
        self._timeout = timeout_s
        self._metrics = metrics
        self._pool: list[http.client.HTTPConnection] = []
        default_port = 443 if self._https else 80
        self._host_header = self._host if self._port == default_port else f"{self._host}:{self._port}"
        if any(ch in str(v) for v in (*vars(creds).values(), address, self._host) for ch in "\r\n"):
            raise ValueError("CLOB credentials, address and host must be single-line")

    def _conn(self) -> http.client.HTTPConnection:
        while self._pool:
            conn = self._pool.pop()
            if _open(conn):
                return conn
            # The server closed it while idle: writing an order into it would end in an unknown outcome and a
            # retry after backoff. A fresh connection costs a handshake instead.
            conn.close()
            self._count("clob.stale_connections")
        return self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self._timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._count("clob.connects")
        return conn

    def _count(self, name: str) -> None:
        if self._metrics is not None:
            self._metrics.incr(name)

    def warm(self, n: int = 1) -> None:
        """Open connections before the first trade so the first order pays no TCP/TLS handshake; one GET /time
        on each proves it end to end (and reads what a TLS server sends after the handshake)."""
        for _ in range(n - len(self._pool)):
            conn = self._connect()
            if self._touch(conn):
                self._pool.insert(0, conn)

    def keep_warm(self, n: int) -> None:
        """Between trades: drop pooled connections the server closed, send a cheap GET /time on the others so an
        idle timeout at the venue never closes them, and open what is missing up to n. Never raises."""
        for conn in list(self._pool):
            if conn not in self._pool:
                continue                              # an order took it meanwhile
            self._pool.remove(conn)
            if _open(conn) and self._touch(conn):
                self._pool.insert(0, conn)            # orders take the most recently used first
            else:
                conn.close()
                self._count("clob.stale_connections")
        try:
            self.warm(n)
        except OSError:
            self._count("clob.connect_errors")

    @staticmethod
    def _touch(conn: http.client.HTTPConnection) -> bool:
        try:
            conn.request("GET", "/time")
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return False
        if resp.will_close:
            conn.close()
            return False
        return True

    def headers(self, method: str, path: str, body: str = "") -> dict:
        ts = int(self._clock.now())
        sig = build_hmac_signature(self._creds.api_secret, ts, method, path, body or None)
        return {"POLY_ADDRESS": self._address, "POLY_SIGNATURE": sig, "POLY_TIMESTAMP": str(ts),
                "POLY_API_KEY": self._creds.api_key, "POLY_PASSPHRASE": self._creds.api_passphrase,
                "Content-Type": "application/json", "Connection": "keep-alive"}

    def _message(self, method: str, path: str, body: str) -> bytes:
        """The whole request in one buffer. http.client writes the head and the body in two sends and checks every
        header against regexes: ~0.1 ms per POST; these headers are ours, fixed in shape, checked at start-up.
        The L2 signature covers the path without its query string, as the venue (and the SDK) compute it."""
        if any(ch in path for ch in " \r\n"):
            raise ValueError(f"bad request path {path!r}")
        data = body.encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity",
                *(f"{k}: {v}" for k, v in self.headers(method, path.partition("?")[0], body).items())]
        if data:
            head.append(f"Content-Length: {len(data)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data

    def request(self, method: str, path: str, body: str = "", on_sent: Callable[[], None] | None = None) -> Response:
        """One attempt. Raises UnknownOutcome when the request may or may not have reached the venue.
        on_sent: called once the request is written, before its answer is awaited."""
        message = self._message(method, path, body)
        try:
            conn = self._conn()
        except OSError as exc:
            # Nothing was sent: the venue cannot have the order.
            raise TemporaryError(f"connect {self._host}:{self._port}: {exc}") from None
        try:
            conn.sock.sendall(message)
            if on_sent is not None:
                on_sent()
            # http.client's own parser on the connection's socket (the connection object stays idle, reusable).
            resp = http.client.HTTPResponse(conn.sock, method=method)
            resp.begin()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UnknownOutcome(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if resp.will_close:
            conn.close()
        else:
            self._pool.append(conn)
        try:
            parsed = loads(raw, f"answer to {method} {path.partition('?')[0]}", MAX_ANSWER_BYTES) if raw else None
        except MalformedMessage:
            parsed = raw[:MAX_TEXT_BYTES].decode("utf-8", "replace")     # an HTML page, a broken body: kept as text
        return Response(resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()})

    def close(self) -> None:
        while self._pool:
            self._pool.pop().close()


def _open(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection is readable only when the server closed it (EOF) or broke protocol."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = _poll([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
