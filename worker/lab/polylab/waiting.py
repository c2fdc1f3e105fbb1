"""Waiting on a condition, bounded: the one `eventually` of the harness, the soak, the bench and every test suite."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(cond: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll cond() until it returns something truthy; return it, or raise TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
