"""Clock trust, from chronyd's own state: `chronyc -c tracking` at start and every ntp_check_interval_s (the runtime's
periodic driver calls `check`).

Asking chronyd for the time over NTP proves nothing: it answers even when it has no source. Its tracking report
says whether it is synchronised (leap status, stratum) and bounds the clock's error (offset plus root delay/2 plus
root dispersion, which grows while no source answers). A clock that is unsynchronised, unreadable or outside
max_clock_offset_ms is untrusted: alerted at once, and past max_unsynchronised_s new orders are refused
(`block_reason`, asked by the runtime before each decision) until chronyd is back in sync.
"""
from __future__ import annotations

import logging
import math
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from copier.clock import Clock
from copier.config import TelemetryConfig
from copier.ports import Alerts, Metrics

log = logging.getLogger("copier.timesync")

CHRONYC_TIMEOUT_S = 10.0    # chronyc itself gives up after about 3 s (1 s timeout, 2 retries)


class Leap(StrEnum):
    """chronyd's leap status: the last one means it has no synchronised reference."""
    NORMAL = "Normal"
    INSERT_SECOND = "Insert second"
    DELETE_SECOND = "Delete second"
    UNSYNCHRONISED = "Not synchronised"


class ClockIssue(StrEnum):
    UNSYNCHRONISED = "unsynchronised"
    ERROR_BOUND = "error_bound"
    UNREADABLE = "unreadable"


class ChronyUnreadable(Exception):
    """chronyd's state could not be read or made no sense: the clock cannot be trusted."""


@dataclass(frozen=True, slots=True)
class Tracking:
    """The fields of `chronyc -c tracking` the copier judges the clock by (seconds unless named otherwise)."""
    reference: str
    stratum: int
    ref_time: float
    system_offset_s: float       # how far the system clock is from chronyd's estimate of true time
    last_offset_s: float
    root_delay_s: float
    root_dispersion_s: float
    leap: Leap

    @property
    def error_bound_ms(self) -> float:
        """chronyd's bound on the clock's error: offset, half the round trip to the stratum-1 clock, dispersion."""
        return (abs(self.system_offset_s) + self.root_delay_s / 2 + self.root_dispersion_s) * 1000.0


def parse_tracking(text: str) -> Tracking:
    """One CSV line of `chronyc -c tracking`; anything else raises ChronyUnreadable."""
    fields = text.strip().split(",")
    if len(fields) != 14:
        raise ChronyUnreadable(f"expected 14 tracking fields, got {len(fields)}")
    try:
        numbers = [float(v) for v in (fields[3], fields[4], fields[5], fields[10], fields[11])]
        stratum = int(fields[2])
        leap = Leap(fields[13])
    except ValueError as exc:
        raise ChronyUnreadable(f"unreadable tracking field: {exc}") from None
    if not all(math.isfinite(v) for v in numbers) or numbers[3] < 0 or numbers[4] < 0 or not 0 <= stratum <= 16:
        raise ChronyUnreadable("tracking values out of range")
    ref_time, offset, last_offset, delay, dispersion = numbers
    return Tracking(reference=fields[1][:64], stratum=stratum, ref_time=ref_time, system_offset_s=offset,
                    last_offset_s=last_offset, root_delay_s=delay, root_dispersion_s=dispersion, leap=leap)


def read_tracking(host: str) -> Tracking:
    """chronyd's tracking state over its command port (monitoring needs no privilege from localhost)."""
    try:
        done = subprocess.run(["chronyc", "-c", "-n", "-h", host, "tracking"], capture_output=True, text=True,
                              timeout=CHRONYC_TIMEOUT_S)
    except FileNotFoundError:
        raise ChronyUnreadable("chronyc is not installed") from None
    except subprocess.TimeoutExpired:
        raise ChronyUnreadable(f"chronyc gave no answer within {CHRONYC_TIMEOUT_S:g}s") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()
        raise ChronyUnreadable(f"chronyc exited {done.returncode}: {said[0][:120] if said else 'no output'}")
    return parse_tracking(done.stdout)


