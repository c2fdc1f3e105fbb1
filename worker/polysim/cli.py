"""`polysim serve`: every surface on loopback; prints one JSON line of URLs, serves until SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from aiohttp import web

from polysim.chain import Chain, chain_app
from polysim.server import Sim, clob_app, data_app, gamma_app, rtds_app


async def serve(args) -> None:
    sim = Sim(speed=args.speed, seed=args.seed, source_wallet=args.source_wallet, ground_truth=args.ground_truth,
              background=args.background, balance=args.balance, rtds_delay=args.rtds_delay,
              data_api_delay=args.data_api_delay, bg_rate=args.bg_rate, v2_every=args.v2_every)
    await sim.start_background()
    chain = Chain(sim.hub, mempool_delay=args.mempool_delay, logs_delay=args.logs_delay, block_s=args.block_time,
                  reorg_rate=args.reorg_rate, seed=args.seed)
    chain.start()
    ports = {}
    runners = []
    for n, (name, app) in enumerate([("clob", clob_app(sim)), ("gamma", gamma_app(sim)), ("data_api", data_app(sim)),
                                     ("rtds", rtds_app(sim)), ("rpc", chain_app(chain))]):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port_base + n if args.port_base else 0)
        await site.start()
        ports[name] = site._server.sockets[0].getsockname()[1]
        runners.append(runner)
    h = args.host
    print(json.dumps({"clob": f"http://{h}:{ports['clob']}", "gamma": f"http://{h}:{ports['gamma']}",
                      "data_api": f"http://{h}:{ports['data_api']}", "rtds": f"ws://{h}:{ports['rtds']}/",
                      "market_ws": f"ws://{h}:{ports['clob']}/ws/market",
                      "user_ws": f"ws://{h}:{ports['clob']}/ws/user", "rpc_ws": f"ws://{h}:{ports['rpc']}/",
                      "control": f"http://{h}:{ports['clob']}/_sim", "ground_truth": args.ground_truth,
                      "chain_id": 137}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for r in runners:
        await r.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="polysim")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run every simulated Polymarket surface on loopback")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port-base", type=int, default=0, help="first port (0 = ephemeral ports)")
    s.add_argument("--speed", type=float, default=1.0, help="market-time acceleration: windows last 900/speed s")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--ground-truth", default=None, help="JSONL file of every source fill and order event")
    s.add_argument("--source-wallet", default="0x1d0034134e339a309700ff2d34e99fa2d48b0313")
    s.add_argument("--background", action=argparse.BooleanOptionalAction, default=True)
    s.add_argument("--balance", type=float, default=10_000.0, help="pUSD every new wallet starts with")
    s.add_argument("--rtds-delay", type=float, default=2.0, help="seconds from match to RTDS delivery")
    s.add_argument("--data-api-delay", type=float, default=3.0, help="Data API indexing delay, seconds")
    s.add_argument("--mempool-delay", type=float, default=0.65, help="median seconds from match to pending tx")
    s.add_argument("--logs-delay", type=float, default=2.2, help="median seconds from match to its logs")
    s.add_argument("--block-time", type=float, default=2.0, help="Polygon block interval, seconds")
    s.add_argument("--reorg-rate", type=float, default=0.0, help="probability that a block is reorged out")
    s.add_argument("--bg-rate", type=float, default=20.0, help="background taker matches per second")
    s.add_argument("--v2-every", type=int, default=0, help="every Nth market is a Protocol-V2 (ExchangeV3) market")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("polysim: --host must be a loopback address", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
