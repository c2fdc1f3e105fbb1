"""Run the simulator and the copier as real processes on loopback: used by the demo, the e2e tests, bench and soak.

Not part of the trading path. The simulator is started with `polysim serve`, which prints one JSON line of URLs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from polylab import procguard
from polylab.waiting import eventually  # noqa: F401  (the harness's callers import it from here)

DEFAULT_SOURCE = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
# A throwaway key for the simulator only (never holds real funds).
SIM_PRIVATE_KEY = "0x" + "5a" * 32


class SimProcess:
    def __init__(self, workdir: Path, *, speed: float = 15.0, seed: int = 7, source_wallet: str = DEFAULT_SOURCE,
                 background: bool = True, extra_args: tuple[str, ...] = ()):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ground_truth = self.workdir / "ground_truth.jsonl"
        self.log = open(self.workdir / "polysim.log", "ab")
        args = [sys.executable, "-m", "polysim.cli", "serve", "--speed", str(speed), "--seed", str(seed),
                "--ground-truth", str(self.ground_truth), "--source-wallet", source_wallet,
                "--background" if background else "--no-background", *extra_args]
        self.window_s = 900.0 / speed
        # Its own session, and SIGTERM if whatever started it dies: a killed run never leaves a simulator behind.
        self.proc = procguard.spawn(args, stdout=subprocess.PIPE, stderr=self.log, cwd=self.workdir)
        assert self.proc.stdout is not None     # stdout=PIPE
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"polysim exited before printing its URLs; see {self.workdir / 'polysim.log'}")
        self.urls = json.loads(line)
        self.http = httpx.Client(timeout=10.0)

    def fresh_window(self, min_left_s: float) -> None:
        """Wait until the current market window has at least min_left_s to run (no trades into an expiry)."""
        left = self.window_s - time.time() % self.window_s
        if left < min_left_s:
            time.sleep(left + 0.5)

    def source_fill(self, **body) -> dict:
        r = self.http.post(f"{self.urls['control']}/source-fill", json=body)
        r.raise_for_status()
        return r.json()

    def faults(self, **spec) -> dict:
        r = self.http.post(f"{self.urls['control']}/faults", json=spec)
        r.raise_for_status()
        return r.json()

    def chain(self, action: str, **body) -> dict:
        """The Polygon RPC surface's control API: reorg (tx_hash, drop), faults (mempool_silent, logs_silent);
        action "state" reads its head, counters and live subscriptions."""
        url = self.urls["rpc_ws"].replace("ws://", "http://").rstrip("/") + f"/_chain/{action}"
        r = self.http.get(url) if action == "state" else self.http.post(url, json=body)
        r.raise_for_status()
        return r.json()

    def state(self) -> dict:
        r = self.http.get(f"{self.urls['control']}/state")
        r.raise_for_status()
        return r.json()

    def ground_truth_events(self) -> list[dict]:
        if not self.ground_truth.exists():
            return []
        return [json.loads(line) for line in self.ground_truth.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        procguard.stop(self.proc, grace_s=10)
        self.http.close()
        self.log.close()


def copier_config(urls: dict, store_path: Path, *, dry_run: bool = True, source_wallet: str = DEFAULT_SOURCE,
                  statsd_port: int = 8125, speed: float = 1.0, overrides: dict | None = None) -> dict:
    """A copier config pointed at a simulator running at `speed` (its windows last 900/speed s)."""
    cfg: dict[str, Any] = {
        "copy": {"source_wallet": source_wallet, "coalesce_ms": 300, "max_hold_ms": 2000},
        "sizing": {"mode": "capped_proportional", "size_multiplier": 1.0, "min_order_notional_usd": 1.0,
                   "max_notional_per_order_usd": 25.0, "max_notional_per_market_usd": 150.0,
                   "max_total_notional_per_15m_window_usd": 400.0},
        "execution": {"dry_run": dry_run, "max_slippage_bps": 200, "near_expiry_cutoff_seconds": 2.0},
        "markets": {"slug_prefixes": ["btc-updown-15m", "eth-updown-15m"], "refresh_s": 2.0,
                    "window_seconds": int(900 / speed)},
        "feeds": {"data_watchdog_s": 5.0, "backoff_max_s": 1.0, "use_chain_logs": bool(urls.get("rpc_ws")),
                  "use_mempool": bool(urls.get("rpc_ws"))},
        "endpoints": {"clob": urls["clob"], "rtds_ws": urls["rtds"], "market_ws": urls["market_ws"],
                      "user_ws": urls["user_ws"], "data_api": urls["data_api"], "gamma": urls["gamma"],
                      "polygon_ws": urls.get("rpc_ws") or "", "polygon_rpc": urls.get("rpc_http") or "",
                      "relayer": urls.get("relayer") or "https://relayer-v2.polymarket.com",
                      "geoblock": urls["geoblock"]},
        "redeem": {"interval_s": max(1.0, round(30.0 / speed, 1))},
        # No chronyd to ask on a development machine: the clock check is off (the lab host has one).
        "telemetry": {"statsd_port": statsd_port, "ntp_server": ""},
        "store": {"path": str(store_path)},
    }
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_env_file(path: Path, values: dict) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    os.chmod(path, 0o600)
    return path


def copier_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "copier", *args]


def start_copier(config: Path, log_path: Path, env_file: Path | None = None) -> subprocess.Popen:
    args = copier_cmd("run", "--config", str(config))
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    return subprocess.Popen(args, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)


def run_copier(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(copier_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=procguard.dies_with_me())
