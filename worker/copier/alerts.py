"""Sentry alerts (auth failures, rejects, halts, crashes). Never raise; every secret is scrubbed before sending."""
from __future__ import annotations

import logging
import time

import sentry_sdk

log = logging.getLogger("copier.alerts")
REDACTED = "[redacted]"


def _scrub(obj, secrets: tuple[str, ...]):
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
    def __init__(self, enabled: bool, secrets: tuple[str, ...], min_interval_s: float = 60.0, clock=time.monotonic):
        self.enabled = enabled
        self.secrets = secrets
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self.sent = 0
        self.suppressed = 0

    def alert(self, kind: str, message: str, **context) -> None:
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


def init_alerts(dsn: str, secrets=None, min_interval_s: float = 60.0) -> Alerts:
    values = tuple(secrets.values()) if secrets is not None else ()
    if dsn:
        values = (*values, dsn)
        sentry_sdk.init(dsn=dsn, before_send=lambda event, hint: _scrub(event, values),
                        before_breadcrumb=lambda crumb, hint: _scrub(crumb, values),
                        traces_sample_rate=0.0, default_integrations=False)
    return Alerts(bool(dsn), values, min_interval_s)
