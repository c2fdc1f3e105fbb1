"""Polymarket copy-trading bot. gevent must patch the stdlib before anything else imports socket."""
import functools
import importlib.metadata

from gevent import monkey

# patch_all looks up gevent's plugin entry points once per module it patches: 25 reads of every installed
# distribution's metadata, most of every `copier` command's start-up. The answer cannot change while it patches.
_entry_points = importlib.metadata.entry_points
importlib.metadata.entry_points = functools.cache(_entry_points)  # type: ignore[assignment]
try:
    monkey.patch_all()
finally:
    importlib.metadata.entry_points = _entry_points
    del _entry_points
