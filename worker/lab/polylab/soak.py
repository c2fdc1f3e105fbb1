"""`make soak`: the PRD acceptance run.

Production form (`--duration 7d`): waits out the run of the deployed copier, then prints its acceptance report.
Compressed form (default, <= 10 min): the simulator at accelerated market time, the copier LIVE (real signatures,
real POSTs to the simulator) under a real supervisord, a random chaos schedule, malformed input on every feed, and a
verdict computed twice — from the copier's store and independently from the simulator's ground truth.
"""
from __future__ import annotations

# The copier's package patches the standard library with gevent when it is first imported: here, before any thread
# of the soak starts (importing it later, from a thread's import lock, breaks that lock).
import copier  # noqa: F401  isort: skip

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from eth_account import Account

from copier.report import FILLED_TARGET_PCT, NO_LIQUIDITY, render_text
from polylab import procguard
from polylab.harness import (
    SIM_PRIVATE_KEY,
    SimProcess,
    copier_cmd,
    copier_config,
    eventually,
    run_copier,
    write_config,
    write_env_file,
)

WORKDIR = Path("var/soak")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ACCEPTED_AT_VENUE = {"matched", "live", "delayed", "unmatched"}
# How long a chaos event keeps the copier from seeing anything (to name the cause of a fill it never saw): a kill -9
# until supervisord has it running again, a stop for the 2 s the soak waits plus the start.
DOWNTIME_S = {"kill9": 5.0, "kill9_redeem": 5.0, "stop_start": 7.0}
MIN_RESOLUTIONS = 20            # market resolutions the compressed run must span
PUSD = "0xc011a7e12a19f7b1f670d46f03b03f3342e82dfb"
ADAPTER = "0xada100db00ca00073811820692005400218fce1f"
REDEEM_WAIT_WINDOWS = 2.5       # how long a kill9_redeem waits for a redemption in flight: a window may hold no winner,
REDEEM_WAIT_MIN_S = 30.0        # and at least this long (a simulated week's 4-second windows pass too fast for one)


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not m:
        raise SystemExit(f"--duration: expected e.g. 7d, 90m or 600s, got {text!r}")
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


# ---- telemetry sinks (real UDP StatsD packets, real Sentry envelopes) ------------------------------------------
class StatsdSink:
    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.out = open(path, "ab")
        self.packets = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except OSError:
                return
            self.packets += 1
            self.out.write(data + b"\n")
            self.out.flush()


class SentrySink:
    def __init__(self, path: Path):
        out = open(path, "ab")
        self.envelopes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip
                    body = gzip.decompress(body)
                out.write(body + b"\n")
                out.flush()
                sink.envelopes += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def dsn(self) -> str:
        return f"http://soakpublickey@127.0.0.1:{self.port}/1"


