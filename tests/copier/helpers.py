"""Builders shared by the copier's unit tests."""
from __future__ import annotations

from copier.types import MarketMeta, Side, SourceFill

CID = "0x" + "ab" * 32
UP, DOWN = "1111", "2222"
T0 = 1_800_000_000.0


def market(end_ts: float = T0 + 900, tick: float = 0.01, min_size: float = 5.0, cid: str = CID,
           tokens=(UP, DOWN), version: int = 2) -> MarketMeta:
    return MarketMeta(condition_id=cid, token_ids=tuple(tokens), outcomes=("Up", "Down"), tick_size=tick,
                      min_size=min_size, neg_risk=False, end_ts=end_ts, start_ts=end_ts - 900,
                      exchange_version=version, slug="btc-updown-15m-test")


def fill(n: int, side: Side = Side.BUY, size: float = 10.0, price: float = 0.5, t: float = T0, asset: str = UP,
         outcome: str = "Up", cid: str = CID, tx: str | None = None) -> SourceFill:
    return SourceFill(tx_hash=tx or f"0x{n:064x}", asset=asset, condition_id=cid, outcome=outcome,
                      outcome_index=0 if outcome == "Up" else 1, side=side, price=price, size=size, match_ts=t,
                      recv_ns=int(t * 1e9), feed="rtds.trades", wallet="0xsource")


class RecordingMetrics:
    """Counters and gauges kept in memory, for tests that read what was sent."""

    def __init__(self):
        self.counts, self.gauges = {}, {}

    def incr(self, name, n=1):
        self.counts[name] = self.counts.get(name, 0) + n

    def timing(self, name, ms):
        pass

    def gauge(self, name, value):
        self.gauges[name] = value

    def flush(self):
        pass
