"""The copier as a real process on a host whose chronyd is not synchronised (a chronyc that says so, first on PATH):
it alerts at once, keeps deciding orders while the clock has been untrusted for less than
telemetry.max_unsynchronised_s, and refuses new ones past it, with the reason recorded."""
import json
import os
import signal
import stat

from polylab.harness import (
    copier_config,
    eventually,
    run_copier,
    start_copier,
    write_config,
    write_env_file,
)
from polylab.soak import SentrySink

# `chronyc -c -n tracking` of a chronyd without a reachable source (recorded on the lab host, chrony 4.3).
UNSYNCHRONISED = ("00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,1.000000000,"
                  "1.000000000,0.0,Not synchronised")
LIMIT_S = 20.0


def _report(config) -> dict:
    out = run_copier("report", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _feeds_live(config) -> bool:
    out = run_copier("status", "--config", str(config), "--json")
    feeds = (json.loads(out.stdout).get("heartbeat") or {}).get("feeds", []) if out.returncode == 0 else []
    sockets = [f for f in feeds if "connected" in f]          # the gap-filler polls: it holds no connection
    return bool(sockets) and all(f["connected"] for f in sockets)


def test_unsynchronised_clock_alerts_then_refuses_new_orders_past_the_limit(sim, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    chronyc = bin_dir / "chronyc"
    chronyc.write_text(f"#!/bin/sh\necho '{UNSYNCHRONISED}'\n")
    chronyc.chmod(chronyc.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    sentry = SentrySink(tmp_path / "sentry.envelopes")
    config = write_config(tmp_path / "copier.yaml", copier_config(
        sim.urls, tmp_path / "copier.sqlite", speed=900 / sim.window_s,
        overrides={"telemetry": {"ntp_server": "127.0.0.1", "ntp_check_interval_s": 1.0,
                                 "max_unsynchronised_s": LIMIT_S}}))
    env = write_env_file(tmp_path / "copier.env", {"SENTRY_DSN": sentry.dsn})
    sim.fresh_window(LIMIT_S + 30)
    proc = start_copier(config, tmp_path / "copier.log", env)
    envelopes = tmp_path / "sentry.envelopes"
    try:
        # At once: the alert, and an order for a fill while the limit has not passed.
        eventually(lambda: envelopes.exists() and b"chronyd is not synchronised" in envelopes.read_bytes(), 15, 0.2,
                   "the clock alert")
        eventually(lambda: _feeds_live(config), 15, 0.3, "connected feeds")
        sim.source_fill(asset="btc", outcome="Up", side="BUY", size=12)
        before = eventually(lambda: (r := _report(config))["orders"] >= 1 and r, 15, 0.3, "an order before the limit")
        assert "clock_untrusted" not in before["refusals"]
        # Past the limit: the refusal is alerted, and a new fill is recorded as refused for that reason.
        eventually(lambda: b"new orders refused" in envelopes.read_bytes(), LIMIT_S + 10, 0.5, "the refusal alert")
        sim.source_fill(asset="eth", outcome="Down", side="BUY", size=12)
        after = eventually(lambda: (r := _report(config))["refusals"].get("clock_untrusted") and r, 15, 0.3,
                           "a refusal for the untrusted clock")
        assert after["orders"] == before["orders"] and after["refusals"]["clock_untrusted"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
