"""Polymarket copy-trading bot. gevent must patch the stdlib before anything else imports socket."""
import functools
import importlib.metadata
from typing import Any

from gevent import monkey


def _patch() -> None:
    """patch_all looks up gevent's plugin entry points once per module it patches, each lookup a read of every
    installed distribution's metadata: most of every `copier` command's start-up. While it patches, every lookup
    selects from one read (the installed distributions cannot change meanwhile)."""
    original = importlib.metadata.entry_points
    every = functools.cache(original)

    def select(**params: Any) -> Any:
        return every().select(**params)

    importlib.metadata.entry_points = select
    try:
        monkey.patch_all()
    finally:
        importlib.metadata.entry_points = original


_patch()