# ---- supervisord ----------------------------------------------------------------------------------------------
class Supervisor:
    """A real supervisord running the copier and its alert listener (the program and event listener the role
    deploys, with the soak's paths and restart limits).

    It runs in the foreground as the soak's child (nodaemon), in a session of its own and sent SIGTERM if the soak
    dies; its programs are exec'd through `polylab.procguard`, so they are sent SIGTERM if supervisord dies."""

    STOP_WAIT_S = 15            # the copier's stopwaitsecs

    def __init__(self, workdir: Path, config: Path, env_file: Path):
        self.conf = workdir / "supervisord.conf"
        self.sock = workdir / "supervisor.sock"
        guard = f"{sys.executable} -m polylab.procguard --"
        cmd = " ".join(copier_cmd("run", "--config", str(config.resolve()), "--env-file", str(env_file.resolve())))
        self.conf.write_text(f"""[unix_http_server]
file={self.sock.resolve()}
chmod=0700

[supervisord]
logfile={(workdir / 'supervisord.log').resolve()}
pidfile={(workdir / 'supervisord.pid').resolve()}
childlogdir={workdir.resolve()}
nodaemon=true
silent=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.sock.resolve()}

[program:copier]
command={guard} {cmd}
directory={Path.cwd()}
autostart=true
autorestart=unexpected
exitcodes=0
startsecs=1
startretries=1000
stopsignal=TERM
stopwaitsecs={self.STOP_WAIT_S}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={(workdir / 'copier.log').resolve()}
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=3

[eventlistener:copier-alerts]
command={guard} {sys.executable} -m copier.alert_listener --env-file {env_file.resolve()}
events=PROCESS_STATE_EXITED,PROCESS_STATE_BACKOFF,PROCESS_STATE_FATAL
autorestart=true
redirect_stderr=false
stderr_logfile={(workdir / 'alert-listener.err').resolve()}
""")
        bindir = Path(sys.executable).parent
        self.supervisord = str(bindir / "supervisord")
        self.supervisorctl = str(bindir / "supervisorctl")
        err = workdir / "supervisord.err"
        with open(err, "ab") as out:
            self.proc = procguard.spawn([self.supervisord, "-c", str(self.conf)], stdout=out, stderr=out)
        eventually(lambda: self._listening(err), 60, 0.1, "supervisord to listen on its socket")

    def _listening(self, err: Path) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"supervisord exited with {self.proc.returncode}; see {err}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.sock))
            except OSError:             # not created yet, or a stale file of an earlier run
                return False
        return True

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.supervisorctl, "-c", str(self.conf), *args], capture_output=True, text=True,
                              timeout=60, preexec_fn=procguard.dies_with_me())

    def pid(self) -> int:
        out = self.ctl("pid", "copier").stdout.strip()
        return int(out) if out.isdigit() else 0

    def shutdown(self) -> None:
        """SIGTERM: supervisord stops the copier (stopwaitsecs), then the listener, and exits; whatever is left of
        its session after that is SIGKILLed.

        supervisord acts on a signal after spawning the programs due in the same turn of its loop, and a child that
        has not exec'd yet still runs supervisord's own handler: a copier respawned at that moment (the kill -9 chaos
        respawns it every few seconds) misses the stop and trades on until stopwaitsecs ends in a SIGKILL. A program
        that had not exec'd when supervisord was signalled is sent SIGTERM here once it has."""
        if self.proc.poll() is None:
            settled = {pid for pid in procguard.children_of(self.proc.pid) if self._execed(pid)}
            self.proc.terminate()
            resent: set[int] = set()
            deadline = time.monotonic() + 5
            while self.proc.poll() is None and time.monotonic() < deadline:
                for pid in set(procguard.children_of(self.proc.pid)) - settled - resent:
                    if self._execed(pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGTERM)      # the copier's stop signal goes to its group
                        resent.add(pid)
                time.sleep(0.05)
        procguard.stop(self.proc, grace_s=self.STOP_WAIT_S + 10)

    def _execed(self, pid: int) -> bool:
        """The child runs its program (a forked supervisord that has not exec'd yet has supervisord's cmdline)."""
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes() != Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()
        except OSError:
            return False


# ---- the run --------------------------------------------------------------------------------------------------
class Chaos:
    """Random instants for every required fault, within `span` of the run; counts what was actually done."""

    PLAN = {"kill9": 22, "kill9_redeem": 4, "rtds_drop": 30, "rtds_stall": 22, "clob_5xx": 6, "clob_429": 5,
            "post_timeout_after_accept": 5, "engine_restart": 1, "halt_resume": 1, "stop_start": 1,
            "malformed": 8, "clob_garbage": 4}

    def __init__(self, rng: random.Random, duration: float, plan: dict[str, int] | None = None,
                 span: tuple[float, float] = (0.1, 0.85)):
        self.plan = plan if plan is not None else self.PLAN
        self.events = sorted((rng.uniform(*span) * duration, kind) for kind, n in self.plan.items() for _ in range(n))
        self.done: Counter = Counter()
        self.downtime: list[tuple[float, float, str]] = []

    def play(self, start: float, sim: SimProcess, sup: Supervisor, config: Path, rng: random.Random,
             db_path: Path) -> None:
        """Apply each event at its instant after `start`; a fault that could not be applied is reported, not fatal."""
        for at, kind in self.events:
            delay = start + at - time.time()
            if delay > 0:
                time.sleep(delay)
            try:
                apply(kind, sim, sup, config, rng, db_path=db_path)
                self.done[kind] += 1
                if kind in DOWNTIME_S:
                    self.downtime.append((time.time(), time.time() + DOWNTIME_S[kind], kind))
            except Exception as exc:
                print(f"chaos {kind} failed: {exc}", file=sys.stderr)


def source_stream(sim: SimProcess, rng: random.Random, stop: threading.Event, sent: list) -> None:
    """Bursts of small BUYs (dense, as observed), singles and reducing SELLs on the btc and eth markets."""
    while not stop.is_set():
        asset, outcome = rng.choice(["btc", "eth"]), rng.choice(["Up", "Down"])
        try:
            if rng.random() < 0.3:
                for _ in range(rng.randint(5, 8)):
                    sent.append(sim.source_fill(asset=asset, outcome=outcome, side="BUY", size=rng.randint(5, 12)))
                    time.sleep(rng.uniform(0.05, 0.2))
            else:
                side = "SELL" if rng.random() < 0.25 else "BUY"
                sent.append(sim.source_fill(asset=asset, outcome=outcome, side=side, size=rng.randint(5, 30)))
        except Exception as exc:  # the stream goes on; a lost control call only means one fewer source fill
            print(f"source stream: {exc}", file=sys.stderr)
        stop.wait(rng.uniform(2.5, 6.0))


