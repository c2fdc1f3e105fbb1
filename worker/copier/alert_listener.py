"""supervisord event listener: an unexpected exit or a FATAL state of the copier becomes a Sentry alert.

Speaks the eventlistener protocol on stdin/stdout (READY -> header line -> payload -> RESULT 2\\nOK). Garbage input
is acknowledged and skipped, never fatal: supervisord would otherwise stop delivering events.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from copier.alerts import init_alerts
from copier.config import Secrets, read_env_file
from copier.errors import ConfigError

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


def sentry_dsn(argv: list[str]) -> str:
    """SENTRY_DSN from the environment, else from `--env-file FILE` (the copier's 0600 secrets file; only the DSN
    is kept, so the listener never holds the trading keys)."""
    p = argparse.ArgumentParser(prog="copier.alert_listener")
    p.add_argument("--env-file", default=None)
    args = p.parse_args(argv)
    if os.environ.get("SENTRY_DSN"):
        return os.environ["SENTRY_DSN"]
    return read_env_file(args.env_file).get("SENTRY_DSN", "") if args.env_file else ""


def main(argv: list[str] | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    try:
        dsn = sentry_dsn(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    alerts = init_alerts(dsn, Secrets(sentry_dsn=dsn), min_interval_s=0.0)
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
