"""The last gate before every POST and repost: live state read at the last moment, judged by risk.post_refusal.

Halt is read from the store itself, not from a copy refreshed every so often: `copier halt` (another process) or a
breaker trip (this one) stops the very next attempt. `stopping` is the runtime's shutdown event.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gevent.event import Event

from copier.config import Config
from copier.risk import Refusal, post_refusal
from copier.types import OrderIntent

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.ports import Markets
    from copier.store import Store


class TradingGate:
    def __init__(self, cfg: Config, *, store: Store, catalog: Markets, clock: Clock, stopping: Event,
                 blocked: Callable[[], str | None] | None = None) -> None:
        """blocked: any other reason trading must pause (an unsynchronised clock), or None."""
        self.cfg = cfg
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.stopping = stopping
        self.blocked = blocked

    def refusal(self, intent: OrderIntent) -> Refusal | None:
        return post_refusal(intent, self.catalog.by_asset(intent.asset), self.clock.now(), self.cfg,
                            halted=self.store.is_halted(), stopping=self.stopping.is_set(),
                            blocked=self.blocked() if self.blocked is not None else None)
