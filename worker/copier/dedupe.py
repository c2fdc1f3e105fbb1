"""One dedupe for every feed: a source fill triggers once, whichever feed (or socket) delivers it first.

Identity = content key (tx hash, asset, side, price, size) + occurrence. Within one stream (one socket connection's
frame type, one gap-fill scan) the k-th fill with a content key has occurrence k; it is new iff occurrence k of that
content was not admitted from any stream. So one trade seen on `trades` and `orders_matched`, on both sockets and
again in the Data API counts once, while two identical fills in one transaction both count. A frame delivered twice
on the same stream (same frame id) is a duplicate, not a second fill.

Feeds disagree in the last digits: chain amounts are 6-decimal integers (a taker's price over several makers is
pUSD/shares, not tick-aligned), RTDS and the Data API carry rounded floats. So a sighting is matched to an admitted
fill of the same (tx hash, asset, side) whose size and price agree within the rounding of 6-decimal amounts, not by
string equality; it then carries that fill's identity, so every feed reports the same dedupe key byte for byte.
The first arrival's price and size are the identity's; `occurrence` tells apart equal fills within one transaction.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Iterable

from copier.types import SourceFill, fmt_num

SIZE_TOL = 1.5e-6             # one on-chain unit of shares


def price_tolerance(size: float) -> float:
    """How far two feeds' prices of one fill of `size` shares may differ: 6-decimal rounding on both sides plus up to
    ten pUSD units of per-maker rounding spread over the size. Two equal-size fills of one transaction closer than
    this still count twice (each stream claims a distinct admitted fill); only which price goes with which may swap."""
    return 1.5e-6 + 1e-5 / max(size, 1e-6)


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
        tol = price_tolerance(fill.size)
        best, best_gap = None, None
        for i, (price, size) in enumerate(admitted):
            if i in exclude or abs(size - fill.size) > SIZE_TOL:
                continue
            gap = abs(price - fill.price)
            if gap <= tol and (best_gap is None or gap < best_gap):
                best, best_gap = i, gap
        return best

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
