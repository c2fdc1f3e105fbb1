"""The Data API gap-filler on recorded rows and a scripted HTTP client: a broken answer is counted and retried."""
import json
from pathlib import Path

from copier.alerts import NullAlerts
from copier.clock import FakeClock
from copier.config import Config, CopyConfig
from copier.dedupe import Deduper
from copier.detection import Detection
from copier.metrics import NullMetrics
from copier.watcher import GapFiller

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "polymarket"


class ScriptedHttp:
    def __init__(self, bodies):
        self.bodies, self.params = list(bodies), []

    def get(self, path, params):
        self.params.append(params)
        return _Response(self.bodies.pop(0))


class _Response:
    def __init__(self, body):
        self.content = body if isinstance(body, bytes) else body.encode()

    def raise_for_status(self):
        pass


def _row():
    """A real v2 row shape (field names from the recorded v2 payload), of our source wallet."""
    fields = json.loads((PAYLOADS / "data_api_v2_trade_fields.json").read_text())
    row = fields["data"][0] if isinstance(fields, dict) and "data" in fields else fields
    return {**row, "proxy_wallet": "0x1d0034134e339a309700ff2d34e99fa2d48b0313", "side": "BUY", "size": 10,
            "price": 0.5, "timestamp": 1_800_000_000, "token_id": "1111", "condition_id": "0x" + "ab" * 32,
            "transaction_hash": "0x" + "12" * 32, "outcome": "Up", "outcome_index": 0}


def test_a_truncated_body_is_counted_the_pass_fails_and_the_next_pass_recovers_the_fill():
    clock, metrics, got, cursor = FakeClock(1_800_000_005.0), NullMetrics(), [], {}
    page = json.dumps({"data": [_row()], "pagination": {"has_more": False, "next_cursor": None}})
    http = ScriptedHttp(['{"data":[{"proxy_wallet":', page])
    gf = GapFiller(Config(copy=CopyConfig()), detection=_detection(clock, metrics), on_fill=got.append, clock=clock,
                   metrics=metrics,
                   cursor_getter=lambda: cursor.get("c"), cursor_setter=lambda v: cursor.update(c=v),
                   reconnects=lambda: 0, http=http)
    assert gf.scan() is None and metrics.counts["feed.malformed"] == 1 and got == [] and not cursor
    assert gf.scan() == 1 and got[0].size == 10.0 and cursor["c"] == 1_800_000_000
    assert all(p["taker_only"] == "false" and p["_"] for p in http.params)     # maker fills, cache-busted


def _detection(clock, metrics):
    return Detection(Deduper(), Config().feeds, clock=clock, metrics=metrics, alerts=NullAlerts())


def _gap_filler(clock, metrics, got, cursor, http):
    return GapFiller(Config(copy=CopyConfig()), detection=_detection(clock, metrics), on_fill=got.append, clock=clock,
                   metrics=metrics,
                     cursor_getter=lambda: cursor.get("c"), cursor_setter=lambda v: cursor.update(c=v),
                     reconnects=lambda: 0, http=http)


def _page(*rows) -> str:
    return json.dumps({"data": list(rows), "pagination": {"has_more": False, "next_cursor": None}})


def test_far_future_rows_never_move_the_cursor_and_a_later_fill_is_copied_after_a_restart():
    # Arrange: a microsecond timestamp and a millisecond one an hour ahead, as a Data API bug would show them
    clock, metrics, got, cursor = FakeClock(1_800_000_005.0), NullMetrics(), [], {}
    micro = {**_row(), "timestamp": 1_800_000_000 * 1_000_000, "transaction_hash": "0x" + "01" * 32}
    hour_ahead = {**_row(), "timestamp": (1_800_000_005 + 3600) * 1000, "transaction_hash": "0x" + "02" * 32}
    # Act: one pass, then a restart (a new gap-filler on the same durable cursor) that sees a real fill too
    first = _gap_filler(clock, metrics, got, cursor, ScriptedHttp([_page(micro, hour_ahead)])).scan()
    after_first = dict(cursor)
    clock.advance(30)
    real = {**_row(), "timestamp": 1_800_000_030}
    second = _gap_filler(clock, metrics, got, cursor, ScriptedHttp([_page(micro, hour_ahead, real)])).scan()
    # Assert
    assert first == 0 and after_first == {}
    assert second == 1 and [f.tx_hash for f in got] == [real["transaction_hash"]]
    assert cursor["c"] == 1_800_000_030 and metrics.counts["feed.refused.future_timestamp"] == 4


def test_a_cursor_poisoned_before_timestamps_were_checked_is_ignored_and_repaired():
    clock, metrics, got, cursor = FakeClock(1_800_000_005.0), NullMetrics(), [], {"c": 1_800_000_000_000.0}
    gf = _gap_filler(clock, metrics, got, cursor, ScriptedHttp([_page(_row())]))
    assert gf.scan() == 1 and len(got) == 1
    assert cursor["c"] == 1_800_000_000 and metrics.counts["feed.refused.future_timestamp"] == 1


def test_hostile_answers_fail_the_pass_and_are_counted_by_reason_never_raised():
    clock, metrics, got, cursor = FakeClock(1_800_000_005.0), NullMetrics(), [], {}
    bodies = ['{"data": [1]', "[" * 30_000, "<html>502</html>", '{"data": {"a": 1}}', '{"data": [NaN]}', "",
              b'{"data": "\xff\xfe"}']
    gf = _gap_filler(clock, metrics, got, cursor, ScriptedHttp(bodies + [_page(_row())]))
    assert [gf.scan() for _ in bodies] == [None] * len(bodies)
    assert gf.scan() == 1 and len(got) == 1
    assert metrics.counts["gapfill.errors"] == len(bodies)
    assert {k: v for k, v in metrics.counts.items() if k.startswith("feed.refused.")} == {
        "feed.refused.not_json": 4, "feed.refused.too_deep": 1, "feed.refused.malformed": 1,
        "feed.refused.not_utf8": 1}
