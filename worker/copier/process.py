"""The process's own footprint as gauges: resident memory, open file descriptors and live greenlets.

A slow leak (a greenlet per reconnect never joined, a socket per retry never closed) shows on these long before it
shows on latency; the operator's dashboard and a long soak watch them. Read from /proc (Linux, where the copier runs)
and from the garbage collector's view of the heap.
"""
from __future__ import annotations

import gc
import os
import weakref
from dataclasses import dataclass

from greenlet import greenlet  # type: ignore[import-untyped]

from copier.ports import Metrics

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Footprint:
    rss_bytes: int
    fds: int
    greenlets: int


class Census:
    """Counts live greenlets, including those `gc.freeze()` moved out of the collector's view at start-up (the
    stages, held here by weak reference): greenlets created later are found on the heap."""

    def __init__(self) -> None:
        self._frozen: weakref.WeakSet[greenlet] = weakref.WeakSet()

    def before_freeze(self) -> None:
        self._frozen.update(o for o in gc.get_objects() if isinstance(o, greenlet))

    def greenlets(self) -> int:
        frozen = {id(g) for g in self._frozen if not g.dead}
        later = sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead and id(o) not in frozen)
        return len(frozen) + later

    def footprint(self) -> Footprint:
        with open("/proc/self/statm", "rb") as f:
            rss_pages = int(f.read().split()[1])
        return Footprint(rss_bytes=rss_pages * PAGE_BYTES, fds=len(os.listdir("/proc/self/fd")),
                         greenlets=self.greenlets())

    def gauge(self, metrics: Metrics) -> None:
        fp = self.footprint()
        metrics.gauge("process.rss_bytes", fp.rss_bytes)
        metrics.gauge("process.fds", fp.fds)
        metrics.gauge("process.greenlets", fp.greenlets)
