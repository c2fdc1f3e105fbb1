"""ClockWatch: chronyd's tracking state decides whether the clock is trusted; an untrusted clock alerts at once and
refuses new orders past telemetry.max_unsynchronised_s. Real chronyc output, hostile variants, a real subprocess."""
from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copier.clock import FakeClock
from copier.config import TelemetryConfig
from copier.metrics import NullMetrics
from copier.timesync import (
    ChronyUnreadable,
    ClockIssue,
    ClockWatch,
    Leap,
    clock_problem,
    parse_tracking,
    read_tracking,
)

# `chronyc -c -n -h 127.0.0.1 tracking` as the copier user on the lab host (chrony 4.3, no reachable source).
UNSYNCHRONISED = ("00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,1.000000000,"
                  "1.000000000,0.0,Not synchronised\n")
# The same 14 fields for a host synchronised to a stratum-1 NTS server: 12 us offset, 9 ms round trip.
SYNCHRONISED = ("50505300,194.58.200.20,2,1764460000.123456789,-0.000012345,0.000001234,0.000023456,-12.345,"
                "0.001,0.020,0.009000000,0.000500000,64.5,Normal\n")


class Alerts:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def alert(self, kind, message, **context):
        self.sent.append((kind, message))


class Chrony:
    """chronyd as the watch sees it: the next tracking line, or a failure to read it."""

    def __init__(self, line: str | Exception):
        self.line = line
        self.asked: list[str] = []

    def __call__(self, host: str):
        self.asked.append(host)
        if isinstance(self.line, Exception):
            raise self.line
        return parse_tracking(self.line)


def watch(chrony, **cfg):
    clock, metrics, alerts = FakeClock(), NullMetrics(), Alerts()
    w = ClockWatch(TelemetryConfig(**{"max_unsynchronised_s": 60.0, **cfg}), clock=clock, metrics=metrics,
                   alerts=alerts, tracking_reader=chrony)
    return w, clock, metrics, alerts


def test_parse_tracking_recorded_unsynchronised_line_reads_leap_and_stratum():
    t = parse_tracking(UNSYNCHRONISED)
    assert t.leap is Leap.UNSYNCHRONISED and t.stratum == 0 and t.ref_time == 0.0
    assert clock_problem(t, 100.0)[0] is ClockIssue.UNSYNCHRONISED


def test_parse_tracking_synchronised_line_bounds_the_error():
    t = parse_tracking(SYNCHRONISED)
    assert t.leap is Leap.NORMAL and t.stratum == 2 and t.reference == "194.58.200.20"
    # 0.012345 ms offset + 9 ms / 2 + 0.5 ms dispersion
    assert t.error_bound_ms == pytest.approx(0.012345 + 4.5 + 0.5)
    assert clock_problem(t, 100.0) is None
    issue, detail = clock_problem(t, 4.0)
    assert issue is ClockIssue.ERROR_BOUND and "5.0ms > telemetry.max_clock_offset_ms 4ms" in detail


@pytest.mark.parametrize("line", [
    "", "506 Cannot talk to daemon", "<html>502</html>", UNSYNCHRONISED.replace("Not synchronised", "Maybe"),
    SYNCHRONISED.replace(",2,", ",x,", 1), SYNCHRONISED.replace("0.009000000", "nan"),
    SYNCHRONISED.replace("0.009000000", "-1"), SYNCHRONISED.replace(",2,", ",17,", 1),
    SYNCHRONISED.replace("-0.000012345", "inf"), SYNCHRONISED + "extra,field",
])
def test_parse_tracking_hostile_line_raises_unreadable(line):
    with pytest.raises(ChronyUnreadable):
        parse_tracking(line)


@given(st.text(max_size=300))
def test_parse_tracking_any_text_parses_or_raises_unreadable(text):
    try:
        t = parse_tracking(text)
    except ChronyUnreadable:
        return
    assert t.error_bound_ms >= 0 and 0 <= t.stratum <= 16


def test_clock_watch_synchronised_clock_gauges_and_never_blocks():
    w, clock, metrics, alerts = watch(Chrony(SYNCHRONISED), ntp_server="127.0.0.1")
    assert w.check() is None
    clock.advance(3600)
    assert w.block_reason(clock.monotonic()) is None
    assert metrics.gauges["clock.synchronised"] == 1 and metrics.gauges["clock.orders_refused"] == 0
    assert metrics.gauges["clock_offset_ms"] == pytest.approx(-0.012345)
    assert alerts.sent == []