def redemption_in_flight(db_path: Path) -> bool:
    """The store has a redemption signed and not yet confirmed or failed."""
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("select calls from chain_actions where status in ('SIGNED', 'SENT')").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:        # the table does not exist yet, or the file is busy
        return False
    return any('"redeem"' in calls for (calls,) in rows)


def apply(kind: str, sim: SimProcess, sup: Supervisor, config: Path, rng: random.Random,
          db_path: Path) -> None:
    if kind == "kill9_redeem":
        # The node applies the next send and loses its answer: the copier holds a signed, unconfirmed redemption a
        # little longer, and the kill lands then.
        sim.faults(rpc_lost_answer={"count": 1})
        wait_s = max(REDEEM_WAIT_MIN_S, REDEEM_WAIT_WINDOWS * sim.window_s)
        eventually(lambda: redemption_in_flight(db_path), wait_s, 0.02, "a redemption in flight to kill")
        os.kill(eventually(sup.pid, 15, 0.2, "a running copier to kill"), signal.SIGKILL)
    elif kind == "kill9":
        pid = eventually(sup.pid, 15, 0.2, "a running copier to kill")
        os.kill(pid, signal.SIGKILL)
    elif kind == "rtds_drop":
        sim.faults(rtds_drop={})
    elif kind == "rtds_stall":
        sim.faults(rtds_stall={"seconds": rng.uniform(6, 10)})
    elif kind == "clob_5xx":
        sim.faults(clob_5xx={"count": rng.randint(2, 4)})
    elif kind == "clob_429":
        sim.faults(clob_429={"count": rng.randint(1, 3), "retry_after": 0.5})
    elif kind == "post_timeout_after_accept":
        sim.faults(post_timeout_after_accept={"count": 1, "delay_s": 3})
    elif kind == "engine_restart":
        # 2 s of 425 then 2 s of post-only mode: the real 2-minute post-only period at the soak's 30x market clock.
        sim.faults(engine_restart={"seconds": 2})
    elif kind == "halt_resume":
        run_copier("halt", "--config", str(config), "--reason", "soak: operator halt")
        time.sleep(3)
        run_copier("resume", "--config", str(config))
    elif kind == "stop_start":
        sup.ctl("stop", "copier")
        time.sleep(2)
        sup.ctl("start", "copier")
    elif kind == "malformed":
        # Every feed the copier reads: RTDS and market websockets, the Polygon node, the Data API gap-fill.
        n = rng.randint(3, 8)
        sim.faults(malformed={"count": n}, data_api_garbage={"count": 2})
        sim.chain("faults", malformed=n)
    elif kind == "clob_garbage":
        sim.faults(clob_garbage={"count": rng.randint(1, 3)})


