"""Bounded growth of the store, as one periodic task under the runtime's driver and error policy.

What grows without bound otherwise: the sightings (every arrival of every source fill on every feed, several per
fill) and the transaction aliases, which only the dedupe and the detection report read. Past the replay horizon
(config.replay_horizon_s) no feed can bring their fill back, so each pass deletes those older than
store.dedupe_retention_s, a batch at a time with a yield between batches. The freed pages go back to the file system
by incremental vacuum (the store is auto_vacuum=INCREMENTAL), and a WAL file the 30 s passive checkpoints could not
keep small is checkpointed and truncated. Fills, intents, orders and fill events are the record and are kept.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from copier.clock import Clock
from copier.config import StoreConfig
from copier.ports import Metrics

log = logging.getLogger("copier.upkeep")

PRUNE_BATCH = 2_000             # rows a table per transaction: a few ms of the hub's thread
VACUUM_PAGES = 2_048            # pages given back per pass (8 MiB at sqlite's 4 KiB pages)


class Maintainable(Protocol):
    def prune_dedupe_rows(self, before_ns: int, limit: int) -> int: ...
    def incremental_vacuum(self, pages: int) -> int: ...
    def wal_bytes(self) -> int: ...
    def truncate_wal(self) -> bool: ...
    def size_bytes(self) -> int: ...


@dataclass(frozen=True)
class UpkeepPass:
    pruned: int                 # sightings and aliases deleted
    free_pages: int             # free pages left after the vacuum step
    wal_bytes: int              # the WAL's size before the pass
    truncated: bool             # the WAL was over the limit and is now empty


class StoreUpkeep:
    def __init__(self, store: Maintainable, cfg: StoreConfig, *, clock: Clock, metrics: Metrics,
                 pause: Callable[[], None]) -> None:
        """pause: yields to the other greenlets between two batches."""
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.pause = pause

    def run(self) -> UpkeepPass:
        before_ns = int((self.clock.now() - self.cfg.dedupe_retention_s) * 1e9)
        pruned = 0
        while True:
            n = self.store.prune_dedupe_rows(before_ns, PRUNE_BATCH)
            pruned += n
            if n == 0:
                break
            self.pause()
        free = self.store.incremental_vacuum(VACUUM_PAGES)
        wal = self.store.wal_bytes()
        truncated = wal > self.cfg.wal_truncate_bytes and self.store.truncate_wal()
        if wal > self.cfg.wal_truncate_bytes and not truncated:
            log.warning("store WAL is %d bytes; its truncation was held back by a reader, next pass retries", wal)
        self.metrics.incr("store.pruned_rows", pruned)
        self.metrics.gauge("store.wal_bytes", 0 if truncated else wal)
        self.metrics.gauge("store.bytes", self.store.size_bytes())
        self.metrics.gauge("store.free_pages", free)
        if pruned:
            log.info("store upkeep: %d dedupe-only rows past the retention deleted, %d free pages left", pruned, free)
        return UpkeepPass(pruned=pruned, free_pages=free, wal_bytes=wal, truncated=truncated)
