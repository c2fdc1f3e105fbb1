"""StatsD metrics over UDP. Never raises into the trading path: a failure is counted locally and dropped."""
from __future__ import annotations

import re
import time
from collections import Counter
from contextlib import contextmanager

import statsd

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class Metrics:
    def __init__(self, host: str, port: int, prefix: str, secrets: tuple[str, ...] = ()):
        self._client = statsd.StatsClient(host, port, prefix=prefix)
        self._secrets = tuple(s for s in secrets if s)
        self.dropped = 0

    @classmethod
    def from_config(cls, telemetry_cfg, secrets: tuple[str, ...] = ()) -> "Metrics":
        return cls(telemetry_cfg.statsd_host, telemetry_cfg.statsd_port, telemetry_cfg.statsd_prefix, secrets)

    def _name(self, name: str) -> str | None:
        clean = _UNSAFE.sub("_", str(name))[:200]
        if any(s in clean for s in self._secrets):
            return None
        return clean

    def incr(self, name: str, n: int = 1) -> None:
        self._send("incr", name, n)

    def timing(self, name: str, ms: float) -> None:
        self._send("timing", name, ms)

    def gauge(self, name: str, value: float) -> None:
        self._send("gauge", name, value)

    @contextmanager
    def timer(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timing(name, (time.perf_counter() - t0) * 1000)

    def _send(self, kind: str, name: str, value) -> None:
        try:
            clean = self._name(name)
            if clean is None:
                self.dropped += 1
                return
            getattr(self._client, kind)(clean, value)
        except Exception:  # a metric must never reach trading
            self.dropped += 1


class NullMetrics:
    """Same interface, records in memory: for tests and tools."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.timings: dict[str, list[float]] = {}
        self.gauges: dict[str, float] = {}

    def incr(self, name, n=1):
        self.counts[name] += n

    def timing(self, name, ms):
        self.timings.setdefault(name, []).append(ms)

    def gauge(self, name, value):
        self.gauges[name] = value

    @contextmanager
    def timer(self, name):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timing(name, (time.perf_counter() - t0) * 1000)
