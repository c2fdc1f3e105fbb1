"""The simulator's own control API under /_sim on the CLOB port (not part of Polymarket).

  POST /_sim/source-fill   {asset, outcome, side, size, price?, role: taker|maker, window: current|next | slug}
                           -> {tx_hash, condition_id, token_id, slug, fills, match_time}
  POST /_sim/faults        {kind: {params}, ...}  (kinds: scenario.FAULT_KINDS)
  POST /_sim/tick-size     {slug, tick_size}      force a tick_size_change
  GET  /_sim/state         counters, markets, faults, the scenario's name
  POST /_sim/wallets/fund  {address, pusd?, pol?, owner?, approve?: [operator, ...] | "adapters"}
                           add pUSD / POL (decimal numbers), declare a deposit wallet's owner (the relayer then takes
                           its batches), approve CTF operators (e.g. the collateral adapters) -> the wallet's balances
  GET  /_sim/wallets/{address}
                           what the venue holds for a wallet: pUSD, POL (wei), nonce, positions per token (size,
                           6-decimal units, cost, realized PnL, redeemable), approvals, deposit wallet owner and nonce
  POST /_sim/resolve       {slug | condition_id, winner?: "Up" | "Down"}
                           close (if open) and resolve a market now; without `winner` the oracle decides
  POST /_sim/source        {paused: bool}  pause or resume the scenario's random source (no new burst, and a
                           running burst stops at its next fill) -> {paused, source_fills}
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from aiohttp import web

from polysim import contracts
from polysim.ledger import units
from polysim.scenario import FAULT_KINDS

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _amount(body: dict, key: str) -> float:
    value = body.get(key, 0)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{key}: not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key}: a finite non-negative number")
    return float(value)

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

    async def fund(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict) or not _ADDRESS.match(str(body.get("address", ""))):
                raise ValueError("address: a 0x-prefixed 20-byte address")
            pusd, pol = _amount(body, "pusd"), _amount(body, "pol")
            owner = body.get("owner")
            if owner is not None and not _ADDRESS.match(str(owner)):
                raise ValueError("owner: a 0x-prefixed 20-byte address")
            approve = body.get("approve") or []
            if approve == "adapters":
                approve = list(contracts.ADAPTERS)
            if not isinstance(approve, list) or not all(_ADDRESS.match(str(a)) for a in approve):
                raise ValueError('approve: a list of addresses, or "adapters"')
        except (ValueError, RecursionError) as exc:
            return web.json_response({"error": f"bad fund request: {exc}"}, status=400)
        self.sim.ledger.fund(body["address"], pusd, pol, owner, tuple(approve))
        return web.json_response(self.wallet_doc(body["address"].lower()))

    def wallet_doc(self, address: str) -> dict:
        sim = self.sim
        ledger, ex = sim.ledger, sim.ex
        w = ex.wallets.get(address)
        positions = []
        for token, p in (w.positions.items() if w is not None and w.tracked else ()):
            m = ex.by_token.get(token)
            positions.append({"token_id": token, "condition_id": m.condition_id if m else None,
                              "slug": m.slug if m else None,
                              "outcome": m.outcomes[m.token_ids.index(token)] if m else None,
                              "size": p.size, "units": units(p.size), "cost": p.cost, "realized": p.realized,
                              "fees": p.fees, "resolved": bool(m and m.winner is not None),
                              "redeemable": bool(m and m.winner is not None and p.size > 0
                                                 and m.token_ids[m.winner] == token)})
        dw = ledger.deposit_wallets.get(address)
        return {"address": address, "pusd": round(w.balance, 6) if w is not None and w.tracked else 0.0,
                "pusd_units": ledger.pusd_units(address), "locked": round(w.locked, 6) if w is not None else 0.0,
                "pol_wei": str(ledger.balance(address)), "nonce": ledger.nonce(address),
                "pending_nonce": sim.node.pending_nonce(address), "positions": positions,
                "approved_operators": sorted(ledger.operators.get(address, ())),
                "deposit_wallet": {"owner": dw.owner, "nonce": dw.nonce} if dw else None}

    async def wallet(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        if not _ADDRESS.match(address):
            return web.json_response({"error": "address: a 0x-prefixed 20-byte address"}, status=400)
        return web.json_response(self.wallet_doc(address.lower()))

    async def resolve(self, request: web.Request) -> web.Response:
        ex = self.sim.ex
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("a JSON object")
            m = ex.markets.get(str(body.get("slug", ""))) or ex.by_condition.get(str(body.get("condition_id",
                                                                                              "")).lower())
            if m is None:
                return web.json_response({"error": "unknown market (slug or condition_id)"}, status=404)
            winner = body.get("winner")
            if winner is not None and winner not in m.outcomes:
                raise ValueError(f"winner: one of {m.outcomes}")
            ex.resolve_now(m, self.sim.now(), None if winner is None else m.outcomes.index(winner))
        except (ValueError, RecursionError) as exc:
            return web.json_response({"error": f"bad resolve request: {exc}"}, status=400)
        assert m.winner is not None
        return web.json_response({"slug": m.slug, "condition_id": m.condition_id, "winner": m.outcomes[m.winner],
                                  "winning_token_id": m.token_ids[m.winner], "start_price": m.start_price,
                                  "end_price": m.end_price, "resolved_at": m.resolved_at})

    async def source(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("paused"), bool):
                raise ValueError("a JSON object with a boolean `paused`")
        except (ValueError, RecursionError) as exc:
            return web.json_response({"error": f"bad source request: {exc}"}, status=400)
        self.sim.source.paused = body["paused"]
        return web.json_response({"paused": self.sim.source.paused, "source_fills": self.sim.source.fills})

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
                                  "node": sim.node.counters, "relayer": sim.relayer.counters,
                                  "hub_errors": sim.hub.errors})


def control_routes(app: web.Application, control: Control) -> None:
    app.router.add_post("/_sim/source-fill", control.source_fill)
    app.router.add_post("/_sim/faults", control.faults)
    app.router.add_post("/_sim/tick-size", control.tick_size)
    app.router.add_get("/_sim/state", control.state)
    app.router.add_post("/_sim/wallets/fund", control.fund)
    app.router.add_get("/_sim/wallets/{address}", control.wallet)
    app.router.add_post("/_sim/resolve", control.resolve)
    app.router.add_post("/_sim/source", control.source)
