"""Hostile peers on loopback for black-box tests of `copier run`.

HostileWebsocket speaks just enough RFC 6455 to let the copier connect, then sends whatever frames a test gives it:
a text frame of invalid UTF-8, binary, megabytes, nothing at all. It answers what the copier sends the way the real
peer does (RTDS: "" to PING; the CLOB market channel: PONG; a Polygon node: eth_subscribe ids and a moving head).
HostileHttp answers GETs from a script per path, and passes what is not scripted on to a real upstream.
"""
from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
from collections import deque
from collections.abc import Callable

import gevent
import httpx
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Answer = tuple[int, str, bytes]             # HTTP status, content type, body
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A final, unmasked server frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 2 ** 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.subscriptions: dict[str, str] = {}     # JSON-RPC: kind ("logs", "newPendingTransactions") -> id
        self.open = True

    def send(self, payload: bytes, opcode: int = TEXT) -> None:
        with self.lock:
            try:
                self.sock.sendall(frame(payload, opcode))
            except OSError:
                self.open = False


CHATTER = {"rtds": b'{"topic": "crypto_prices_chainlink", "type": "update", "payload": {}}', "market": b"[]",
           "rpc": b'{"jsonrpc": "2.0", "method": "eth_subscription", '
                  b'"params": {"subscription": "0x0", "result": null}}'}


class HostileWebsocket:
    """kind: "rtds", "market" or "rpc" (how it answers the copier's own messages). chatter: a harmless data frame
    every second, so the copier's data watchdog never recycles a connection a test is about to write to."""

    def __init__(self, kind: str, chatter: bool = True):
        self.kind = kind
        self.chatter = chatter
        self.conns: list[_Conn] = []
        self.received: list[str] = []
        self.greeting: list[bytes] = []           # sent after each subscription (a market channel's book dump)
        self.connections = 0
        self._head = 0x1000
        self._subs = 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = f"ws://127.0.0.1:{self.server.server_port}/"

    def live(self) -> list[_Conn]:
        return [c for c in self.conns if c.open]

    def broadcast(self, payload: bytes | str, opcode: int = TEXT) -> int:
        """Send one frame to every connected client; returns how many got it."""
        data = payload.encode() if isinstance(payload, str) else payload
        live = self.live()
        for c in live:
            c.send(data, opcode)
        return len(live)

    def notify(self, kind: str, result) -> int:
        """An eth_subscription message for `kind` to every client subscribed to it, under its own id."""
        sent = 0
        for c in self.live():
            sub = c.subscriptions.get(kind)
            if sub is not None:
                c.send(json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                                   "params": {"subscription": sub, "result": result}}).encode())
                sent += 1
        return sent

    def subscribed(self, kind: str) -> int:
        return sum(1 for c in self.live() if kind in c.subscriptions)

    def stop(self) -> None:
        self.server.stop(timeout=1)

    # ---- one connection ------------------------------------------------------------------------------------
    def _handle(self, sock, _addr) -> None:
        rfile = sock.makefile("rb")
        key = None
        while True:
            line = rfile.readline(8192)
            if not line or line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip().encode()
        if key is None:
            sock.close()
            return
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        conn = _Conn(sock)
        self.conns.append(conn)
        self.connections += 1
        chatter = gevent.spawn(self._chatter, conn) if self.chatter else None
        try:
            while True:
                got = self._read_frame(rfile)
                if got is None:
                    return
                opcode, payload = got
                if opcode == CLOSE:
                    conn.send(payload[:2], CLOSE)
                    return
                if opcode == PING:
                    conn.send(payload, PONG)
                elif opcode == TEXT:
                    self._answer(conn, payload.decode("utf-8", "replace"))
        except OSError:
            return
        finally:
            conn.open = False
            if chatter is not None:
                chatter.kill(block=False)
            sock.close()

    def _chatter(self, conn: _Conn) -> None:
        while conn.open:
            gevent.sleep(1.0)
            conn.send(CHATTER[self.kind])

    @staticmethod
    def _read_frame(rfile) -> tuple[int, bytes] | None:
        head = rfile.read(2)
        if len(head) < 2:
            return None
        opcode, n = head[0] & 0x0F, head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", rfile.read(8))[0]
        mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = rfile.read(n)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def _answer(self, conn: _Conn, text: str) -> None:
        self.received.append(text)
        if text.strip() == "PING":
            conn.send(b"" if self.kind == "rtds" else b"PONG")
            return
        if self.kind == "market" and "assets_ids" in text:
            for payload in self.greeting:
                conn.send(payload)
        if self.kind != "rpc":
            return
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if msg.get("method") == "eth_subscribe":
            self._subs += 1
            sub = f"0x{self._subs:032x}"
            conn.subscriptions[msg["params"][0]] = sub
            conn.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": sub}).encode())
        elif msg.get("method") == "eth_blockNumber":
            self._head += 1
            conn.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": hex(self._head)}).encode())


class HostileHttp:
    """GET answers per path prefix: each scripted answer is used once, in order, then `steady[prefix]` (if set) on
    every later request; anything else is passed on to `upstream`. An answer is (status, content type, body)."""

    def __init__(self, upstream: str | None = None):
        self.upstream = upstream
        self.script: dict[str, deque] = {}
        self.steady: dict[str, Answer | Callable[[str, str], Answer]] = {}
        self.asked: list[str] = []
        self._client = httpx.Client(timeout=5.0)
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None, error_log=None)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def queue(self, prefix: str, *answers: Answer) -> None:
        self.script.setdefault(prefix, deque()).extend(answers)

    def served(self, prefix: str) -> int:
        return sum(1 for p in self.asked if p.startswith(prefix))

    def pending(self, prefix: str) -> int:
        return len(self.script.get(prefix, ()))

    def stop(self) -> None:
        self.server.stop(timeout=1)
        self._client.close()

    def _app(self, environ, start_response):
        path = environ["PATH_INFO"]
        query = environ.get("QUERY_STRING", "")
        self.asked.append(path)
        answer = None
        for prefix, answers in self.script.items():
            if path.startswith(prefix) and answers:
                answer = answers.popleft()
                break
        if answer is None:
            for prefix, steady in self.steady.items():
                if path.startswith(prefix):
                    answer = steady(path, query) if callable(steady) else steady
                    break
        if answer is None and self.upstream:
            r = self._client.get(f"{self.upstream}{path}" + (f"?{query}" if query else ""))
            answer = (r.status_code, r.headers.get("content-type", "application/json"), r.content)
        if answer is None:
            answer = (404, "application/json", b'{"error": "not found"}')
        status, ctype, body = answer
        start_response(f"{status} X", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]


class StatsdSink:
    """Counters the copier sends over StatsD UDP, summed by name."""

    def __init__(self):
        from gevent import socket
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.counts: dict[str, float] = {}
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            data = self.sock.recv(65536)
            for line in data.decode("utf-8", "replace").splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                if kind.startswith("c"):
                    self.counts[name] = self.counts.get(name, 0) + float(value)

    def counter(self, name: str) -> float:
        return self.counts.get(name, 0)

    def stop(self) -> None:
        self._reader.kill(block=False)
        self.sock.close()
