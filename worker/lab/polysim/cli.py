"""`polysim serve`: every surface on loopback; prints one JSON line of URLs, serves until SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from aiohttp import web

from polysim import scenario
from polysim.chain import Chain, chain_app
from polysim.server import Sim, clob_app, data_app, gamma_app, relayer_app, rtds_app


async def serve(args) -> None:
    sim = Sim(args.scenario, ground_truth=args.ground_truth)
    await sim.start_background()
    chain = Chain(sim.hub, mempool_delay=args.mempool_delay, logs_delay=args.logs_delay, block_s=args.block_time,
                  reorg_rate=args.reorg_rate, seed=args.seed, node=sim.node, faults=sim.faults, truth=sim.truth)
    sim.chain = chain
    chain.start()
    ports = {}
    runners = []
    for n, (name, app) in enumerate([("clob", clob_app(sim)), ("gamma", gamma_app(sim)), ("data_api", data_app(sim)),
                                     ("rtds", rtds_app(sim)), ("rpc", chain_app(chain)),
                                     ("relayer", relayer_app(sim))]):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port_base + n if args.port_base else 0)
        await site.start()
        ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # a started site's server
        runners.append(runner)
    h = args.host
    print(json.dumps({"clob": f"http://{h}:{ports['clob']}", "gamma": f"http://{h}:{ports['gamma']}",
                      "data_api": f"http://{h}:{ports['data_api']}", "rtds": f"ws://{h}:{ports['rtds']}/",
                      "market_ws": f"ws://{h}:{ports['clob']}/ws/market",
                      "user_ws": f"ws://{h}:{ports['clob']}/ws/user", "rpc_ws": f"ws://{h}:{ports['rpc']}/",
                      "rpc_http": f"http://{h}:{ports['rpc']}/", "relayer": f"http://{h}:{ports['relayer']}",
                      "control": f"http://{h}:{ports['clob']}/_sim",
                      "geoblock": f"http://{h}:{ports['clob']}/api/geoblock", "ground_truth": args.ground_truth,
                      "chain_id": 137}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for r in runners:
        await r.cleanup()
    await sim.stop()


# Command-line flags that override one scenario key each (None = keep the scenario's value).
OVERRIDES = {"speed": ("speed",), "seed": ("seed",), "source_wallet": ("source", "wallet"),
             "source_mode": ("source", "mode"), "background": ("background", "enabled"),
             "balance": ("clob", "balance"), "rtds_delay": ("feeds", "rtds_delay_s"),
             "rtds_idle_stall": ("feeds", "rtds_idle_stall_s"), "data_api_delay": ("feeds", "data_api_user_delay_s"),
             "data_api_cache": ("feeds", "data_api_cache_s"), "mined_after": ("feeds", "mined_after_s"),
             "confirmed_after": ("feeds", "confirmed_after_s"), "bg_rate": ("background", "taker_rate"),
             "v2_every": ("markets", "v2_every"), "taker_delay_ms": ("markets", "taker_delay_ms"),
             "clob_latency_ms": ("clob", "latency_ms")}


def load_scenario(args) -> scenario.Scenario:
    overrides: dict = {}
    for flag, path in OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            node = overrides
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = value
    if args.data_api_delay is not None:     # market-wide queries index later than ?user= ones (9.0 s vs 5.4 s)
        overrides["feeds"]["data_api_market_delay_s"] = args.data_api_delay * 9.0 / 5.4
    return scenario.load(args.scenario, overrides)


# py_ecc (imported by eth-account) raises the recursion limit to 100,000 at import; with that limit a JSON body nested
# 100,000 deep overflows the 8 MB C stack and kills the process. At 10,000 such a body is a RecursionError (a bad
# request), while anything a client could mean (thousands deep) still parses.
RECURSION_LIMIT = 10_000


def main(argv=None) -> int:
    sys.setrecursionlimit(RECURSION_LIMIT)
    p = argparse.ArgumentParser(prog="polysim")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run every simulated Polymarket surface on loopback",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Every simulated Polymarket surface on loopback. Prints one JSON line of URLs, "
                                   "writes the ground truth, stops on SIGTERM. Flags override the scenario.",
                       epilog="scenario file format (YAML or JSON; presets: " + ", ".join(scenario.PRESETS) + ")"
                              + scenario.__doc__.split("\n", 1)[1] + "\nfault kinds:\n"
                              + "".join(f"  {k:26} {v}\n" for k, v in scenario.FAULT_KINDS.items()))
    s.add_argument("--scenario", default=None, help="scenario file (.yaml/.json) or preset name")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port-base", type=int, default=0, help="first port (0 = ephemeral ports)")
    s.add_argument("--speed", type=float, default=None, help="market-time acceleration: windows last 900/speed s")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--ground-truth", default=None, help="JSONL file of every source fill and order event")
    s.add_argument("--source-wallet", default=None)
    s.add_argument("--source-mode", choices=("off", "random", "script"), default=None,
                   help="off: driven by POST /_sim/source-fill; random/script: see the scenario")
    s.add_argument("--background", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--balance", type=float, default=None, help="pUSD every new API wallet starts with")
    s.add_argument("--rtds-delay", type=float, default=None, help="seconds from match to RTDS delivery")
    s.add_argument("--rtds-idle-stall", type=float, default=None,
                   help="an RTDS connection that sent no PING for this long stops receiving (real: ~360 s)")
    s.add_argument("--data-api-delay", type=float, default=None, help="Data API indexing delay for ?user=, seconds")
    s.add_argument("--data-api-cache", type=float, default=None, help="CloudFront max-age on the Data API, seconds")
    s.add_argument("--mined-after", type=float, default=None, help="trade MATCHED -> MINED, seconds")
    s.add_argument("--confirmed-after", type=float, default=None, help="trade MATCHED -> CONFIRMED, seconds")
    s.add_argument("--taker-delay-ms", type=float, default=None, help="itode taker delay for marketable orders")
    s.add_argument("--clob-latency-ms", type=float, default=None, help="added before every CLOB REST answer")
    s.add_argument("--mempool-delay", type=float, default=0.65, help="median seconds from match to pending tx")
    s.add_argument("--logs-delay", type=float, default=2.2, help="median seconds from match to its logs")
    s.add_argument("--block-time", type=float, default=2.0, help="Polygon block interval, seconds")
    s.add_argument("--reorg-rate", type=float, default=0.0, help="probability that a block is reorged out")
    s.add_argument("--bg-rate", type=float, default=None, help="background taker orders per second")
    s.add_argument("--v2-every", type=int, default=None, help="every Nth market is a Protocol-V2 (ExchangeV3) market")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("polysim: --host must be a loopback address", file=sys.stderr)
        return 2
    try:
        args.scenario = load_scenario(args)
    except scenario.ScenarioError as exc:
        print(f"polysim: {exc}", file=sys.stderr)
        return 2
    args.seed, args.speed = args.scenario.seed, args.scenario.speed
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