def ground_truth_verdict(events: list[dict], db_path: Path,
                         downtime: Sequence[tuple[float, float, str]] = ()) -> dict:
    """Independent of the copier's own accounting: what the venue did versus what the source did.

    Source fills are matched to the store per (tx hash, token, side): feeds may split or merge one transaction's
    fills differently (an aggregate against per-maker rows), so what must agree is the shares; each source fill the
    store did not record is named with its cause and counts as intended and not copied. Copied means filled: per
    eligible intent, the shares the venue's log says its orders (and its remainder orders) filled, against the size
    the store intended, at the source's price. The store's filled shares must equal the venue's, intent by intent."""
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    orders = list(db.execute("select intent_id, order_hash, filled_size from orders"))
    intents = {r["intent_id"]: r for r in db.execute(
        "select intent_id, decision, reason, size, source_price, parent_id from intents")}
    recorded: dict[tuple, list[tuple[float, str]]] = {}
    for r in db.execute("select tx_hash, asset, side, size, intent_id from fills"):
        recorded.setdefault((r["tx_hash"].lower(), r["asset"], r["side"]), []).append((r["size"], r["intent_id"]))
    sighted: dict[str, set[str]] = {}
    for key, feed in db.execute("select dedupe_key, feed from sightings"):
        sighted.setdefault(key.split(":", 1)[0], set()).add(feed)
    venue = [e for e in events if e["kind"] == "order"]
    accepted = [e for e in venue if str(e.get("status", "")).lower() in ACCEPTED_AT_VENUE]
    executions = Counter(e["order_hash"] for e in accepted)
    venue_filled: dict[str, float] = defaultdict(float)
    for e in events:
        if e["kind"] in ("order", "order_update") and e.get("order_hash"):
            venue_filled[e["order_hash"]] = max(venue_filled[e["order_hash"]], float(e.get("filled_size") or 0))
    order_of_intent = {r["intent_id"]: r["order_hash"] for r in orders}
    known = set(order_of_intent.values())
    unknown = sorted(h for h in executions if h not in known)
    twice = sorted(h for h, n in executions.items() if n > 1)
    hash_to_intent = {h: i for i, h in order_of_intent.items()}
    per_intent = Counter(hash_to_intent[h] for h in executions if h in hash_to_intent)
    intended = filled = 0.0
    missed = 0
    misses, disagreements = [], []
    for group, source in _source_groups(events).items():
        total = sum(float(e["size"]) for e in source)
        short = total - sum(size for size, _ in recorded.get(group, []))
        if short > max(1e-4, 5e-3 * total):
            missed += len(source)
            intended += short * sum(float(e["price"]) * float(e["size"]) for e in source) / total
            misses.append({"tx": group[0], "shares_unrecorded": round(short, 6),
                           "cause": _miss_cause(group[0], min(e["match_time"] for e in source), sighted, downtime)})
    children: dict[str, list[str]] = defaultdict(list)
    for iid, r in intents.items():
        if r["parent_id"]:
            children[r["parent_id"]].append(iid)
    store_filled = {r["intent_id"]: r["filled_size"] for r in orders}
    eligible = 0
    for iid, r in intents.items():
        if r["parent_id"] or not (r["decision"] == "order" or r["reason"] == NO_LIQUIDITY):
            continue
        eligible += 1
        ids = [iid, *children[iid]]
        at_venue = sum(venue_filled[order_of_intent[i]] for i in ids if i in order_of_intent)
        ours = sum(store_filled.get(i, 0.0) for i in ids)
        intended += r["size"] * r["source_price"]
        filled += min(at_venue, r["size"]) * r["source_price"]
        if abs(at_venue - ours) > 1e-6:
            disagreements.append({"intent": iid, "store_filled": round(ours, 6), "venue_filled": round(at_venue, 6)})
    return {"venue_orders_accepted": len(accepted), "unknown_orders": unknown, "hashes_executed_twice": twice,
            "orders_per_intent_max": max(per_intent.values(), default=0), "eligible_intents": eligible,
            "intended_usd": round(intended, 4), "filled_usd": round(filled, 4), "missed_fills": missed,
            "missed": misses[:20], "store_vs_venue": disagreements[:20],
            "copied_pct": round(100.0 * filled / intended, 3) if intended else None}


def end_state(sim: SimProcess, wallet: str) -> dict:
    """The copier's wallet when the run ends, read from the chain (pUSD by eth_call, POL) and the venue."""
    def rpc(method: str, *params: object) -> str:
        doc = sim.http.post(sim.urls["rpc_http"], json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                         "params": list(params)}).json()
        return doc["result"]
    data = "0x70a08231" + wallet[2:].rjust(64, "0")                 # balanceOf(address)
    doc = sim.http.get(f"{sim.urls['control']}/wallets/{wallet}").json()
    return {"pusd_units": int(rpc("eth_call", {"to": PUSD, "data": data}, "latest"), 16),
            "pol_wei": int(rpc("eth_getBalance", wallet, "latest"), 16),
            "redeemable": [p["token_id"] for p in doc.get("positions", []) if p.get("redeemable")],
            "unresolved": [p["token_id"] for p in doc.get("positions", []) if p["size"] > 0 and not p["resolved"]]}


def settle(sim: SimProcess, wallet: str, limit_s: float) -> None:
    """After the source stops: until the run spans MIN_RESOLUTIONS resolutions, every market we hold is resolved and
    nothing is left redeemable (bounded)."""
    end = time.time() + limit_s
    while time.time() < end:
        state = end_state(sim, wallet)
        resolved = {e["condition_id"] for e in sim.ground_truth_events()
                    if e["kind"] == "market" and e["state"] == "resolved"}
        if not state["redeemable"] and not state["unresolved"] and len(resolved) >= MIN_RESOLUTIONS:
            return
        time.sleep(1.0)


