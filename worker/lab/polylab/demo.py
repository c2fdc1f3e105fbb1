"""`make demo`: the simulator plus the copier in dry run on loopback, a scripted source stream, the positions, the
markets resolved (the simulator's control API), then the positions and the report with its PnL.

No credentials: dry run uses the paper executor against the simulator's live books.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from polylab.harness import SimProcess, copier_config, eventually, run_copier, start_copier, write_config

WORKDIR = Path("var/demo")


def scripted_stream(sim: SimProcess) -> tuple[int, set[str]]:
    """Singles, a burst of six small BUYs within ~1.2 s, an opposite fill inside a window, and a SELL. Returns how
    many fills, and the markets they traded."""
    steps = [
        ("btc", "Up", "BUY", 12, 0.0), ("eth", "Down", "BUY", 15, 1.5),
        *[("btc", "Down", "BUY", 6, 0.2) for _ in range(6)],
        ("btc", "Down", "SELL", 5, 0.1), ("btc", "Up", "SELL", 6, 2.5), ("eth", "Up", "BUY", 20, 1.0),
    ]
    markets = set()
    for asset, outcome, side, size, pause in steps:
        time.sleep(pause)
        markets.add(sim.source_fill(asset=asset, outcome=outcome, side=side, size=size)["condition_id"])
    return len(steps), markets


def resolve(sim: SimProcess, markets: set[str]) -> None:
    for cid in sorted(markets):
        sim.http.post(f"{sim.urls['control']}/resolve", json={"condition_id": cid}).raise_for_status()


def main() -> int:
    WORKDIR.mkdir(parents=True, exist_ok=True)
    store = WORKDIR / "copier.sqlite"
    for p in WORKDIR.glob("copier.sqlite*"):
        p.unlink()
    sim = SimProcess(WORKDIR, speed=15.0)
    print(f"simulator up: {sim.urls['clob']} (markets rotate every {900 / 15:.0f} s)", flush=True)
    config = write_config(WORKDIR / "copier.yaml", copier_config(
        sim.urls, store, dry_run=True, speed=15.0, overrides={"positions": {"snapshot_interval_s": 2.0}}))
    copier = start_copier(config, WORKDIR / "copier.log")
    try:
        eventually(lambda: run_copier("status", "--config", str(config), "--json").returncode == 0
                   and '"ts"' in run_copier("status", "--config", str(config), "--json").stdout,
                   30, 0.5, "the copier's first heartbeat")
        n, markets = scripted_stream(sim)
        print(f"sent {n} source fills; waiting for the feed delay and the coalescer", flush=True)
        time.sleep(8)
        print("$ copier positions", flush=True)
        print(run_copier("positions", "--config", str(config)).stdout, end="")
        resolve(sim, markets)
        print(f"resolved {len(markets)} markets (the simulator's oracle decides); waiting for the market channel",
              flush=True)
        time.sleep(4)
        print("$ copier positions", flush=True)
        print(run_copier("positions", "--config", str(config)).stdout, end="")
        print("$ copier report", flush=True)
        report = run_copier("report", "--config", str(config))
        print(report.stdout, end="")
    finally:
        copier.send_signal(signal.SIGTERM)
        code = copier.wait(15)
        sim.stop()
    print(f"copier exited with {code} after SIGTERM; logs in {WORKDIR}/")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
