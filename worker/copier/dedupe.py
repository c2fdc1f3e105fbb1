"""One dedupe for every feed: a source fill triggers once, whichever feed (or socket) delivers it first.

Identity = content key (tx hash, asset, side, price, size) + occurrence. Within one stream (one socket connection's
frame type, one gap-fill scan) the k-th fill with a content key has occurrence k; it is new iff occurrence k of that
content was not admitted from any stream. So one trade seen on `trades` and `orders_matched`, on both sockets and
again in the Data API counts once, while two identical fills in one transaction both count. A frame delivered twice
on the same stream (same frame id) is a duplicate, not a second fill.

Feeds disagree in the last digits: chain amounts are 6-decimal integers (a taker's price over several makers is
pUSD/shares, not tick-aligned), RTDS and the Data API carry rounded floats (the recorded RTDS frame shows 4-decimal
sizes), and which price a feed shows for a taker that swept several levels is not documented. A mismatch would be a
second order, so a sighting is matched to an admitted fill of the same (tx hash, asset, side) whose size agrees
within any feed's rounding; price only chooses among such candidates, never splits them. It then carries that
fill's identity, so every feed reports the same dedupe key byte for byte. The first arrival's price and size are
the identity's; `occurrence` tells apart equal fills within one transaction.

Safety invariant: per (tx hash, asset, side), the admitted count never exceeds the most fills any single stream
delivered (each stream claims a distinct admitted fill per sighting). Merging two genuinely distinct near-equal fills
across streams can only delay a copy until the slower stream delivers the second one, never duplicate it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Iterable

from copier.types import SourceFill, fmt_num

SIZE_TOL_ABS = 1e-4           # RTDS shows sizes to 4 decimals
SIZE_TOL_REL = 5e-3           # and any coarser rounding a feed may apply


def size_matches(a: float, b: float) -> bool:
    return abs(a - b) <= max(SIZE_TOL_ABS, SIZE_TOL_REL * max(a, b))


class Deduper:
    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        # (tx, asset, side) -> [(price, size)] of the admitted fills, in admission order
        self._admitted: OrderedDict[tuple, list[tuple[float, float]]] = OrderedDict()
        # (stream, (tx, asset, side)) -> indexes into the admitted list this stream has delivered
        self._claims: OrderedDict[tuple, list[int]] = OrderedDict()
        self._frames: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.duplicates = 0

    def admit(self, fill: SourceFill, stream: str, frame_id: str | None = None) -> SourceFill | None:
        """The fill with its identity if it is new, None if any stream delivered it before."""
        identity, new = self.observe(fill, stream, frame_id)
        return identity if new else None

    def observe(self, fill: SourceFill, stream: str, frame_id: str | None = None,
                admit_new: bool = True) -> tuple[SourceFill | None, bool]:
        """(fill carrying its canonical identity, is it new). (None, False) for a frame delivered twice, or for an
        unknown fill when admit_new is False (a sighting that may confirm but not introduce a fill)."""
        if frame_id:
            fkey = (stream, frame_id)
            if fkey in self._frames:
                self.duplicates += 1
                return None, False
        group = (fill.tx_hash, fill.asset, fill.side.value)
        admitted = self._admitted.get(group, [])
        claimed = self._claims.get((stream, group), [])
        index = self._closest(admitted, fill, exclude=claimed)
        if index is None and not admit_new:
            return None, False
        if frame_id:
            self._remember(self._frames, (stream, frame_id), None)
        new = index is None
        if new:
            admitted.append((fill.price, fill.size))
            index = len(admitted) - 1
        else:
            self.duplicates += 1
        self._remember(self._admitted, group, admitted)
        self._remember(self._claims, (stream, group), claimed + [index])
        return self._identity(fill, admitted, index), new

    def identify(self, fill: SourceFill) -> list[str]:
        """Dedupe keys of the admitted fills this sighting matches, closest first (to name a removed log)."""
        admitted = self._admitted.get((fill.tx_hash, fill.asset, fill.side.value), [])
        out, taken = [], []
        while (i := self._closest(admitted, fill, exclude=taken)) is not None:
            taken.append(i)
            out.append(self._identity(fill, admitted, i).dedupe_key)
        return out

    def seed(self, keys: Iterable[str]) -> None:
        """Preload dedupe keys (tx:asset:side:price:size:occurrence) persisted by a previous process."""
        for key in keys:
            parsed = _parse_key(key)
            if parsed is None:
                continue
            group, price, size, occ = parsed
            admitted = self._admitted.get(group, [])
            same = [p for p in admitted if (fmt_num(p[0]), fmt_num(p[1])) == (fmt_num(price), fmt_num(size))]
            admitted += [(price, size)] * max(0, occ + 1 - len(same))
            self._remember(self._admitted, group, admitted)

    def seen(self, key: str) -> bool:
        parsed = _parse_key(key)
        if parsed is None:
            return False
        group, price, size, occ = parsed
        same = [p for p in self._admitted.get(group, ())
                if (fmt_num(p[0]), fmt_num(p[1])) == (fmt_num(price), fmt_num(size))]
        return occ < len(same)

    @staticmethod
    def _closest(admitted: list[tuple[float, float]], fill: SourceFill, exclude) -> int | None:
        """The unclaimed admitted fill of matching size nearest in (size, price), or None."""
        candidates = [(abs(size - fill.size), abs(price - fill.price), i) for i, (price, size) in enumerate(admitted)
                      if i not in exclude and size_matches(size, fill.size)]
        return min(candidates)[2] if candidates else None

    @staticmethod
    def _identity(fill: SourceFill, admitted: list[tuple[float, float]], index: int) -> SourceFill:
        price, size = admitted[index]
        text = (fmt_num(price), fmt_num(size))
        occ = sum(1 for p in admitted[:index] if (fmt_num(p[0]), fmt_num(p[1])) == text)
        return replace(fill, price=price, size=size, occurrence=occ)

    def _remember(self, table: OrderedDict, key, value) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.capacity:
            table.popitem(last=False)


def _parse_key(key: str):
    """tx:asset:side:price:size:occurrence -> ((tx, asset, side), price, size, occurrence), or None."""
    parts = key.split(":")
    if len(parts) != 6 or not parts[5].isdigit():
        return None
    try:
        price, size = float(parts[3]), float(parts[4])
    except ValueError:
        return None
    return (parts[0], parts[1], parts[2]), price, size, int(parts[5])