def money_verdict(events: list[dict], db_path: Path, wallet: str, final: dict) -> dict:
    """Redemptions and the wallet's money, from the simulator's ground truth, against the store and the chain.

    Every winning position (its tokens from our fills of trades not FAILED) must be redeemed by exactly one
    transaction, paying exactly its tokens; the store must know every transaction our wallet sent and have one
    redemption per market; and final pUSD = initial + realised PnL - fees, to the cent, where realised PnL counts
    sells, buys and redemption payouts of resolved markets (fees apart); gas is paid in POL: final POL = initial -
    gas, to the wei, and the store's receipts account for the same gas."""
    wallet = wallet.lower()
    orphaned = {h for e in events if e["kind"] == "chain_reorg" for h in e.get("block_hashes", [])}
    failed = {e["trade_id"] for e in events if e["kind"] == "trade" and e.get("status") == "FAILED"}
    fills = [e for e in events if e["kind"] == "fill" and e["wallet"] == wallet and e["trade_id"] not in failed]
    redemptions = [e for e in events if e["kind"] == "redemption" and e["wallet"] == wallet
                   and e["block_hash"] not in orphaned]
    txs = [e for e in events if e["kind"] == "chain_tx" and e["sender"] == wallet and e["block_hash"] not in orphaned]
    winners = {e["condition_id"]: e["winner"] for e in events if e["kind"] == "market" and e["state"] == "resolved"}
    units: dict[tuple[str, str], int] = defaultdict(int)            # (condition, outcome) -> tokens held
    for f in fills:
        units[(f["condition_id"], f["outcome"])] += round(float(f["size"]) * 1e6) * (1 if f["side"] == "BUY" else -1)
    winning = {cid: units[(cid, w)] for cid, w in winners.items() if units.get((cid, w), 0) > 0}
    by_market: dict[str, list[dict]] = defaultdict(list)
    for r in redemptions:
        by_market[r["condition_id"]].append(r)
    not_redeemed = sorted(cid for cid in winning if not by_market.get(cid))
    twice = sorted(cid for cid, rs in by_market.items() if len(rs) > 1)
    wrong_payout = sorted(cid for cid, rs in by_market.items()
                          if sum(r["payout_units"] for r in rs) != winning.get(cid, 0))
    db = sqlite3.connect(db_path)
    actions = list(db.execute("select calls, status, tx_hash, gas_used, gas_price from chain_actions"))
    store_hashes = {h for _, _, h, _, _ in actions if h}
    unknown_tx = sorted(t["tx_hash"] for t in txs if t["tx_hash"] not in store_hashes)
    store_redeems: Counter = Counter()
    store_payout: dict[str, int] = defaultdict(int)
    for calls, status, *_ in actions:
        for c in json.loads(calls):
            if c["kind"] == "redeem" and status == "CONFIRMED":
                store_redeems[c["condition_id"]] += 1
                store_payout[c["condition_id"]] += c["payout_units"]
    store_twice = sorted(cid for cid, n in store_redeems.items() if n > 1)
    store_vs_venue = sorted(cid for cid in set(store_payout) | set(by_market)
                            if store_payout.get(cid, 0) != sum(r["payout_units"] for r in by_market.get(cid, [])))
    initial = sum(round(float(e["pusd"]) * 1e6) for e in events if e["kind"] == "fund" and e["wallet"] == wallet)
    initial_pol = sum(int(e["pol_wei"]) for e in events if e["kind"] == "fund" and e["wallet"] == wallet)
    fees = sum(round(float(f["fee"]) * 1e6) for f in fills)
    resolved_cash = sum(round(float(f["cash"]) * 1e6) + round(float(f["fee"]) * 1e6) for f in fills
                        if f["condition_id"] in winners)
    open_cash = sum(round(float(f["cash"]) * 1e6) + round(float(f["fee"]) * 1e6) for f in fills
                    if f["condition_id"] not in winners)
    payouts = sum(r["payout_units"] for r in redemptions)
    realised = resolved_cash + payouts                                # 6-decimal units
    expected = initial + realised - fees + open_cash                  # open_cash: cost of what is still open
    gas = sum(int(t["gas_paid_wei"]) for t in txs)
    store_gas = sum(gu * gp for _, status, _, gu, gp in actions if status in ("CONFIRMED", "FAILED"))
    # Realised PnL per resolved market, as the venue booked it: the cash our fills moved (fees included) plus
    # 1 pUSD per winning token held, redeemed or not (the copier's report counts it at the resolution).
    venue_pnl: dict[str, int] = defaultdict(int)
    for f in fills:
        if f["condition_id"] in winners:
            venue_pnl[f["condition_id"]] += round(float(f["cash"]) * 1e6)
    for cid, held in winning.items():
        venue_pnl[cid] += held
    return {"resolutions": len(winners), "winning_positions": len(winning), "redeemed": len(by_market),
            "venue_pnl_by_market": {cid: units / 1e6 for cid, units in venue_pnl.items()},
            "not_redeemed": not_redeemed, "redeemed_twice": twice, "wrong_payout": wrong_payout,
            "left_redeemable": final["redeemable"], "left_unresolved": final["unresolved"],
            "unknown_transactions": unknown_tx, "store_redeemed_twice": store_twice,
            "store_vs_venue_payout": store_vs_venue, "transactions": len(txs),
            "initial_pusd": initial / 1e6, "realised_pnl": realised / 1e6, "fees": fees / 1e6,
            "open_cost": -open_cash / 1e6, "gas_pol": gas / 1e18, "expected_pusd": expected / 1e6,
            "final_pusd": final["pusd_units"] / 1e6, "pusd_diff_units": final["pusd_units"] - expected,
            "pol_diff_wei": final["pol_wei"] - (initial_pol - gas), "store_gas_diff_wei": store_gas - gas}


