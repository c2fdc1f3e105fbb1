"""What went wrong, encoded as what to do about it. Imports nothing internal."""


class BotError(Exception):
    """Root of every error the copier raises on purpose."""


class ConfigError(BotError):
    """Bad configuration or environment: exit 2 with this one-line message."""


class OperationalError(BotError):
    """The bot cannot trade safely (auth failure, corrupt state): halt and page."""


class TemporaryError(BotError):
    """Transient venue or network failure: retry with backoff (same signed bytes)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TemporaryError):
    """HTTP 429: wait at least retry_after seconds."""


class UnknownOutcome(TemporaryError):
    """The venue may or may not have our order: resolve by looking it up by hash."""


class OrderRejected(BotError):
    """The venue refused the order for good: record and skip, never retry."""


class InsufficientFunds(OrderRejected):
    pass


class BelowMinSize(OrderRejected):
    pass


class MalformedMessage(BotError):
    """A peer's payload that does not parse or is not plausible: count it under `reason` and skip it."""

    def __init__(self, message: str, reason: str = "malformed"):
        super().__init__(message)
        self.reason = str(getattr(reason, "value", reason))    # a types.BadInput, as the plain string it counts by


class StaleSignal(BotError):
    """A source fill too old to act on: drop it."""
