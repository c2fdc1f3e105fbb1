"""Clock offset check against the host's NTP server (chrony): at start and every ntp_check_interval_s."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import ntplib

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.config import TelemetryConfig
    from copier.ports import Alerts, Metrics, Stopping

log = logging.getLogger("copier.timesync")


def _ntp_offset_s(server: str) -> float:
    offset: float = ntplib.NTPClient().request(server, version=4, timeout=2).offset
    return offset


class ClockWatch:
    def __init__(self, telemetry_cfg: TelemetryConfig, *, clock: Clock, metrics: Metrics, alerts: Alerts,
                 ntp_query: Callable[[str], float] = _ntp_offset_s) -> None:
        self.cfg = telemetry_cfg
        self.clock = clock
        self.metrics = metrics
        self.alerts = alerts
        self._query = ntp_query
        self.last_offset_ms: float | None = None

    def check(self) -> float | None:
        try:
            offset_ms = self._query(self.cfg.ntp_server) * 1000.0
        except Exception as exc:  # no NTP answer is a warning, never a crash
            self.metrics.incr("clock.ntp_errors")
            log.warning("ntp check against %s failed: %s", self.cfg.ntp_server, type(exc).__name__)
            return None
        self.last_offset_ms = offset_ms
        self.metrics.gauge("clock_offset_ms", offset_ms)
        if abs(offset_ms) > self.cfg.max_clock_offset_ms:
            self.alerts.alert("clock_offset", f"clock offset {offset_ms:.1f}ms exceeds "
                                              f"{self.cfg.max_clock_offset_ms:g}ms")
        return offset_ms

    def run(self, stopping: Stopping) -> None:
        self.check()
        while not stopping.wait(self.cfg.ntp_check_interval_s):
            self.check()
