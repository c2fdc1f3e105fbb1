"""Detection: every feed's sightings of the source's fills meet here.

- One dedupe for all feeds (RTDS sockets, Data API gap-fill, chain logs, mempool): the first arrival is admitted and
  triggers, later arrivals only confirm. Every sighting, first or not, is recorded per feed for the report.
- Confirm / retract. A fill first seen in the mempool is *pending* until another feed sees it (RTDS or the Data API:
  the venue matched it; logs: it is mined). It is *retracted* when
    never_confirmed  pending for `feeds.confirm_timeout_s` (a dropped transaction);
    reorged_out      its log was removed by a reorg and not re-included within `feeds.reinclude_timeout_s`;
    not_mined        the logs feed was live from before the match, yet no log came within `confirm_timeout_s`
                     (a settlement that reverted or was dropped; RTDS shows matches, not inclusion).
  A retraction is recorded; if the fill was already copied, it is alerted too. A fill that comes back later is
  recorded as reinstated; being the same identity, it never triggers again.
- The gate keeps unconfirmed fills to the leading order: a trailing batch (or, with `feeds.mempool_may_trigger`
  off, any batch) holding a pending fill waits until each such fill is confirmed or retracted, then goes with the
  confirmed sightings only.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from copier.types import Batch, Feed, SourceFill

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.coalescer import Coalescer
    from copier.config import FeedsConfig
    from copier.dedupe import Deduper
    from copier.ports import Alerts, Metrics
    from copier.store import Store

log = logging.getLogger("copier.detection")

PENDING, CONFIRMED, REMOVED, RETRACTED = "pending", "confirmed", "removed", "retracted"
LIVE_MARGIN_S = 2.0        # the logs subscription must predate the match by this much to judge "not mined"


@dataclass(slots=True)         # a day of them is kept
class Track:
    key: str
    tx_hash: str
    status: str
    first_feed: str
    first_seen: float                 # wall clock
    match_ts: float
    confirm_feed: str = ""
    confirm_recv_ns: int = 0
    mined: bool = False               # a log of it is in the chain we follow
    removed_at: float = 0.0
    reason: str = ""                  # why it was retracted


class Detection:
    def __init__(self, deduper: Deduper, cfg: FeedsConfig, *, clock: Clock, metrics: Metrics, alerts: Alerts,
                 store: Store | None = None, logs_live_since: Callable[[], float | None] | None = None,
                 capacity: int = 50_000, horizon_s: float | None = None,
                 stream_horizon_s: float | None = None) -> None:
        """cfg: the FeedsConfig. logs_live_since: () -> wall time since which the logs subscription has been live
        without a gap, or None (logs off or down); None disables the not_mined judgement. horizon_s: the replay
        horizon (config.replay_horizon_s): tracks and dedupe entries older than it are forgotten, as a restart
        would (None: only the capacities bound them). stream_horizon_s (config.stream_horizon_s): what each stream
        delivered of a fill is forgotten this long after its last delivery (None: with the fill)."""
        self.deduper = deduper
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.alerts = alerts
        self.store = store
        self.logs_live_since = logs_live_since
        self.capacity = capacity
        self.horizon_s = horizon_s
        self.stream_horizon_s = stream_horizon_s
        self._tracks: OrderedDict[str, Track] = OrderedDict()
        self._sightings: list[dict] = []
        self._events: list[dict] = []
        self._confirmed_keys: list[str] = []
        self._aliases: list[dict] = []

    # ---- feed side -------------------------------------------------------------------------------------------
    def sight(self, fill: SourceFill, stream: str, frame_id: str | None = None) -> SourceFill | None:
        """Every feed's entry point: the fill with its identity if this is its first sighting on any feed, else None
        (the sighting is recorded either way)."""
        identity, new = self.deduper.observe(fill, stream, frame_id)
        if identity is not None:
            self._sighted(identity, fill, stream, new)
        return identity if new else None

    def confirm_only(self, fill: SourceFill, stream: str, frame_id: str | None = None) -> bool:
        """A sighting that can confirm an admitted fill but not introduce one. True if it matched one."""
        identity, _ = self.deduper.observe(fill, stream, frame_id, admit_new=False)
        if identity is None:
            return False
        self._sighted(identity, fill, stream, False)
        return True

    def removed(self, fill: SourceFill) -> None:
        """A log of this fill was removed by a reorg."""
        for key in self.deduper.identify(fill):
            t = self._tracks.get(key)
            if t is not None and t.mined:
                t.mined, t.status, t.removed_at = False, REMOVED, self.clock.now()
                self._event(t, "removed")
                self.metrics.incr("detection.removed")
                log.warning("source fill %s removed by a reorg", key, extra={"cid": key})
                return

    def seed(self, keys: Iterable[tuple[str, float]], aliases: Iterable[tuple[str, str]] = ()) -> None:
        self.deduper.seed(keys, aliases)

    def alias(self, replacement: str, original: str) -> None:
        """A replaced transaction: every feed's sightings of `replacement` are the fills of `original`."""
        self.deduper.alias(replacement, original)
        self._aliases.append({"tx_hash": replacement, "original": original, "at_ns": self.clock.now_ns()})

    def _sighted(self, identity: SourceFill, fill: SourceFill, stream: str, new: bool) -> None:
        key = identity.dedupe_key
        self._sightings.append({"dedupe_key": key, "feed": fill.feed, "stream": stream[:255], "recv_ns": fill.recv_ns,
                                "match_ts": fill.match_ts, "first": new})
        self.metrics.incr(f"detection.{'first' if new else 'confirm'}.{fill.feed}")
        is_log = fill.feed == Feed.CHAIN_LOGS.value
        if new:
            track = Track(key, identity.tx_hash, CONFIRMED if fill.confirmed else PENDING, fill.feed,
                          self.clock.now(), fill.match_ts, mined=is_log)
            if fill.confirmed:
                track.confirm_feed, track.confirm_recv_ns = fill.feed, fill.recv_ns
            self._tracks[key] = track
            while len(self._tracks) > self.capacity:
                self._tracks.popitem(last=False)
            return
        t = self._tracks.get(key)
        if t is None or not fill.confirmed:
            return
        if t.status == PENDING:
            t.status = CONFIRMED
        elif t.status == REMOVED and is_log:
            t.status = CONFIRMED
            self._event(t, "reincluded")
        elif t.status == RETRACTED and (is_log or t.reason == "never_confirmed"):
            # A log proves inclusion; any confirming feed disproves a dropped mempool transaction.
            t.status, t.reason = CONFIRMED, ""
            self._event(t, "reinstated")
        if is_log:
            t.mined = True
        if t.status == CONFIRMED and not t.confirm_feed:
            t.confirm_feed, t.confirm_recv_ns = fill.feed, fill.recv_ns
            self._confirmed_keys.append(key)

    # ---- gate side -------------------------------------------------------------------------------------------
    def track(self, key: str) -> Track | None:
        return self._tracks.get(key)

    # ---- timers and persistence (a periodic task) ------------------------------------------------------------
    def step(self) -> None:
        """Expire timers, forget what is past the replay horizon, then write what was seen. Never raises."""
        try:
            now = self.clock.now()
            self._expire(now)
            if self.horizon_s is not None:
                self._forget(now - self.horizon_s,
                             None if self.stream_horizon_s is None else now - self.stream_horizon_s)
        except Exception:
            log.exception("detection timers failed")
        try:
            self._flush()
        except Exception:
            log.exception("writing sightings failed")
            self.metrics.incr("detection.flush_errors")

    def _expire(self, now: float) -> None:
        live = self.logs_live_since() if self.logs_live_since is not None else None
        for t in list(self._tracks.values()):
            if t.status == PENDING and now - t.first_seen > self.cfg.confirm_timeout_s:
                self._retract(t, "never_confirmed")
            elif t.status == REMOVED and now - t.removed_at > self.cfg.reinclude_timeout_s:
                self._retract(t, "reorged_out")
            elif (t.status == CONFIRMED and not t.mined and live is not None and not t.removed_at
                  and live <= t.match_ts - LIVE_MARGIN_S and now - t.first_seen > self.cfg.confirm_timeout_s):
                self._retract(t, "not_mined")

    def _forget(self, before: float, streams_before: float | None) -> None:
        """Tracks first seen before `before` whose fate is settled (confirmed or retracted; a pending or reorged one
        still has a timer to run), and the dedupe's entries last written before it: no feed delivers them again.
        Tracks are kept in the order first seen, so only the oldest are looked at."""
        settled = []
        for key, t in self._tracks.items():
            if t.first_seen >= before:
                break
            if t.status in (CONFIRMED, RETRACTED):
                settled.append(key)
        for key in settled:
            del self._tracks[key]
        self.deduper.forget(before, streams_before)

    def _retract(self, t: Track, reason: str) -> None:
        t.status, t.reason = RETRACTED, reason
        t.removed_at = t.removed_at or self.clock.now()
        copy = self.store.copy_of(t.key) if self.store is not None else None
        self._event(t, "retracted", reason, copy)
        self.metrics.incr(f"detection.retracted.{reason}")
        if copy is not None:
            self.alerts.alert("source_fill_retracted",
                              f"copied source fill {t.key} was {reason.replace('_', ' ')}: our order "
                              f"{copy['order_hash']} ({copy['status']}) has no source trade behind it",
                              dedupe_key=t.key, reason=reason, intent=copy["intent_id"])
        else:
            log.warning("source fill %s %s (not copied)", t.key, reason, extra={"cid": t.key})

    def _event(self, t: Track, kind: str, reason: str = "", copy: dict | None = None) -> None:
        self._events.append({"dedupe_key": t.key, "kind": kind, "reason": reason, "tx_hash": t.tx_hash,
                             "at_ns": self.clock.now_ns(), "copied": copy is not None,
                             "intent_id": copy["intent_id"] if copy else ""})

    def _flush(self) -> None:
        if self.store is None:
            self._sightings, self._events, self._confirmed_keys, self._aliases = [], [], [], []
            return
        sightings, self._sightings = self._sightings, []
        events, self._events = self._events, []
        confirmed, self._confirmed_keys = self._confirmed_keys, []
        aliases, self._aliases = self._aliases, []
        if aliases:
            self.store.record_aliases(aliases)
        if sightings:
            self.store.record_sightings(sightings)
        if events:
            self.store.record_fill_events(events)
        if confirmed:
            self.store.confirm_fills(confirmed)


