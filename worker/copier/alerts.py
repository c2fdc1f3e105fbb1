"""Sentry alerts (auth failures, rejects, halts, crashes). Never raise; every secret is scrubbed before sending.

EdgeErrors is the one error policy of every feed, parser and background loop at the edge: what a peer sends that
does not parse is counted under its reason and skipped; an unexpected exception in one message or one loop pass is
logged with its traceback, counted and alerted (rate-limited), and the feed carries on.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sentry_sdk

log = logging.getLogger("copier.alerts")
REDACTED = "[redacted]"

if TYPE_CHECKING:
    from copier import ports
    from copier.clock import Clock
    from copier.config import Secrets


def _scrub(obj: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, REDACTED)
        return obj
    if isinstance(obj, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, secrets) for v in obj]
    return obj


class Alerts:
    def __init__(self, enabled: bool, secrets: tuple[str, ...], min_interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.secrets = secrets
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self.sent = 0
        self.suppressed = 0

    def alert(self, kind: str, message: str, **context: object) -> None:
        try:
            now = self._clock()
            if now - self._last.get(kind, -1e18) < self.min_interval_s:
                self.suppressed += 1
                return
            self._last[kind] = now
            log.warning("alert %s: %s", kind, message, extra={"alert": kind})
            if self.enabled:
                with sentry_sdk.new_scope() as scope:
                    scope.set_tag("kind", kind)
                    for k, v in context.items():
                        scope.set_extra(k, v)
                    sentry_sdk.capture_message(message, level="error")
                self.sent += 1
        except Exception:  # an alert must never reach trading
            self.suppressed += 1

    def capture_exception(self, exc: BaseException) -> None:
        try:
            if self.enabled:
                sentry_sdk.capture_exception(exc)
                self.sent += 1
        except Exception:
            self.suppressed += 1

    def flush(self, timeout: float = 2.0) -> None:
        try:
            if self.enabled:
                sentry_sdk.flush(timeout)
        except Exception:
            pass


class NullAlerts:
    """For components built without alerting (tests, tools)."""

    def alert(self, kind: str, message: str, **context: object) -> None:
        pass


REFUSAL_LOG_S = 10.0        # a peer repeating a bad message gets one log line per reason per this long


class EdgeErrors:
    """Counts and logs what one source (a feed, a loop) refused or failed on. Never raises."""

    def __init__(self, source: str, *, metrics: ports.Metrics | None, alerts: ports.Alerts | None = None,
                 clock: Clock | None = None, logger: logging.Logger | None = None) -> None:
        self.source = source
        self.metrics = metrics
        self.alerts = alerts or NullAlerts()
        self._clock = clock.monotonic if clock is not None else time.monotonic
        self._log = logger or log
        self.refusals = 0
        self.errors = 0
        self.by_reason: dict[str, int] = {}
        self._logged: dict[str, tuple[float, int]] = {}       # reason -> (last logged, refusals since)

    def refused(self, reason: str, detail: str) -> None:
        """A peer's message (or part of one) that does not parse or is not plausible: counted and skipped."""
        try:
            self.refusals += 1
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            if self.metrics is not None:
                self.metrics.incr("feed.malformed")
                self.metrics.incr(f"feed.refused.{reason}")
            now = self._clock()
            last, quiet = self._logged.get(reason, (-1e18, 0))
            if now - last >= REFUSAL_LOG_S:
                more = f" (and {quiet} more since the last line)" if quiet else ""
                self._log.warning("%s: skipped a message: %s: %s%s", self.source, reason, detail[:300], more)
                self._logged[reason] = (now, 0)
            else:
                self._logged[reason] = (last, quiet + 1)
        except Exception:  # the policy must never be what stops a feed
            pass

    def malformed(self, exc: Exception) -> None:
        self.refused(getattr(exc, "reason", "malformed"), str(exc))

    def failed(self, where: str, exc: BaseException) -> None:
        """An unexpected exception in one message or one loop pass: a bug or a peer we did not foresee. The caller
        carries on with the next message or pass."""
        try:
            self.errors += 1
            if self.metrics is not None:
                self.metrics.incr(f"feed.{self.source}.errors")
            self._log.error("%s: %s failed: %s: %s", self.source, where, type(exc).__name__, str(exc)[:300],
                            exc_info=(type(exc), exc, exc.__traceback__))
            self.alerts.alert(f"feed_error.{self.source}", f"{self.source}: {where} failed: {type(exc).__name__}",
                              source=self.source, where=where, error=type(exc).__name__)
        except Exception:
            pass


def init_alerts(dsn: str, secrets: Secrets | None = None, min_interval_s: float = 60.0) -> Alerts:
    values = tuple(secrets.values()) if secrets is not None else ()
    if dsn:
        values = (*values, dsn)
        sentry_sdk.init(dsn=dsn, before_send=lambda event, hint: _scrub(event, values),
                        before_breadcrumb=lambda crumb, hint: _scrub(crumb, values),
                        traces_sample_rate=0.0, default_integrations=False)
    return Alerts(bool(dsn), values, min_interval_s)
