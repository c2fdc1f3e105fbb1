"""supervisord event listener: an unexpected exit or a FATAL state of the copier becomes a Sentry alert.

Speaks the eventlistener protocol on stdin/stdout (READY -> header line -> payload -> RESULT 2\\nOK). Garbage input
is acknowledged and skipped, never fatal: supervisord would otherwise stop delivering events.
"""
from __future__ import annotations

import os
import sys

from copier.alerts import init_alerts
from copier.config import Secrets

PROGRAM = os.environ.get("COPIER_PROGRAM", "copier")


def parse_tokens(line: str) -> dict[str, str]:
    return dict(tok.split(":", 1) for tok in line.split() if ":" in tok)


def alert_for(event: str, payload: dict[str, str]) -> str | None:
    if payload.get("processname") != PROGRAM:
        return None
    if event == "PROCESS_STATE_FATAL":
        return f"{PROGRAM} is FATAL: supervisord gave up restarting it"
    if event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0":
        return f"{PROGRAM} exited unexpectedly (pid {payload.get('pid', '?')}); supervisord restarts it"
    if event == "PROCESS_STATE_BACKOFF":
        # A death before startsecs never reaches EXITED: supervisord goes STARTING -> BACKOFF and retries.
        return f"{PROGRAM} died while starting (attempt {payload.get('tries', '?')}); supervisord retries it"
    return None


def main(stdin=sys.stdin, stdout=sys.stdout) -> int:
    alerts = init_alerts(os.environ.get("SENTRY_DSN", ""), Secrets(sentry_dsn=os.environ.get("SENTRY_DSN", "")),
                         min_interval_s=0.0)
    while True:
        stdout.write("READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return 0
        try:
            header = parse_tokens(line)
            body = stdin.read(int(header.get("len", "0")))
            message = alert_for(header.get("eventname", ""), parse_tokens(body))
            if message:
                alerts.alert(header["eventname"].lower(), message)
                alerts.flush()
        except (ValueError, KeyError):
            pass
        stdout.write("RESULT 2\nOK")
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