def pnl_against_venue(store_rep: dict, money: dict) -> dict:
    """`copier report`'s realised PnL per market next to the venue's (money_verdict), on the markets both know
    resolved; a market the venue resolved and the report did not is named."""
    venue = money["venue_pnl_by_market"]
    ours = {m["condition_id"]: m for m in store_rep["pnl"]["markets"]}
    both = sorted(cid for cid in venue if cid in ours and ours[cid]["resolved"])
    diffs = {cid: ours[cid]["realized_usd"] - venue[cid] for cid in both}
    return {"markets": len(both), "report_usd": round(sum(ours[c]["realized_usd"] for c in both), 6),
            "venue_usd": round(sum(venue[c] for c in both), 6),
            "max_market_diff_usd": round(max(map(abs, diffs.values()), default=0.0), 6),
            "unresolved_in_report": sorted(cid for cid in venue if cid in ours and not ours[cid]["resolved"])}


def judge_money(money: dict, pnl: dict | None = None) -> dict[str, list]:
    problems: dict[str, list] = {}
    if pnl is not None:
        if pnl["unresolved_in_report"]:
            problems["pnl_resolution_unknown_to_report"] = pnl["unresolved_in_report"]
        if pnl["max_market_diff_usd"] >= 0.01 or abs(pnl["report_usd"] - pnl["venue_usd"]) >= 0.01:
            problems["pnl_report_vs_venue"] = [f"report {pnl['report_usd']} vs venue {pnl['venue_usd']} USD "
                                               f"(max per market {pnl['max_market_diff_usd']})"]
    if money["resolutions"] < MIN_RESOLUTIONS:
        problems["too_few_resolutions"] = [f"{money['resolutions']} < {MIN_RESOLUTIONS}"]
    for key in ("not_redeemed", "redeemed_twice", "wrong_payout", "left_redeemable", "unknown_transactions",
                "store_redeemed_twice", "store_vs_venue_payout"):
        if money[key]:
            problems[f"redemption_{key}"] = money[key]
    if abs(money["pusd_diff_units"]) >= 10_000:                     # a cent
        problems["pusd_accounting"] = [f"final {money['final_pusd']} vs expected {money['expected_pusd']}"]
    if money["pol_diff_wei"] or money["store_gas_diff_wei"]:
        problems["gas_accounting"] = [f"POL off by {money['pol_diff_wei']} wei, store gas off by "
                                      f"{money['store_gas_diff_wei']} wei"]
    return problems


