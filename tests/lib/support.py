"""Helpers shared by the test suites (no copier or simulator imports: each suite runs in its own process)."""
import time


def eventually(cond, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll cond() until it returns something truthy; return it, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
