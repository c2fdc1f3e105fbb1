"""Structured JSON log lines on stderr: receive, decision, submit and ack lines carry the fills' correlation ids;
secrets redacted."""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time

REDACTED = "[redacted]"
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def fill_cid(dedupe_key: str) -> str:
    """A fill's correlation id: every stage's line for this fill carries it (`grep` follows one fill)."""
    return hashlib.blake2b(dedupe_key.encode(), digest_size=6).hexdigest()


def batch_fields(intent_id: str, fill_keys) -> dict:
    """Log fields of a decision or order line: the intent and the correlation ids of every fill it copies."""
    return {"cid": [fill_cid(k) for k in fill_keys], "intent": intent_id}


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()):
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


def setup_logging(level: str, secrets=None) -> None:
    values = secrets.values() if secrets is not None else ()
    if secrets is not None and secrets.sentry_dsn:
        values = (*values, secrets.sentry_dsn)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_copier", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(values))
    handler._copier = True
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per request would drown the fill lines
    logging.Formatter.converter = time.gmtime
