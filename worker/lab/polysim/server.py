"""Composition root: one asyncio loop, one hub, the exchange, and every surface wired to them.

The exchange publishes on the hub (matches, book changes, order and market lifecycle); each feed surface
subscribes and applies its own delays and failure modes. Other surfaces (e.g. the Polygon JSON-RPC in chain.py)
plug in through `sim.hub` the same way.
"""
from __future__ import annotations

import asyncio
import random
import time

from aiohttp import web

from polysim.actors import BackgroundTraders, SourceTrader
from polysim.chain import Chain
from polysim.clob import ClobApi, clob_routes
from polysim.control import Control, control_routes
from polysim.data_api import DataApi
from polysim.data_api import data_app as _data_app
from polysim.events import MARKET_STATE, MATCH, Hub, SimMarket
from polysim.exchange import Exchange
from polysim.faults import Faults, run_schedule
from polysim.gamma import Gamma
from polysim.gamma import gamma_app as _gamma_app
from polysim.geoblock import Geoblock, geoblock_routes
from polysim.ledger import Ledger
from polysim.market_ws import MarketWs
from polysim.node import Node
from polysim.relayer import Relayer
from polysim.relayer import relayer_app as _relayer_app
from polysim.rtds import Rtds
from polysim.scenario import Scenario
from polysim.settlement import Settlement
from polysim.truth import GroundTruth
from polysim.user_ws import UserWs
from polysim.wsconn import close_all

CLOCK_S = 0.25
COUNT_FAULTS = ("clob_429", "clob_5xx", "clob_garbage", "post_timeout_after_accept", "delay_failure",
                "rtds_duplicate", "data_api_5xx", "data_api_garbage", "rpc_5xx", "rpc_stall", "rpc_lost_answer",
                "relayer_5xx", "relayer_lost_answer", "relayer_stall")
WINDOW_FAULTS = ("trading_disabled", "cancel_only", "market_ws_stall", "rtds_stall", "clob_latency",
                 "adapter_paused")
MALFORMED = ('{"topic":"activity","type":"trades","payload":{"proxyWallet":"{w}","price":"abc"', "x" * 100_000,
             "[1,2,3]", "not json at all",
             '{"topic":"activity","type":"trades","timestamp":1,"payload":{"proxyWallet":"{w}","side":7,"price":[],'
             '"size":{}}}', '{"topic":"activity","type":"trades","payload":"str"}')


