"""Order signing with py-clob-client-v2's order builder: sign once, keep the bytes and the EIP-712 order hash.

The exchange (and EIP-712 domain) is chosen per market: standard or neg-risk CTF Exchange V2 (domain version 2) for
Gamma "v1" markets, ExchangeV3 (domain version 3, via the position id) for Protocol-V2 ("v2") markets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from py_clob_client_v2.clob_types import CreateOrderOptions, OrderArgsV2
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_builder.builder import OrderBuilder
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, SignatureTypeV2
from py_clob_client_v2.order_utils.model.order_data_v2 import OrderV2, order_to_json_v2
from py_clob_client_v2.signer import Signer

from copier.types import MarketMeta, OrderIntent

ORDER_TYPE = "FAK"
_TICKS = {0.1: "0.1", 0.01: "0.01", 0.005: "0.005", 0.0025: "0.0025", 0.001: "0.001", 0.0001: "0.0001"}


@dataclass(frozen=True, slots=True)
class SignedOrder:
    order_hash: str
    body: str          # the exact JSON we POST, every attempt


class OrderSigner:
    def __init__(self, private_key: str, chain_id: int, signature_type: int, funder: str, owner_api_key: str):
        self._signer = Signer(private_key, chain_id)
        self._chain_id = chain_id
        self._builder = OrderBuilder(self._signer, SignatureTypeV2(signature_type), funder or None)
        self._owner = owner_api_key
        self._contracts = get_contract_config(chain_id)

    @property
    def address(self) -> str:
        return self._signer.address()

    def sign(self, intent: OrderIntent, market: MarketMeta) -> SignedOrder:
        tick = _TICKS.get(round(market.tick_size, 6))
        if tick is None:
            raise ValueError(f"unsupported tick size {market.tick_size}")
        v3 = market.exchange_version == 3
        args = OrderArgsV2(token_id=None if v3 else intent.asset, position_id=intent.asset if v3 else None,
                           price=intent.price_cap, size=intent.size, side=intent.side.value)
        signed = self._builder.build_order(args, CreateOrderOptions(tick_size=tick, neg_risk=market.neg_risk),
                                           version=3 if v3 else 2)
        payload = order_to_json_v2(signed, self._owner, ORDER_TYPE)
        return SignedOrder(order_hash=self._hash(signed, market), body=json.dumps(payload, separators=(",", ":")))

    def _hash(self, signed, market: MarketMeta) -> str:
        c = self._contracts
        if market.exchange_version == 3:
            exchange, version = c.exchange_v3, "3"
        else:
            exchange, version = (c.neg_risk_exchange_v2 if market.neg_risk else c.exchange_v2), "2"
        eb = ExchangeOrderBuilderV2(exchange, self._chain_id, self._signer, domain_version=version)
        fields = {k: getattr(signed, k) for k in OrderV2.__dataclass_fields__}
        return eb.build_order_hash(eb.build_order_typed_data(OrderV2(**fields)))
