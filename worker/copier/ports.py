"""The seams between the pipeline and the world, as Protocols. Imports only the domain types.

Every stage talks to its collaborators through one of these, so `copier run` wires the live adapters, `copier
replay` wires recorded ones, and tests wire hand-written stubs, without any stage knowing which.
"""
from __future__ import annotations

from typing import Protocol

from copier.types import BookTop, ExecutionReport, Funds, MarketMeta, OrderIntent, VenuePosition

Refusal = tuple[str, str]


class Metrics(Protocol):
    def incr(self, name: str, n: int = 1) -> None: ...
    def timing(self, name: str, ms: float) -> None: ...
    def gauge(self, name: str, value: float) -> None: ...
    def flush(self) -> None: ...


class Alerts(Protocol):
    def alert(self, kind: str, message: str, **context: object) -> None: ...


class Markets(Protocol):
    """Market metadata: warm in memory, one cold lookup for a market first seen on a trade."""
    def by_asset(self, asset: str) -> MarketMeta | None: ...
    def lookup(self, condition_id: str, asset: str) -> MarketMeta | None: ...
    def listed(self, slug: str) -> bool: ...
    def fresh_tick(self, asset: str) -> float | None:
        """The tick as the venue serves it now (None: no usable answer)."""


class Books(Protocol):
    """The order books the copier follows (the market channel): the freshest it has, or None."""
    def top(self, asset: str) -> BookTop | None: ...


class PositionsIndex(Protocol):
    """The venue's index of what a wallet holds (the Data API positions endpoint)."""
    def fetch(self, address: str) -> list[VenuePosition] | None:
        """Every position of the address, or None when no complete, well-formed answer came."""


class OrderGate(Protocol):
    def refusal(self, intent: OrderIntent) -> Refusal | None:
        """Why this order must not go on the wire now, or None."""


class Executor(Protocol):
    """Turns an OrderIntent into an ExecutionReport: live against the CLOB, on paper, or assumed filled (replay)."""
    def submit(self, intent: OrderIntent, market: MarketMeta) -> ExecutionReport: ...
    def recover(self) -> list[ExecutionReport]: ...
    def reconcile(self) -> list[ExecutionReport]: ...
    def funds(self) -> Funds | None: ...
    def keep_warm(self) -> None: ...
    def close(self) -> None: ...


class Stopping(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Feed(Protocol):
    """A source of source-wallet fills (or of books): runs until `stopping`, reconnecting on its own."""
    name: str
    reconnects: int

    def run(self, stopping: Stopping) -> None: ...
    def close(self) -> None: ...
    def state(self) -> dict[str, object]: ...