def _source_groups(events: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for e in events:
        if e["kind"] == "source_fill":
            groups.setdefault((e["tx_hash"].lower(), str(e["token_id"]), e["side"]), []).append(e)
    return groups


def _miss_cause(tx: str, match_time: float, sighted: dict[str, set[str]],
                downtime: Sequence[tuple[float, float, str]]) -> str:
    feeds = sighted.get(tx)
    if feeds:
        return f"sighted on {', '.join(sorted(feeds))} but never decided"
    for start, end, why in downtime:
        if start - 1 <= match_time <= end:
            return f"never sighted: matched while the copier was down ({why})"
    return "never sighted by any feed"


def grep_secrets(paths: list[Path], secrets: list[str]) -> list[str]:
    hits = []
    for p in paths:
        if not p.exists():
            continue
        data = p.read_bytes()
        for s in secrets:
            if s and s.encode() in data:
                hits.append(f"{p.name} contains a secret ({len(s)} chars)")
    return hits


def compressed(duration: float, seed: int, slippage_bps: int = 300) -> int:
    rng = random.Random(seed)
    wallet = Account.from_key(SIM_PRIVATE_KEY).address.lower()
    WORKDIR.mkdir(parents=True, exist_ok=True)
    for p in WORKDIR.iterdir():
        if p.is_file():
            p.unlink()
    statsd, sentry = StatsdSink(WORKDIR / "statsd.packets"), SentrySink(WORKDIR / "sentry.envelopes")
    sim = SimProcess(WORKDIR, speed=30.0, seed=seed)
    creds = derive_creds(sim.urls["clob"])
    env = write_env_file(WORKDIR / "copier.env", {
        "POLY_PRIVATE_KEY": SIM_PRIVATE_KEY, "POLY_API_KEY": creds[0], "POLY_API_SECRET": creds[1],
        "POLY_API_PASSPHRASE": creds[2], "SENTRY_DSN": sentry.dsn})
    config = write_config(WORKDIR / "copier.yaml", copier_config(
        sim.urls, WORKDIR / "copier.sqlite", dry_run=False, statsd_port=statsd.port, speed=30.0,
        overrides={"execution": {"dry_run": False, "max_slippage_bps": slippage_bps, "near_expiry_cutoff_seconds": 1.0},
                   "risk": {"breaker_max_error_rate": 1.0, "breaker_max_p95_ms": 60000.0}}))
    sup = Supervisor(WORKDIR, config, env)
    chaos = Chaos(rng, duration)
    stop = threading.Event()
    sent: list[dict] = []
    start = time.time()
    streamer = threading.Thread(target=source_stream, args=(sim, random.Random(seed + 1), stop, sent), daemon=True)
    time.sleep(5)
    streamer.start()
    print(f"soak: {duration:.0f}s, {len(chaos.events)} chaos events, simulator {sim.urls['clob']}", flush=True)
    try:
        chaos.play(start, sim, sup, config, rng, WORKDIR / "copier.sqlite")
        time.sleep(max(0.0, start + duration * 0.9 - time.time()))
        stop.set()
        streamer.join(30)
        time.sleep(duration * 0.1)           # let the last fills arrive, gap-fill and settle
        settle(sim, wallet, 3 * sim.window_s)  # the last windows resolve and are redeemed
        final = end_state(sim, wallet)
    finally:
        sup.shutdown()
        sim.stop()
    store_rep = json.loads(run_copier("report", "--config", str(config), "--json").stdout)
    gt = ground_truth_verdict(sim.ground_truth_events(), WORKDIR / "copier.sqlite", chaos.downtime)
    leaks = grep_secrets([WORKDIR / "copier.log", WORKDIR / "supervisord.log", WORKDIR / "statsd.packets",
                          WORKDIR / "sentry.envelopes"], [SIM_PRIVATE_KEY, SIM_PRIVATE_KEY[2:], creds[1], creds[2]])
    bad_input = counter_total(WORKDIR / "statsd.packets", "copier.feed.malformed")
    money = money_verdict(sim.ground_truth_events(), WORKDIR / "copier.sqlite", wallet, final)
    return verdict(store_rep, gt, chaos, leaks, statsd.packets, sentry.envelopes, len(sent), bad_input, money)


def counter_total(packets: Path, name: str) -> int:
    """Sum of a StatsD counter over every packet the sink received."""
    total = 0
    for line in packets.read_bytes().decode("utf-8", "replace").splitlines() if packets.exists() else ():
        metric, _, rest = line.partition(":")
        value, _, kind = rest.partition("|")
        if metric == name and kind.startswith("c"):
            try:
                total += int(float(value))
            except ValueError:
                pass
    return total


def judge_run(store_rep: dict, gt: dict) -> dict[str, list]:
    """The acceptance failures of a recorded run: the store's own verdict, then the venue's ground truth, which
    must agree with the store on orders per intent and copy rate."""
    problems = dict(store_rep["acceptance"]["failures"])
    if gt["unknown_orders"] or gt["hashes_executed_twice"] or gt["orders_per_intent_max"] > 1:
        problems["ground_truth_duplicates"] = gt["unknown_orders"] + gt["hashes_executed_twice"]
    if gt["copied_pct"] is None or gt["copied_pct"] < FILLED_TARGET_PCT:
        problems["ground_truth_filled_rate"] = [f"{gt['copied_pct']}%"]
    if gt["missed_fills"]:
        problems["unrecorded_source_fills"] = [f"{m['tx']} ({m['cause']})" for m in gt["missed"]]
    if gt["store_vs_venue"]:
        problems["store_vs_venue_fill_by_fill"] = [f"{d['intent']}: store filled {d['store_filled']}, venue "
                                                   f"{d['venue_filled']}" for d in gt["store_vs_venue"]]
    if store_rep["filled_pct"] is not None and gt["copied_pct"] is not None and \
            abs(store_rep["filled_pct"] - gt["copied_pct"]) > 0.5 and not gt["missed_fills"]:
        problems["store_vs_ground_truth"] = [f"filled store {store_rep['filled_pct']}% vs venue {gt['copied_pct']}%"]
    if store_rep["orders_per_intent_max"] != gt["orders_per_intent_max"]:
        problems["store_vs_ground_truth_orders"] = [f"store {store_rep['orders_per_intent_max']} vs venue "
                                                    f"{gt['orders_per_intent_max']}"]
    return problems


def verdict(store_rep: dict, gt: dict, chaos: Chaos, leaks: list[str], packets: int, envelopes: int,
            sent: int, bad_input: int, money: dict | None = None) -> int:
    problems = judge_run(store_rep, gt)
    pnl = pnl_against_venue(store_rep, money) if money is not None else None
    if money is not None:
        problems.update(judge_money(money, pnl))
    short = {k: n for k, n in chaos.plan.items() if chaos.done[k] < n}
    if short:
        problems["chaos_not_applied"] = [f"{k}: {chaos.done[k]}/{n}" for k, n in short.items()]
    if leaks:
        problems["secrets_leaked"] = leaks
    if chaos.done["malformed"] and not bad_input:
        problems["bad_input_not_counted"] = ["no copier.feed.malformed counted for the malformed frames sent"]
    if envelopes < chaos.done["kill9"]:
        problems["alerts_missing"] = [f"{envelopes} Sentry envelopes for {chaos.done['kill9']} kill -9"]
    print(render_text(store_rep))
    print(f"ground truth        {json.dumps(gt, sort_keys=True)}")
    print(f"chaos applied       {json.dumps(dict(chaos.done), sort_keys=True)}")
    if money is not None:
        print(f"redemptions         {money['resolutions']} markets resolved, {money['winning_positions']} winning "
              f"positions, {money['redeemed']} redeemed in {money['transactions']} transactions of ours; "
              f"twice {len(money['redeemed_twice'])}, left redeemable {len(money['left_redeemable'])}")
        print(f"money               pUSD initial {money['initial_pusd']:.6f} + realised {money['realised_pnl']:.6f} "
              f"- fees {money['fees']:.6f} - open cost {money['open_cost']:.6f} = {money['expected_pusd']:.6f}; "
              f"on chain {money['final_pusd']:.6f} (off by {money['pusd_diff_units']} units); gas "
              f"{money['gas_pol']:.6f} POL (POL off by {money['pol_diff_wei']} wei, store "
              f"{money['store_gas_diff_wei']} wei)")
    if pnl is not None:
        print(f"realised PnL        report {pnl['report_usd']:.6f} vs venue {pnl['venue_usd']:.6f} USD over "
              f"{pnl['markets']} resolved markets (max per market {pnl['max_market_diff_usd']:.6f})")
    print(f"telemetry           {packets} StatsD packets, {envelopes} Sentry envelopes, {sent} source fills sent; "
          f"{bad_input} malformed messages counted and skipped; secret grep: {'clean' if not leaks else 'LEAK'}")
    print(f"SOAK VERDICT        {'PASS' if not problems else 'FAIL'}")
    for name, ids in problems.items():
        print(f"  FAIL {name}: {', '.join(map(str, ids[:20]))}")
    return 0 if not problems else 1


def derive_creds(clob_url: str) -> tuple[str, str, str]:
    from py_clob_client_v2.client import ClobClient
    c = ClobClient(clob_url, chain_id=137, key=SIM_PRIVATE_KEY).create_or_derive_api_key()
    return c.api_key, c.api_secret, c.api_passphrase


def production(duration: float, config: str) -> int:
    """Wait out the run of the deployed copier, then judge it on what its store recorded over that period."""
    start = time.time()
    while time.time() - start < duration:
        time.sleep(min(600.0, duration - (time.time() - start)))
    out = run_copier("report", "--config", config, "--since", str(start), "--acceptance", timeout=600)
    print(out.stdout, end="")
    return out.returncode


def main(argv=None) -> int:
    global WORKDIR
    p = argparse.ArgumentParser(prog="soak")
    p.add_argument("--duration", default=None, help="production soak length (e.g. 7d); omit for the compressed run")
    p.add_argument("--compressed-seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 300)))
    p.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", 1)))
    p.add_argument("--config", default="/etc/copier/copier.yaml")
    p.add_argument("--workdir", type=Path, default=WORKDIR,
                   help=f"the compressed run's files (default {WORKDIR}); an earlier run's files there are deleted")
    p.add_argument("--slippage-bps", type=int, default=int(os.environ.get("SOAK_SLIPPAGE_BPS", 300)),
                   help="execution.max_slippage_bps of the copier under test (default 300; the PRD's default is 120)")
    args = p.parse_args(argv)
    if args.duration:
        return procguard.run_guarded("soak", lambda: production(parse_duration(args.duration), args.config))
    if args.workdir.is_dir() and any(args.workdir.iterdir()) and not (args.workdir / "statsd.packets").exists():
        raise SystemExit(f"--workdir {args.workdir}: not empty and not a soak's directory (the soak deletes the files "
                         "in it); name a new or an empty one")
    WORKDIR = args.workdir          # the run's functions read it, as they read the default
    return procguard.run_guarded("soak", lambda: compressed(args.compressed_seconds, args.seed, args.slippage_bps))


if __name__ == "__main__":
    sys.exit(main())
