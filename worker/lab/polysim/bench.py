"""Throughput of the simulator itself: order POSTs per second and RTDS frames per second, on this machine.

`python -m polysim.bench [--seconds 10] [--concurrency 64] [--rtds-clients 4] [--json out.json]`

Each phase starts its own `polysim serve` (background traders on, like every real run):
  orders: orders pre-signed with the real py-clob-client-v2 (half resting GTC bids, half marketable FAK buys that
          wait out the 50 ms taker delay), posted with L2 headers over keep-alive connections; every answer counts
          (resting, matched, or a documented rejection such as a killed FAK), transport errors do not.
  rtds:   a heavier firehose (--bg-rate takers/s); plain websocket clients subscribe to `activity`, PING every 5 s,
          and count the frames they receive, with the delivery lag (receive time - envelope timestamp).
Reports what it measured; the targets (500 POSTs/s, 200 frames/s) are printed beside the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

import aiohttp

KEY = "0x" + "b7" * 32          # a throwaway key for the simulator only
TARGET_POSTS, TARGET_FRAMES = 500, 200


def _serve(*args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "polysim.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None     # stdout=PIPE
    return proc, json.loads(proc.stdout.readline())


def _stop(proc: subprocess.Popen) -> float:
    """SIGTERM the server; returns its CPU seconds (user + system) while it ran."""
    proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = status
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 2) if len(values) > 1 else (values[0] if values else 0)


def _signed_orders(urls: dict, n: int):
    import httpx
    from py_clob_client_v2.client import ClobClient
    from py_clob_client_v2.clob_types import CreateOrderOptions, OrderArgsV2
    from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
    client = ClobClient(urls["clob"], chain_id=137, key=KEY)
    client.set_api_creds(client.create_or_derive_api_key())
    now = time.time()
    events = httpx.get(f"{urls['gamma']}/events", params={"closed": "false"}).json()
    tokens = [t for e in events if e["markets"][0]["acceptingOrders"] and
              calendar.timegm(time.strptime(e["startTime"], "%Y-%m-%dT%H:%M:%SZ")) <= now
              for t in json.loads(e["markets"][0]["clobTokenIds"])]
    opts = CreateOrderOptions(tick_size="0.01", neg_risk=False)
    bodies = []
    for i in range(n):
        token = tokens[i % len(tokens)]
        if i % 2:
            args, kind = OrderArgsV2(token_id=token, price=0.99, size=5, side="BUY"), "FAK"
        else:
            args, kind = OrderArgsV2(token_id=token, price=round(0.01 + (i % 9) * 0.01, 2), size=10, side="BUY"), "GTC"
        order = client.builder.build_order(args, opts, version=2)
        bodies.append(json.dumps(order_to_json_v2(order, client.creds.api_key, kind), separators=(",", ":")))
    return client, bodies


async def _post_orders(urls: dict, client, bodies: list[str], seconds: float, concurrency: int) -> dict:
    from py_clob_client_v2.clob_types import RequestArgs
    from py_clob_client_v2.headers.headers import create_level_2_headers

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    queue = list(reversed(bodies))
    end = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while queue and time.monotonic() < end:
            body = queue.pop()
            headers = create_level_2_headers(client.signer, client.creds, RequestArgs(
                method="POST", request_path="/order", serialized_body=body))
            t = time.perf_counter()
            try:
                async with session.post(f"{urls['clob']}/order", data=body, headers={
                        **headers, "Content-Type": "application/json"}) as r:
                    doc = await r.json()
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
                continue
            latencies.append((time.perf_counter() - t) * 1000)
            key = doc.get("status") if r.status == 200 else f"{r.status}:{str(doc.get('error', ''))[:40]}"
            statuses[key] = statuses.get(key, 0) + 1

    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    wall = time.monotonic() - t0
    return {"posts": len(latencies), "wall_s": round(wall, 2), "posts_per_s": round(len(latencies) / wall, 1),
            "latency_ms_p50": _pct(latencies, 50), "latency_ms_p99": _pct(latencies, 99), "answers": statuses,
            "transport_errors": errors, "concurrency": concurrency}


async def _rtds_clients(url: str, clients: int, seconds: float) -> dict:
    counts, lags = [0] * clients, []

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"action": "subscribe", "subscriptions": [
                {"topic": "activity", "type": "trades"}, {"topic": "activity", "type": "orders_matched"}]}))
            end, next_ping = time.monotonic() + seconds, 0.0
            while time.monotonic() < end:
                if time.monotonic() >= next_ping:
                    await ws.send_str("PING")
                    next_ping = time.monotonic() + 5
                try:
                    msg = await ws.receive(timeout=max(0.01, end - time.monotonic()))
                except TimeoutError:
                    break
                if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith("{"):
                    counts[i] += 1
                    if i == 0:
                        lags.append(time.time() * 1000 - json.loads(msg.data)["timestamp"])
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    return {"clients": clients, "seconds": seconds, "frames_per_s_per_client": round(counts[0] / seconds, 1),
            "frames_per_s_all_clients": round(sum(counts) / seconds, 1),
            "delivery_lag_ms_p50": _pct(lags, 50), "delivery_lag_ms_p99": _pct(lags, 99)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m polysim.bench", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--orders", type=int, default=8000, help="orders signed up front (more than the run can post)")
    p.add_argument("--rtds-clients", type=int, default=4)
    p.add_argument("--bg-rate", type=float, default=200.0, help="background taker orders/s in the RTDS phase")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)

    proc, urls = _serve("--speed", "4", "--balance", "1000000000", "--data-api-cache", "0")
    try:
        t = time.monotonic()
        client, bodies = _signed_orders(urls, args.orders)
        print(f"signed {len(bodies)} orders with py-clob-client-v2 in {time.monotonic() - t:.1f}s", flush=True)
        orders = asyncio.run(_post_orders(urls, client, bodies, args.seconds, args.concurrency))
    finally:
        orders_cpu = _stop(proc)
    orders["server_cpu_s"] = round(orders_cpu, 2)
    proc, urls = _serve("--speed", "4", "--bg-rate", str(args.bg_rate))
    try:
        rtds = asyncio.run(_rtds_clients(urls["rtds"], args.rtds_clients, args.seconds))
    finally:
        rtds["server_cpu_s"] = round(_stop(proc), 2)
    report = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
              "bench_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10,
              "orders": orders, "rtds": rtds,
              "targets": {"order_posts_per_s": TARGET_POSTS, "rtds_frames_per_s": TARGET_FRAMES,
                          "order_posts_met": orders["posts_per_s"] >= TARGET_POSTS,
                          "rtds_frames_met": rtds["frames_per_s_per_client"] >= TARGET_FRAMES}}
    print(f"order POSTs: {orders['posts_per_s']}/s (target {TARGET_POSTS}) p50 {orders['latency_ms_p50']} ms "
          f"p99 {orders['latency_ms_p99']} ms, answers {orders['answers']}, server CPU {orders['server_cpu_s']} s")
    print(f"RTDS frames: {rtds['frames_per_s_per_client']}/s per client x {rtds['clients']} clients = "
          f"{rtds['frames_per_s_all_clients']}/s (target {TARGET_FRAMES}), delivery lag p50 "
          f"{rtds['delivery_lag_ms_p50']} ms p99 {rtds['delivery_lag_ms_p99']} ms")
    print(json.dumps(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
