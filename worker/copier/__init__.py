"""Polymarket copy-trading bot. gevent must patch the stdlib before anything else imports socket."""
from gevent import monkey

monkey.patch_all()