def clock_problem(tracking: Tracking, max_error_ms: float) -> tuple[ClockIssue, str] | None:
    """Why this clock cannot be trusted (the issue and a one-line detail), or None."""
    if tracking.leap is Leap.UNSYNCHRONISED or not 0 < tracking.stratum < 16:
        return ClockIssue.UNSYNCHRONISED, (f"chronyd is not synchronised (leap status {tracking.leap.value}, "
                                           f"stratum {tracking.stratum})")
    if tracking.error_bound_ms > max_error_ms:
        return ClockIssue.ERROR_BOUND, (f"chronyd bounds the clock error at {tracking.error_bound_ms:.1f}ms > "
                                        f"telemetry.max_clock_offset_ms {max_error_ms:g}ms")
    return None


class ClockWatch:
    """Reads chronyd, gauges and alerts; tells the runtime when new orders must wait for a trusted clock."""

    def __init__(self, telemetry_cfg: TelemetryConfig, *, clock: Clock, metrics: Metrics, alerts: Alerts,
                 tracking_reader: Callable[[str], Tracking] = read_tracking) -> None:
        self.cfg = telemetry_cfg
        self.clock = clock
        self.metrics = metrics
        self.alerts = alerts
        self._read = tracking_reader
        self.issue: ClockIssue | None = None
        self.problem: str | None = None     # the latest detail while an issue lasts
        self._problem_since = 0.0           # monotonic; meaningful while problem is set
        self._blocking = False
        self._off_noted = False

    def check(self) -> str | None:
        """Read chronyd once; returns the current problem (None when the clock is trusted)."""
        if not self.cfg.ntp_server:
            if not self._off_noted:
                log.warning("telemetry.ntp_server is empty: the clock is not checked and orders never wait for it")
                self._off_noted = True
            return None
        now = self.clock.monotonic()
        try:
            tracking = self._read(self.cfg.ntp_server)
        except ChronyUnreadable as exc:
            self.metrics.incr("clock.read_errors")
            found: tuple[ClockIssue, str] | None = (ClockIssue.UNREADABLE, f"chronyd state unreadable: {exc}")
        else:
            self.metrics.gauge("clock_offset_ms", tracking.system_offset_s * 1000.0)
            self.metrics.gauge("clock.error_bound_ms", tracking.error_bound_ms)
            self.metrics.gauge("clock.stratum", tracking.stratum)
            found = clock_problem(tracking, self.cfg.max_clock_offset_ms)
        self.metrics.gauge("clock.synchronised", int(found is None))
        if found is None:
            if self.issue is not None:
                log.warning("clock trusted again after %.0fs: new orders allowed", now - self._problem_since)
            self.issue, self.problem, self._blocking = None, None, False
        else:
            issue, detail = found
            if self.issue is None:
                self._problem_since = now
            if issue is not self.issue:     # once per issue: the detail's figures change at every check
                self.alerts.alert("clock_unsynchronised", f"{detail}; new orders stop after "
                                                          f"telemetry.max_unsynchronised_s "
                                                          f"{self.cfg.max_unsynchronised_s:g}s")
            self.issue, self.problem = issue, detail
        self._note_block(now)
        return self.problem

    def block_reason(self, now: float) -> str | None:
        """Why new orders must be refused at monotonic time `now`, or None."""
        if self.problem is None:
            return None
        untrusted_for = now - self._problem_since
        if untrusted_for < self.cfg.max_unsynchronised_s:
            return None
        return (f"clock untrusted for {untrusted_for:.0f}s > telemetry.max_unsynchronised_s "
                f"{self.cfg.max_unsynchronised_s:g}s: {self.problem}")

    def _note_block(self, now: float) -> None:
        reason = self.block_reason(now)
        if reason is not None and not self._blocking:
            self.alerts.alert("clock_orders_refused", f"new orders refused: {reason}")
        self._blocking = reason is not None
        self.metrics.gauge("clock.orders_refused", int(self._blocking))
