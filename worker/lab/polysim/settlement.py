"""Trade lifecycle of our own (API-owned) trades: MATCHED -> MINED -> CONFIRMED, or MATCHED -> RETRYING -> FAILED.

The settlement transaction hash becomes visible at MINED (the SDK's post_order polls GET /data/trades?id= for it);
a FAILED trade is reverted at the venue (cash and shares go back). Each transition goes to the user websocket
(hub topic TRADE) and is what GET /data/trades reports.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from polysim.events import MATCH, TRADE, Hub, Match, TradeStatus
from polysim.exchange import Exchange, fmt
from polysim.scenario import Feeds
from polysim.truth import GroundTruth
from polysim.views import owner_id

TERMINAL = ("CONFIRMED", "FAILED")


@dataclass(eq=False)
class TradeRecord:
    match: Match
    last_update: float
    owners: list[str] = field(default_factory=list)     # API keys with an order in this trade
    status: str = "MATCHED"

    @property
    def mined(self) -> bool:
        return self.status in ("MINED", "CONFIRMED", "FAILED")


class Settlement:
    def __init__(self, hub: Hub, ex: Exchange, cfg: Feeds, *, rng: random.Random, now: Callable[[], float],
                 truth: GroundTruth):
        self.hub = hub
        self.ex = ex
        self.cfg = cfg
        self.rng = rng
        self.now = now
        self.truth = truth
        self.trades: dict[str, TradeRecord] = {}
        self.by_owner: dict[str, list[TradeRecord]] = {}
        hub.subscribe(MATCH, self._on_match)

    def _api_owner(self, order_hash: str) -> str | None:
        o = self.ex.orders.get(order_hash)
        return o.owner if o is not None and o.api else None

    def _on_match(self, match: Match) -> None:
        owners = []
        for f in match.fills():
            key = self._api_owner(f.order_hash)
            if key is not None and key not in owners:
                owners.append(key)
        if not owners:
            return
        rec = TradeRecord(match, match.match_time, owners)
        self.trades[match.trade_id] = rec
        for key in owners:
            self.by_owner.setdefault(key, []).append(rec)
        self._publish(rec)
        loop = asyncio.get_running_loop()
        mined = self.cfg.mined_after_s * self.rng.uniform(0.8, 1.3)
        confirmed = max(mined + 0.01, self.cfg.confirmed_after_s * self.rng.uniform(0.9, 1.2))
        loop.call_later(mined, self._advance, rec, "RETRYING" if match.will_fail else "MINED")
        loop.call_later(confirmed, self._advance, rec, "FAILED" if match.will_fail else "CONFIRMED")

    def _advance(self, rec: TradeRecord, status: str) -> None:
        rec.status = status
        rec.last_update = self.now()
        if status == "FAILED":
            self.ex.revert(rec.match)
        if status in TERMINAL:
            self.truth.record("trade", trade_id=rec.match.trade_id, tx_hash=rec.match.tx_hash, status=status)
        self._publish(rec)

    def _publish(self, rec: TradeRecord) -> None:
        for key in rec.owners:
            self.hub.publish(TRADE, TradeStatus(owner=key, trade=self.ws_json(rec, key), ts=rec.last_update))

    # ---- shapes ------------------------------------------------------------------------------------------
    def _maker_owner(self, f) -> str:
        return self._api_owner(f.order_hash) or owner_id(f.wallet)

    def _perspective(self, rec: TradeRecord, key: str) -> tuple[str, str]:
        """(trader_side, wallet of `key`) for this trade."""
        t = rec.match.taker
        if self._api_owner(t.order_hash) == key:
            return "TAKER", t.wallet
        wallet = next((f.wallet for f in rec.match.makers if self._api_owner(f.order_hash) == key), "")
        return "MAKER", wallet

    def _maker_orders(self, rec: TradeRecord) -> list[dict]:
        """maker_orders[] as the user channel and GET /data/trades both send them: each maker order with its own
        side, wallet and outcome (docs user-channel example; the official SDK requires `side` on each entry)."""
        return [{"asset_id": f.token_id, "fee_rate_bps": "0", "maker_address": f.wallet,
                 "matched_amount": fmt(f.size), "order_id": f.order_hash, "outcome": f.outcome,
                 "outcome_index": f.outcome_index, "owner": self._maker_owner(f), "price": fmt(f.price),
                 "side": f.side} for f in rec.match.makers]

    def ws_json(self, rec: TradeRecord, key: str) -> dict:
        """The user channel's `trade` event (fixture ws_user_trade.json plus the fields of the current docs
        example and the official SDK model: fee_rate_bps, maker_address, bucket_index, trader_side,
        transaction_hash)."""
        m, t = rec.match.market, rec.match.taker
        side, wallet = self._perspective(rec, key)
        return {"asset_id": t.token_id, "bucket_index": 0, "event_type": "trade", "fee_rate_bps": "0",
                "id": rec.match.trade_id, "last_update": str(int(rec.last_update)), "maker_address": wallet,
                "maker_orders": self._maker_orders(rec),
                "market": m.condition_id, "match_time": str(int(rec.match.match_time)), "outcome": t.outcome,
                "owner": key, "price": fmt(t.price), "side": t.side, "size": fmt(t.size), "status": rec.status,
                "taker_order_id": t.order_hash, "timestamp": str(int(rec.last_update)), "trade_owner": key,
                "type": "TRADE", "trader_side": side,
                "transaction_hash": rec.match.tx_hash if rec.mined else ""}

    def rest_json(self, rec: TradeRecord, key: str) -> dict:
        """A GET /data/trades row (fixture clob_trades_l2_response.json)."""
        m, t = rec.match.market, rec.match.taker
        side, wallet = self._perspective(rec, key)
        return {"id": rec.match.trade_id, "taker_order_id": t.order_hash, "market": m.condition_id,
                "asset_id": t.token_id, "side": t.side, "size": fmt(t.size), "fee_rate_bps": "0",
                "price": fmt(t.price), "status": f"TRADE_STATUS_{rec.status}",
                "match_time": str(int(rec.match.match_time)), "last_update": str(int(rec.last_update)),
                "outcome": t.outcome, "bucket_index": 0, "owner": key, "maker_address": wallet,
                "transaction_hash": rec.match.tx_hash if rec.mined else "", "trader_side": side,
                "maker_orders": [{k: v for k, v in mo.items() if k != "outcome_index"}
                                 for mo in self._maker_orders(rec)]}
