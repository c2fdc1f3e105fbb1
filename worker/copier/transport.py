"""CLOB HTTP transport: one persistent keep-alive connection per greenlet slot, L2 HMAC headers per request.

The SDK's post_order is not used: it blocks polling trades after a match, and it re-serializes the order. Here the
body is the exact string persisted before sending, and only the headers (timestamp, HMAC) change per attempt.
"""
from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from py_clob_client_v2.signing.hmac import build_hmac_signature

from copier.errors import TemporaryError, UnknownOutcome


@dataclass(frozen=True)
class ApiCreds:
    api_key: str
    api_secret: str
    api_passphrase: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: object           # parsed JSON, or the raw text when it is not JSON
    headers: dict

    @property
    def error(self) -> str:
        return str(self.body.get("error", "")) if isinstance(self.body, dict) else str(self.body)[:200]


class ClobTransport:
    def __init__(self, base_url: str, creds: ApiCreds, address: str, *, clock, timeout_s: float, metrics=None):
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

    def _conn(self) -> http.client.HTTPConnection:
        if self._pool:
            return self._pool.pop()
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self._timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._metrics is not None:
            self._metrics.incr("clob.connects")      # after warm(): a handshake paid by an order
        return conn

    def warm(self, n: int = 1) -> None:
        """Open connections before the first trade so the first order pays no TCP/TLS handshake."""
        conns = [self._conn() for _ in range(n)]
        self._pool.extend(conns)

    def headers(self, method: str, path: str, body: str = "") -> dict:
        ts = int(self._clock.now())
        sig = build_hmac_signature(self._creds.api_secret, ts, method, path, body or None)
        return {"POLY_ADDRESS": self._address, "POLY_SIGNATURE": sig, "POLY_TIMESTAMP": str(ts),
                "POLY_API_KEY": self._creds.api_key, "POLY_PASSPHRASE": self._creds.api_passphrase,
                "Content-Type": "application/json", "Connection": "keep-alive"}

    def request(self, method: str, path: str, body: str = "", on_sent=None) -> Response:
        """One attempt. Raises UnknownOutcome when the request may or may not have reached the venue.
        on_sent: called once the request is written, before its answer is awaited."""
        headers = self.headers(method, path, body)
        try:
            conn = self._conn()
        except OSError as exc:
            # Nothing was sent: the venue cannot have the order.
            raise TemporaryError(f"connect {self._host}:{self._port}: {exc}") from None
        try:
            conn.request(method, path, body=body.encode() if body else None, headers=headers)
            if on_sent is not None:
                on_sent()
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UnknownOutcome(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if resp.will_close:
            conn.close()
        else:
            self._pool.append(conn)
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return Response(resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()})

    def close(self) -> None:
        while self._pool:
            self._pool.pop().close()
