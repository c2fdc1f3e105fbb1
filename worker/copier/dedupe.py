"""One dedupe for every feed: a source fill triggers once, whichever feed (or socket) delivers it first.

Feeds differ in granularity: the chain's logs and the mempool show the source's taker order as one aggregate fill,
RTDS and the Data API show a row per maker it matched. So within a (tx hash, asset, side) group, what counts is the
size each stream has delivered in all: a stream (one socket connection's frame type, one gap-fill scan, one block,
one pending transaction) that has delivered more than every admitted fill of the group covers brings the excess as
a new fill; anything within what is admitted is a sighting of it. One trade seen on `trades` and `orders_matched`, on
both sockets, again in the Data API and as a log counts once; two identical fills in one transaction both count
once any stream delivers both; a 60-share aggregate and three 20-share rows are the same 60 shares. A frame
delivered twice on one stream (same frame id) is dropped before it counts.

Feeds disagree in the last digits: chain amounts are 6-decimal integers (a taker's price over several makers is
pUSD/shares, not tick-aligned), RTDS and the Data API carry rounded floats (the recorded RTDS frame shows 4-decimal
sizes). Sizes are compared within any feed's rounding. A sighting that is not new carries the identity of the
admitted fill it matches (closest in size and price among those this stream has not claimed, else the one its
delivered span overlaps most), so every feed reports the same dedupe key byte for byte.

A gas-bumped replacement of a pending transaction has a new hash but the same orders: the mempool feed names it
(same sender and nonce) and `alias` maps it onto the hash first seen, for every feed.

Safety invariant: per group, the admitted size never exceeds the most any single stream delivered (within rounding).

Memory: a day of fills is kept (the replay horizon), each seen on up to seven streams, so a group's admitted fills,
every stream's delivery of it and the frames that brought them are one entry, its strings are shared (interned),
and a frame is kept as a 128-bit digest of (stream, frame id) rather than its text. What the streams delivered is
needed only while a stream can still be delivering the group (its rows come within moments; a late one is bounded
by the gap-fill's look-back and the confirmation and re-inclusion waits): past that stream horizon a group keeps its
admitted fills alone, as a restart's seed does. Forgetting a stream's delivery can only make a later delivery of it
count as a sighting, never as a second fill: the admitted shares stay what some stream delivered.
"""
from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import replace
from typing import Generic, TypeVar

from copier.clock import Clock
from copier.types import SourceFill, fmt_num

SIZE_TOL_ABS = 1e-4           # RTDS shows sizes to 4 decimals
SIZE_TOL_REL = 5e-3           # and any coarser rounding a feed may apply

Group = tuple[str, str, str]  # (tx hash, asset, side)
K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


def size_matches(a: float, b: float) -> bool:
    return abs(a - b) <= max(SIZE_TOL_ABS, SIZE_TOL_REL * max(a, b))