class Sim:
    def __init__(self, scenario: Scenario, *, ground_truth: str | None = None, now=time.time):
        self.scenario = scenario
        self.now = now
        seed = scenario.seed
        rng = lambda name: random.Random(f"{seed}:{name}")  # noqa: E731 - one independent stream per part
        self.hub = Hub()
        self.truth = GroundTruth(ground_truth, now)
        self.faults = Faults()
        self.ex = Exchange(self.hub, scenario, rng=rng("exchange"), truth=self.truth)
        self.settlement = Settlement(self.hub, self.ex, scenario.feeds, rng=rng("settlement"), now=now,
                                     truth=self.truth)
        self.clob = ClobApi(self.ex, self.settlement, scenario, now=now, rng=rng("clob"), faults=self.faults,
                            truth=self.truth)
        self.rtds = Rtds(self.hub, scenario.feeds, rng=rng("rtds"), now=now, faults=self.faults,
                         oracle=self.ex.oracle)
        self.market_ws = MarketWs(self.hub, self.ex, scenario.feeds, now=now, faults=self.faults)
        self.user_ws = UserWs(self.hub, scenario.feeds, keys=self.clob.keys, now=now)
        self.data = DataApi(self.hub, self.ex, scenario.feeds, rng=rng("data"), now=now, faults=self.faults)
        self.gamma = Gamma(self.ex, now=now)
        self.bg = BackgroundTraders(self.ex, scenario.background, price_model=scenario.markets.price_model,
                                    rng=rng("background"), now=now)
        if scenario.background.enabled:
            self.hub.subscribe(MATCH, self.bg.on_match)          # the makers react to trades after a delay
        self.source = SourceTrader(self.ex, self.bg, scenario.source, rng=rng("source"), now=now,
                                   window_s=scenario.window_s)
        ch = scenario.chain
        self.ledger = Ledger(self.hub, self.ex, truth=self.truth, faults=self.faults, now=now,
                             initial_pol=ch.pol_balance)
        self.node = Node(self.ledger, truth=self.truth, now=now)
        self.chain: Chain | None = None          # the JSON-RPC surface, attached by the CLI (it owns the blocks)
        self.relayer = Relayer(self.node, self.ledger, head=lambda: self.chain.head if self.chain else 0, now=now,
                               faults=self.faults, truth=self.truth, delay_s=ch.relayer_delay_s,
                               confirmations=ch.relayer_confirmations, min_deadline_s=ch.relayer_min_deadline_s)
        if scenario.markets.auto_redeem:
            self.hub.subscribe(MARKET_STATE, self._auto_redeem_later)
        self.control = Control(self)
        self.geoblock = Geoblock()
        self.malformed_sent = 0
        self._tasks: list[asyncio.Task] = []
        self._rng = rng("sim")

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._advance()
        self._tasks = [loop.create_task(self._clock_loop()), loop.create_task(self._price_loop()),
                       loop.create_task(self.source.run()),
                       loop.create_task(run_schedule(self.scenario.faults, self.apply_fault, self.now(), self.now))]
        if self.scenario.background.enabled and self.scenario.background.taker_rate > 0:
            self._tasks.append(loop.create_task(self._taker_loop()))

    start_background = start

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.truth.close()

    def _advance(self) -> None:
        now = self.now()
        self.ex.tick(now)
        if self.scenario.background.enabled:
            self.bg.quote(now)
        self.clob.expire_heartbeats(now)

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_S)
            self._advance()

    async def _price_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.rtds.publish_prices()

    async def _taker_loop(self) -> None:
        rate = self.scenario.background.taker_rate
        while True:
            await asyncio.sleep(self._rng.expovariate(rate))
            self.bg.take_one(self.now())

    def _auto_redeem_later(self, m: SimMarket) -> None:
        if m.state == "resolved":
            delay = self.scenario.window_s * self.scenario.markets.auto_redeem_after
            Hub.later(delay, lambda: self.node.auto_redeem(m))

    # ---- faults ------------------------------------------------------------------------------------------
    def apply_fault(self, kind: str, params: dict, origin: str) -> None:
        now = self.now()
        self.truth.record("fault", fault=kind, params=params, source=origin)
        if kind in COUNT_FAULTS:
            self.faults.arm_count(kind, params)
        elif kind in WINDOW_FAULTS:
            self.faults.arm_window(kind, now + float(params.get("seconds", 10)), params)
        elif kind == "engine_restart":
            down = float(params.get("seconds", 5))
            self.faults.arm_window("engine_restart", now + down, params)
            self.faults.arm_window("post_only_mode", now + down + float(params.get("post_only_seconds", down)), {})
        elif kind == "trade_fail":
            self.ex.force_fail += int(params.get("count", 1))
        elif kind == "rtds_drop":
            self.rtds.drop_all()
        elif kind == "market_ws_drop":
            self.market_ws.drop_all()
            self.user_ws.drop_all()
        elif kind == "rtds_burst_hold":
            self.rtds.hold()
            asyncio.get_running_loop().call_later(float(params.get("seconds", 2)), self.rtds.release)
        elif kind == "malformed":
            for i in range(int(params.get("count", 5))):
                text = MALFORMED[i % len(MALFORMED)].replace("{w}", self.source.wallet)
                self.malformed_sent += 1
                self.rtds.send_raw(text)
                self.market_ws.send_raw(text)


# ---- apps (one per port, like the real hosts) -------------------------------------------------------------
def clob_app(sim: Sim) -> web.Application:
    app = web.Application(middlewares=[sim.clob.edge], client_max_size=1 << 20)
    clob_routes(app, sim.clob)
    app.router.add_get("/ws/market", sim.market_ws.handler)
    app.router.add_get("/ws/user", sim.user_ws.handler)
    control_routes(app, sim.control)
    geoblock_routes(app, sim.geoblock)
    app.on_shutdown.append(lambda _: close_all([*sim.market_ws.subs, *sim.user_ws.subs]))
    return app


def gamma_app(sim: Sim) -> web.Application:
    return _gamma_app(sim.gamma)


def data_app(sim: Sim) -> web.Application:
    return _data_app(sim.data)


def relayer_app(sim: Sim) -> web.Application:
    return _relayer_app(sim.relayer)


def rtds_app(sim: Sim) -> web.Application:
    app = web.Application()
    app.router.add_get("/", sim.rtds.handler)
    app.on_shutdown.append(lambda _: close_all(sim.rtds.clients))
    return app

