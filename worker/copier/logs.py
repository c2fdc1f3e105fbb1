"""Structured JSON log lines on stderr: receive, decision, submit and ack lines carry the fills' correlation ids;
secrets redacted.

The running copier defers INFO lines: they are formatted and written `defer_s` later, together, from their own
greenlet, so a fill's receive and decision lines cost its order ~1 us each instead of a JSON encode and a write.
WARNING and above are written at once (after whatever INFO lines were held, so the order is kept).
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

import gevent
from gevent.monkey import get_original

_os_thread_id = get_original("_thread", "get_ident")

if TYPE_CHECKING:
    from copier.config import Secrets

REDACTED = "[redacted]"
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def fill_cid(dedupe_key: str) -> str:
    """A fill's correlation id: every stage's line for this fill carries it (`grep` follows one fill)."""
    return hashlib.blake2b(dedupe_key.encode(), digest_size=6).hexdigest()


def batch_fields(intent_id: str, fill_keys: Iterable[str]) -> dict[str, object]:
    """Log fields of a decision or order line: the intent and the correlation ids of every fill it copies."""
    return {"cid": [fill_cid(k) for k in fill_keys], "intent": intent_id}


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 6), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = json.dumps(out, default=str)
        for s in self.secrets:
            line = line.replace(s, REDACTED)
        return line


class DeferredStreamHandler(logging.StreamHandler[TextIO]):
    _copier: bool        # set on the handler setup_logging installs, so a second setup replaces it

    def __init__(self, stream: TextIO, defer_s: float) -> None:
        super().__init__(stream)
        self.defer_s = defer_s
        self._held: list[logging.LogRecord] = []
        self._due = False
        self._hub_thread = _os_thread_id()       # greenlets of the hub's thread only: they never preempt each other

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or not self.defer_s or _os_thread_id() != self._hub_thread:
            self.write_held()
            super().emit(record)
            return
        self._held.append(record)
        if not self._due:
            self._due = True
            gevent.spawn_later(self.defer_s, self.write_held)

    def write_held(self) -> None:
        self._due = False
        if not self._held:
            return
        records, self._held = self._held, []
        lines = []
        for record in records:
            try:
                lines.append(self.format(record))
            except Exception:
                self.handleError(record)
        try:
            self.stream.write("".join(line + self.terminator for line in lines))
            super().flush()
        except Exception:
            self.handleError(records[0])

    def flush(self) -> None:
        """Also at exit (logging.shutdown): nothing held is lost on a clean stop."""
        self.write_held()
        super().flush()


def setup_logging(level: str, secrets: Secrets | None = None, defer_s: float = 0.0) -> None:
    values = secrets.values() if secrets is not None else ()
    if secrets is not None and secrets.sentry_dsn:
        values = (*values, secrets.sentry_dsn)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_copier", False):
            root.removeHandler(h)
    handler = DeferredStreamHandler(sys.stderr, defer_s)
    handler.setFormatter(JsonFormatter(values))
    handler._copier = True
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per request would drown the fill lines
    logging.Formatter.converter = time.gmtime
    # The JSON lines carry none of these: skip the caller's frame walk and the thread/process lookups per record.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
