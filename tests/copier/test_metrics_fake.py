"""A recording stand-in for copier.metrics.Metrics (same interface) for tests of other stages."""
from collections import Counter


class FakeMetrics:
    def __init__(self):
        self.counts = Counter()
        self.timings: dict[str, list[float]] = {}
        self.gauges: dict[str, float] = {}

    def incr(self, name, n=1):
        self.counts[name] += n

    def timing(self, name, ms):
        self.timings.setdefault(name, []).append(ms)

    def gauge(self, name, value):
        self.gauges[name] = value
