"""Websocket plumbing shared by the feed surfaces: one outbound queue and one writer task per connection.

Broadcasting a frame is a synchronous append per client (no task per frame), and a client that stops reading is
cut the way the real servers cut slow consumers: close code 1013 once its send buffer is full.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from aiohttp import WSMsgType, web

T = TypeVar("T")

SLOW_CONSUMER = (1013, b"slow consumer: send buffer full")


class Conn:
    __slots__ = ("ws", "_transport", "_q", "_wake", "_limit", "_task", "closed")

    def __init__(self, ws: web.WebSocketResponse, transport=None, limit: int = 20_000):
        self.ws = ws
        self._transport = transport
        self._q: deque[str] = deque()
        self._wake = asyncio.Event()
        self._limit = limit
        self.closed = False
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def send(self, text: str) -> None:
        if self.closed:
            return
        if len(self._q) >= self._limit:
            self.close(*SLOW_CONSUMER)
            return
        self._q.append(text)
        self._wake.set()

    async def _pump(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._q:
                    await self.ws.send_str(self._q.popleft())
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            self.closed = True

    def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Close from the server side (dropped connection, slow consumer)."""
        if not self.closed:
            self.closed = True
            self._task.cancel()
            asyncio.get_running_loop().create_task(self.ws.close(code=code, message=message))

    def abort(self) -> None:
        """A dropped connection: the TCP stream ends without a close frame."""
        self.closed = True
        self._task.cancel()
        if self._transport is not None:
            self._transport.abort()

    async def shutdown(self) -> None:
        self.closed = True
        self._task.cancel()
        await self.ws.close(code=1001, message=b"server shutdown")

    def stop(self) -> None:
        self.closed = True
        self._task.cancel()


class Lane:
    """Runs callbacks after a delay without ever reordering them (a feed delivers in match order)."""

    def __init__(self):
        self._last = 0.0

    def later(self, now: float, delay: float, fn: Callable[[], None]) -> None:
        at = max(now + delay, self._last)
        self._last = at
        asyncio.get_running_loop().call_later(at - now, fn)


async def close_all(conns) -> None:
    """on_shutdown: close every open websocket so the server can stop without waiting on idle readers."""
    for c in list(conns):
        await c.shutdown()


async def session(request: web.Request, on_open: Callable[[Conn], T], on_text: Callable[[T, str], bool | None],
                  on_close: Callable[[T], object]) -> web.WebSocketResponse:
    """One websocket connection: on_open makes the per-connection state, on_text handles each text frame
    (returning False ends the session with 1008, e.g. bad credentials), on_close forgets the state."""
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=1 << 20)
    await ws.prepare(request)
    conn = Conn(ws, request.transport)
    state = on_open(conn)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and on_text(state, msg.data) is False:
                await ws.close(code=1008, message=b"invalid authentication")
                break
    finally:
        conn.stop()
        on_close(state)
    return ws