class _Recent(Generic[K, V]):
    """A map that forgets: past its capacity, the entry written longest ago; on `forget(before)`, every entry last
    written before that instant. Entries stay in the order they were last written, stamped with the latest instant
    seen, so the oldest are always first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._latest = float("-inf")

    def get(self, key: K, default: D) -> V | D:
        item = self._items.get(key)
        return default if item is None else item[1]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> Iterator[tuple[K, V]]:
        return ((k, v) for k, (_, v) in self._items.items())

    def put(self, key: K, value: V, at: float) -> None:
        self._latest = max(self._latest, at)
        self._items[key] = (self._latest, value)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def forget(self, before: float) -> int:
        forgotten = 0
        while self._items and next(iter(self._items.values()))[0] < before:
            self._items.popitem(last=False)
            forgotten += 1
        return forgotten


class _Delivered:
    """What the feeds delivered of one group (the streams' part cleared past the stream horizon)."""
    __slots__ = ("admitted", "streams", "frames")

    def __init__(self) -> None:
        self.admitted: list[tuple[float, float]] = []           # (price, size) of the admitted fills, in order
        self.streams: dict[str, tuple[float, tuple[int, ...]]] | None = None  # stream -> (its shares, fills matched)
        self.frames: tuple[bytes, ...] = ()                     # digests of the (stream, frame id) that delivered


class Deduper:
    def __init__(self, capacity: int = 200_000, clock: Clock | None = None):
        """capacity: the most entries of each kind kept. clock: stamps what is written, for `forget` (without one,
        everything is stamped 0 and only the capacity bounds the memory)."""
        self.capacity = capacity
        self.clock = clock
        self._groups: _Recent[Group, _Delivered] = _Recent(capacity)
        self._aliases: _Recent[str, str] = _Recent(capacity)
        self._streamed: OrderedDict[Group, float] = OrderedDict()   # groups holding stream state, by last delivery
        self.duplicates = 0

    def forget(self, before: float, streams_before: float | None = None) -> int:
        """Forget every group and alias last written before `before` (a wall instant past which no feed can deliver
        the fill again: the replay horizon), and what the streams delivered of the groups last delivered before
        `streams_before` (the stream horizon). Returns how many groups and aliases went."""
        cut = before if streams_before is None else max(before, streams_before)
        while self._streamed:
            group, at = next(iter(self._streamed.items()))
            if at >= cut:
                break
            del self._streamed[group]
            delivered = self._groups.get(group, None)
            if delivered is not None:
                delivered.streams, delivered.frames = None, ()
        return sum(t.forget(before) for t in (self._groups, self._aliases))

    def admit(self, fill: SourceFill, stream: str, frame_id: str | None = None) -> SourceFill | None:
        """The fill with its identity if it is new, None if any stream delivered it before."""
        identity, new = self.observe(fill, stream, frame_id)
        return identity if new else None

    def observe(self, fill: SourceFill, stream: str, frame_id: str | None = None,
                admit_new: bool = True) -> tuple[SourceFill | None, bool]:
        """(fill carrying its canonical identity, is it new). (None, False) for a frame delivered twice, or for an
        unknown fill when admit_new is False (a sighting that may confirm but not introduce a fill)."""
        tx = sys.intern(self._aliases.get(fill.tx_hash, fill.tx_hash))
        group = (tx, sys.intern(fill.asset), fill.side.value)
        delivered = self._groups.get(group, None) or _Delivered()
        frame = _frame_digest(stream, frame_id) if frame_id else None
        if frame is not None and frame in delivered.frames:
            self.duplicates += 1
            return None, False
        admitted = delivered.admitted
        streams = delivered.streams if delivered.streams is not None else {}
        before, claimed = streams.get(stream, (0.0, ()))
        after = before + fill.size
        total = sum(size for _, size in admitted)
        new = after - total > _tolerance(after, total)
        if new and not admit_new:
            return None, False
        if new:
            admitted.append((fill.price, round(after - total, 6) if total else fill.size))
            index = len(admitted) - 1
        else:
            self.duplicates += 1
            index = self._match(admitted, fill, claimed, before, after)
        streams[sys.intern(stream)] = (after, (*claimed, index))
        delivered.streams = streams
        if frame is not None:
            delivered.frames += (frame,)
        self._remember(self._groups, group, delivered)
        self._streamed[group] = self.clock.now() if self.clock is not None else 0.0
        self._streamed.move_to_end(group)
        return replace(self._identity(fill, admitted, index), tx_hash=tx), new

    def alias(self, replacement: str, original: str) -> None:
        """A transaction that replaced another (same sender and nonce): its fills are the original's."""
        if replacement != original:
            self._remember(self._aliases, replacement, self._aliases.get(original, original))

    def aliases(self) -> list[tuple[str, str]]:
        return list(self._aliases.items())

    def identify(self, fill: SourceFill) -> list[str]:
        """Dedupe keys of the admitted fills this sighting matches, closest first (to name a removed log)."""
        tx = self._aliases.get(fill.tx_hash, fill.tx_hash)
        admitted = self._admitted((tx, fill.asset, fill.side.value))
        out: list[str] = []
        taken: list[int] = []
        while (i := self._closest(admitted, fill, exclude=taken)) is not None:
            taken.append(i)
            out.append(replace(self._identity(fill, admitted, i), tx_hash=tx).dedupe_key)
        return out

    def seed(self, keys: Iterable[tuple[str, float]], aliases: Iterable[tuple[str, str]] = ()) -> None:
        """Preload dedupe keys (tx:asset:side:price:size:occurrence), each with the wall instant it was received,
        oldest first, and transaction aliases persisted by a previous process. A key is stamped with its own
        instant, so it is forgotten a horizon after it was seen, not a horizon after the restart."""
        for replacement, original in aliases:
            self.alias(replacement, original)
        for key, seen_at in keys:
            parsed = _parse_key(key)
            if parsed is None:
                continue
            group, price, size, occ = parsed
            delivered = self._groups.get(group, None) or _Delivered()
            same = [p for p in delivered.admitted
                    if (fmt_num(p[0]), fmt_num(p[1])) == (fmt_num(price), fmt_num(size))]
            delivered.admitted += [(price, size)] * max(0, occ + 1 - len(same))
            self._groups.put(group, delivered, seen_at)

    def seen(self, key: str) -> bool:
        parsed = _parse_key(key)
        if parsed is None:
            return False
        group, price, size, occ = parsed
        same = [p for p in self._admitted(group)
                if (fmt_num(p[0]), fmt_num(p[1])) == (fmt_num(price), fmt_num(size))]
        return occ < len(same)

    def _admitted(self, group: Group) -> list[tuple[float, float]]:
        delivered = self._groups.get(group, None)
        return delivered.admitted if delivered is not None else []

    @classmethod
    def _match(cls, admitted: list[tuple[float, float]], fill: SourceFill, claimed: Collection[int], before: float,
               after: float) -> int:
        """The admitted fill a repeated sighting is: the closest equal-sized one this stream has not claimed, else
        the one whose span of the group's shares overlaps [before, after) most (an aggregate against its parts)."""
        index = cls._closest(admitted, fill, exclude=claimed)
        if index is not None:
            return index
        best, best_overlap, start = 0, -1.0, 0.0
        for i, (_, size) in enumerate(admitted):
            overlap = min(after, start + size) - max(before, start)
            if overlap > best_overlap:
                best, best_overlap = i, overlap
            start += size
        return best

    @staticmethod
    def _closest(admitted: list[tuple[float, float]], fill: SourceFill, exclude: Collection[int]) -> int | None:
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

    def _remember(self, table: _Recent[K, V], key: K, value: V) -> None:
        table.put(key, value, self.clock.now() if self.clock is not None else 0.0)


def _frame_digest(stream: str, frame_id: str) -> bytes:
    return hashlib.blake2b(f"{stream}\0{frame_id}".encode(), digest_size=16).digest()


def _tolerance(a: float, b: float) -> float:
    """How far two feeds' totals of one group may differ by rounding alone."""
    return max(SIZE_TOL_ABS, SIZE_TOL_REL * max(a, b))


def _parse_key(key: str) -> tuple[Group, float, float, int] | None:
    """tx:asset:side:price:size:occurrence -> ((tx, asset, side), price, size, occurrence), or None."""
    parts = key.split(":")
    if len(parts) != 6 or not parts[5].isdigit():
        return None
    try:
        price, size = float(parts[3]), float(parts[4])
    except ValueError:
        return None
    return (parts[0], parts[1], parts[2]), price, size, int(parts[5])
