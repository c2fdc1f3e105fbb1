"""The simulator's own control API under /_sim on the CLOB port (not part of Polymarket).

  POST /_sim/source-fill   {asset, outcome, side, size, price?, role: taker|maker, window: current|next | slug}
                           -> {tx_hash, condition_id, token_id, slug, fills, match_time}
  POST /_sim/faults        {kind: {params}, ...}  (kinds: scenario.FAULT_KINDS)
  POST /_sim/tick-size     {slug, tick_size}      force a tick_size_change
  GET  /_sim/state         counters, markets, faults, the scenario's name
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from polysim.scenario import FAULT_KINDS

if TYPE_CHECKING:
    from polysim.server import Sim


class Control:
    def __init__(self, sim: Sim):
        self.sim = sim

    async def source_fill(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            ex = self.sim.ex
            market = ex.markets[body["slug"]] if body.get("slug") else None
            m, token, match = self.sim.source.fill(
                asset=body.get("asset", "btc"), outcome=body.get("outcome", "Up"), side=body.get("side", "BUY"),
                size=float(body.get("size", 10)), price=body.get("price"), role=body.get("role", "taker"),
                window=body.get("window", "current"), market=market)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad source-fill request: {exc!r}"}, status=400)
        wallet = self.sim.source.wallet
        fills = [] if match is None else [
            {"wallet": f.wallet, "side": f.side, "token_id": f.token_id, "condition_id": m.condition_id,
             "size": round(f.size, 6), "price": round(f.price, 6), "timestamp": int(match.match_time), "slug": m.slug,
             "event_slug": m.event_slug, "title": m.title, "outcome": f.outcome, "outcome_index": f.outcome_index,
             "transaction_hash": match.tx_hash, "role": f.role} for f in match.fills() if f.wallet == wallet]
        tx_hash = match.tx_hash if match is not None and fills else None
        return web.json_response({"tx_hash": tx_hash, "condition_id": m.condition_id, "token_id": token,
                                  "slug": m.slug, "fills": fills,
                                  "match_time": match.match_time if match else self.sim.now()})

    async def faults(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError("a JSON object of {fault kind: parameters}")
        except ValueError as exc:
            return web.json_response({"error": f"bad fault request: {exc}"}, status=400)
        unknown = sorted(set(spec) - set(FAULT_KINDS))
        if unknown:
            return web.json_response({"error": f"unknown fault kind {unknown[0]!r}",
                                      "kinds": FAULT_KINDS}, status=400)
        for kind, params in spec.items():
            self.sim.apply_fault(kind, dict(params or {}), "control")
        return web.json_response({"ok": True, "faults": self.sim.faults.snapshot()})

    async def tick_size(self, request: web.Request) -> web.Response:
        body = await request.json()
        m = self.sim.ex.markets.get(body.get("slug", ""))
        if m is None:
            return web.json_response({"error": "unknown slug"}, status=404)
        self.sim.ex.set_tick_size(m, float(body["tick_size"]))
        return web.json_response({"ok": True, "slug": m.slug, "tick_size": m.tick_size})

    async def state(self, request: web.Request) -> web.Response:
        sim = self.sim
        by_owner: dict[str, int] = {}
        for o in sim.ex.orders.values():
            by_owner[o.owner] = by_owner.get(o.owner, 0) + 1
        counters = {**sim.clob.counters, **sim.rtds.counters, "malformed_sent": sim.malformed_sent,
                    "source_fills": sim.source.fills}
        return web.json_response({"scenario": sim.scenario.name, "speed": sim.scenario.speed,
                                  "markets": len(sim.ex.markets), "matches": sim.ex.matches,
                                  "orders_by_owner": by_owner, "counters": counters,
                                  "rtds_clients": len(sim.rtds.clients), "market_ws_clients": len(sim.market_ws.subs),
                                  "user_ws_clients": len(sim.user_ws.subs),
                                  "user_ws_authenticated": sum(1 for s in sim.user_ws.subs.values() if s.api_key),
                                  "rtds_price_subscribers": sum(1 for c in sim.rtds.clients.values() if c.prices),
                                  "faults": sim.faults.snapshot(),
                                  "hub_errors": sim.hub.errors})


def control_routes(app: web.Application, control: Control) -> None:
    app.router.add_post("/_sim/source-fill", control.source_fill)
    app.router.add_post("/_sim/faults", control.faults)
    app.router.add_post("/_sim/tick-size", control.tick_size)
    app.router.add_get("/_sim/state", control.state)
