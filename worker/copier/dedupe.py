"""One dedupe for every feed: a source fill triggers once, whichever feed (or socket) delivers it first.

Identity = content key (tx hash, asset, side, price, size) + occurrence. Within one stream (one socket connection's
frame type, one gap-fill scan) the k-th fill with a content key has occurrence k; it is new iff occurrence k of that
content was not admitted from any stream. So one trade seen on `trades` and `orders_matched`, on both sockets and
again in the Data API counts once, while two identical fills in one transaction both count. A frame delivered twice
on the same stream (same frame id) is a duplicate, not a second fill.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Iterable

from copier.types import SourceFill


class Deduper:
    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self._admitted: OrderedDict[str, int] = OrderedDict()      # content key -> occurrences admitted
        self._stream_counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._frames: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.duplicates = 0

    def admit(self, fill: SourceFill, stream: str, frame_id: str | None = None) -> SourceFill | None:
        if frame_id:
            fkey = (stream, frame_id)
            if fkey in self._frames:
                self.duplicates += 1
                return None
            self._remember(self._frames, fkey, None)
        content = fill.content_key
        skey = (stream, content)
        k = self._stream_counts.get(skey, 0)
        self._remember(self._stream_counts, skey, k + 1)
        if k < self._admitted.get(content, 0):
            self.duplicates += 1
            return None
        self._remember(self._admitted, content, k + 1)
        return replace(fill, occurrence=k)

    def seed(self, keys: Iterable[str]) -> None:
        """Preload dedupe keys (content:occurrence) persisted by a previous process."""
        for key in keys:
            content, _, occ = key.rpartition(":")
            if content and occ.isdigit():
                n = int(occ) + 1
                if n > self._admitted.get(content, 0):
                    self._remember(self._admitted, content, n)

    def seen(self, key: str) -> bool:
        content, _, occ = key.rpartition(":")
        return occ.isdigit() and int(occ) < self._admitted.get(content, 0)

    def _remember(self, table: OrderedDict, key, value) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.capacity:
            table.popitem(last=False)
