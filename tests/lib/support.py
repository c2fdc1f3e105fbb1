"""Helpers shared by the test suites (each suite runs in its own process; the lab's one `eventually` imports only the
standard library)."""
from polylab.waiting import eventually

__all__ = ["eventually"]