def test_clock_watch_unsynchronised_alerts_at_once_and_blocks_only_past_the_limit():
    chrony = Chrony(UNSYNCHRONISED)
    w, clock, metrics, alerts = watch(chrony, ntp_server="127.0.0.1", max_unsynchronised_s=60.0)
    assert "not synchronised" in w.check()
    assert chrony.asked == ["127.0.0.1"]
    assert [kind for kind, _ in alerts.sent] == ["clock_unsynchronised"]
    clock.advance(59.9)
    assert w.block_reason(clock.monotonic()) is None
    clock.advance(0.2)
    reason = w.block_reason(clock.monotonic())
    assert reason.startswith("clock untrusted for 60s > telemetry.max_unsynchronised_s 60s: chronyd is not")
    w.check()
    assert [kind for kind, _ in alerts.sent] == ["clock_unsynchronised", "clock_orders_refused"]
    assert metrics.gauges["clock.orders_refused"] == 1


def test_clock_watch_resync_lifts_the_refusal_and_a_new_loss_starts_a_new_wait():
    chrony = Chrony(UNSYNCHRONISED)
    w, clock, _metrics, _alerts = watch(chrony, ntp_server="127.0.0.1", max_unsynchronised_s=30.0)
    w.check()
    clock.advance(31)
    w.check()
    assert w.block_reason(clock.monotonic()) is not None
    chrony.line = SYNCHRONISED
    assert w.check() is None and w.block_reason(clock.monotonic()) is None
    chrony.line = UNSYNCHRONISED
    w.check()
    clock.advance(29)
    assert w.block_reason(clock.monotonic()) is None, "the wait restarts when sync is lost again"
    clock.advance(2)
    assert w.block_reason(clock.monotonic()) is not None


def test_clock_watch_unreadable_chronyd_is_untrusted_and_counted():
    w, clock, metrics, _alerts = watch(Chrony(ChronyUnreadable("chronyc is not installed")), ntp_server="127.0.0.1",
                                      max_unsynchronised_s=0.0)
    assert w.check() == "chronyd state unreadable: chronyc is not installed"
    assert metrics.counts["clock.read_errors"] == 1
    assert "chronyc is not installed" in w.block_reason(clock.monotonic())


def test_clock_watch_alerts_once_per_issue_not_per_changing_figure():
    chrony = Chrony(SYNCHRONISED.replace("0.009000000", "0.300000000"))
    w, clock, _metrics, alerts = watch(chrony, ntp_server="127.0.0.1", max_clock_offset_ms=100.0,
                                      max_unsynchronised_s=600.0)
    w.check()
    chrony.line = SYNCHRONISED.replace("0.009000000", "0.310000000")
    clock.advance(30)
    w.check()
    assert [kind for kind, _ in alerts.sent] == ["clock_unsynchronised"]
    assert "155.5ms" in w.problem, "the latest figure is what a refusal would name"


def test_clock_watch_without_a_server_never_asks_and_never_blocks():
    chrony = Chrony(UNSYNCHRONISED)
    w, clock, _metrics, alerts = watch(chrony, ntp_server="")
    assert w.check() is None and w.check() is None
    clock.advance(1e6)
    assert chrony.asked == [] and w.block_reason(clock.monotonic()) is None and alerts.sent == []


def _fake_chronyc(tmp_path, script: str) -> dict:
    path = tmp_path / "chronyc"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}


def test_read_tracking_runs_chronyc_in_csv_mode_against_the_configured_host(tmp_path, monkeypatch):
    args = tmp_path / "args"
    env = _fake_chronyc(tmp_path, f'echo "$@" > {args}\nprintf "%s" "{SYNCHRONISED.strip()}"\n')
    monkeypatch.setenv("PATH", env["PATH"])
    assert read_tracking("127.0.0.1").stratum == 2
    assert args.read_text().split() == ["-c", "-n", "-h", "127.0.0.1", "tracking"]


def test_read_tracking_daemon_not_answering_is_unreadable_with_its_words(tmp_path, monkeypatch):
    env = _fake_chronyc(tmp_path, 'echo "506 Cannot talk to daemon"\nexit 1\n')
    monkeypatch.setenv("PATH", env["PATH"])
    with pytest.raises(ChronyUnreadable, match="chronyc exited 1: 506 Cannot talk to daemon"):
        read_tracking("127.0.0.1")


def test_read_tracking_without_chronyc_is_unreadable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ChronyUnreadable, match="not installed"):
        read_tracking("127.0.0.1")