class ConfirmationGate:
    """Unconfirmed fills may lead a burst, never ride in a trailing batch (see the module docstring). Pure: driven by
    the pipeline greenlet with `now`."""

    def __init__(self, detection: Detection, may_trigger: bool, coalescer: Coalescer | None = None) -> None:
        """coalescer: told when a parked batch finally goes, so its order budget counts the real instant."""
        self.detection = detection
        self.may_trigger = may_trigger
        self.coalescer = coalescer
        self._parked: list[Batch] = []

    def pass_or_park(self, batch: Batch) -> Batch | None:
        """The batch if it may be decided now; None if it was parked."""
        if not any(self._waiting(f) for f in batch.fills):
            return batch
        if self.may_trigger and batch.kind in ("leading", "single"):
            return batch
        self._parked.append(batch)
        return None

    def due(self, now: float) -> list[Batch]:
        """Parked batches whose pending fills have all resolved, with confirmed sightings and without retractions."""
        out, keep = [], []
        for batch in self._parked:
            if any(self._waiting(f) for f in batch.fills):
                keep.append(batch)
                continue
            fills = tuple(self._resolved(f) for f in batch.fills if self._status(f) != RETRACTED)
            if fills:
                if self.coalescer is not None:
                    self.coalescer.postpone(batch, now)
                out.append(replace(batch, fills=fills, released_at=now))
        self._parked = keep
        return out

    def parked(self) -> int:
        return len(self._parked)

    def flush(self) -> list[Batch]:
        """Every parked batch at once (shutdown: they are recorded, not ordered)."""
        out, self._parked = self._parked, []
        return out

    def _status(self, fill: SourceFill) -> str:
        t = self.detection.track(fill.dedupe_key)
        return t.status if t is not None else CONFIRMED

    def _waiting(self, fill: SourceFill) -> bool:
        return not fill.confirmed and self._status(fill) == PENDING

    def _resolved(self, fill: SourceFill) -> SourceFill:
        """A fill that waited for confirmation becomes actionable at its confirming sighting (its feed stays the
        one that saw it first)."""
        t = self.detection.track(fill.dedupe_key)
        if fill.confirmed or t is None or not t.confirm_feed:
            return fill
        return replace(fill, confirmed=True, recv_ns=t.confirm_recv_ns)
