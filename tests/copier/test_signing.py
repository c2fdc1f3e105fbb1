"""The signer computes the EIP-712 digest once and signs it itself: its bytes must be exactly what the SDK's own
build_order + build_order_hash produce for the same salt and timestamp, on every exchange domain and signature type."""
import json
import random
import time
from dataclasses import replace

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from helpers import market
from hypothesis import given, settings
from hypothesis import strategies as st
from py_clob_client_v2.clob_types import CreateOrderOptions, OrderArgsV2
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_builder.builder import OrderBuilder
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, SignatureTypeV2
from py_clob_client_v2.order_utils.model.order_data_v2 import OrderV2, order_to_json_v2
from py_clob_client_v2.signer import Signer

from copier.signing import ORDER_TYPE, OrderSigner
from copier.types import OrderIntent, Side

KEY = "0x" + "42" * 32
OWNER = "api-key-1"
FUNDER = "0x" + "77" * 20
NOW_NS = 1_800_000_000_123_456_789


def _intent(asset: str, side: Side, size: float, cap: float) -> OrderIntent:
    return OrderIntent(intent_id="i1", condition_id="0xc", asset=asset, outcome="Up", side=side, size=size,
                       price_cap=cap, notional=size * cap, source_price=cap, fill_keys=("k",), kind="leading",
                       decided_at=1.0, opening=side is Side.BUY)


def _sdk(sig_type: int, intent: OrderIntent, tick: str, neg_risk: bool, v3: bool) -> tuple[str, str]:
    """(order hash, body) the way the SDK alone builds, signs and hashes the order."""
    signer = Signer(KEY, 137)
    funder = FUNDER if sig_type else None
    args = OrderArgsV2(token_id=None if v3 else intent.asset, position_id=intent.asset if v3 else None,
                       price=intent.price_cap, size=intent.size, side=intent.side.value)
    signed = OrderBuilder(signer, SignatureTypeV2(sig_type), funder).build_order(
        args, CreateOrderOptions(tick_size=tick, neg_risk=neg_risk), version=3 if v3 else 2)
    c = get_contract_config(137)
    exchange = c.exchange_v3 if v3 else c.neg_risk_exchange_v2 if neg_risk else c.exchange_v2
    eb = ExchangeOrderBuilderV2(exchange, 137, signer, domain_version="3" if v3 else "2")
    fields = {k: getattr(signed, k) for k in OrderV2.__dataclass_fields__}
    order_hash = eb.build_order_hash(eb.build_order_typed_data(OrderV2(**fields)))
    return order_hash, json.dumps(order_to_json_v2(signed, OWNER, ORDER_TYPE), separators=(",", ":"))


@pytest.fixture(autouse=True)
def pinned_salt_and_timestamp(monkeypatch):
    monkeypatch.setattr(time, "time_ns", lambda: NOW_NS)
    monkeypatch.setattr(random, "random", lambda: 0.3141592653589793)


@pytest.mark.parametrize("sig_type", [0, 1, 2, 3])
@pytest.mark.parametrize("v3,neg_risk", [(False, False), (False, True), (True, False)])
def test_same_bytes_and_hash_as_the_sdk_on_every_domain_and_signature_type(sig_type, v3, neg_risk):
    m = replace(market(version=3 if v3 else 2), neg_risk=neg_risk)
    intent = _intent(m.token_ids[0], Side.BUY, 12.34, 0.57)
    ours = OrderSigner(KEY, 137, sig_type, FUNDER if sig_type else "", OWNER).sign(intent, m)
    assert (ours.order_hash, ours.body) == _sdk(sig_type, intent, "0.01", neg_risk, v3)


@settings(max_examples=40, deadline=None)
@given(side=st.sampled_from([Side.BUY, Side.SELL]), size=st.floats(0.01, 5000),
       tick=st.sampled_from(["0.1", "0.01", "0.001", "0.0001"]), steps=st.integers(1, 10_000),
       asset=st.integers(1, 2**256 - 1))
def test_same_bytes_and_hash_as_the_sdk_for_any_order(side, size, tick, steps, asset):
    t = float(tick)
    cap = round(min(max(steps * t, t), 1 - t), 6)
    m = market(tick=t, tokens=(str(asset), "2"))
    intent = _intent(str(asset), side, round(size, 2) or 0.01, cap)
    ours = OrderSigner(KEY, 137, 0, "", OWNER).sign(intent, m)
    assert (ours.order_hash, ours.body) == _sdk(0, intent, tick, False, False)


def test_signature_recovers_to_the_signer_over_the_typed_data():
    m = market()
    signer = OrderSigner(KEY, 137, 0, "", OWNER)
    order, order_hash = signer.sign_order(_intent(m.token_ids[0], Side.SELL, 7.0, 0.42), m)
    eb = ExchangeOrderBuilderV2(get_contract_config(137).exchange_v2, 137, Signer(KEY, 137))
    typed = eb.build_order_typed_data(order)
    assert Account.recover_message(encode_typed_data(full_message=typed), signature=order.signature) == signer.address
    assert order_hash == eb.build_order_hash(typed)


def test_unsupported_tick_is_refused():
    m = market(tick=0.02)
    with pytest.raises(ValueError, match="tick"):
        OrderSigner(KEY, 137, 0, "", OWNER).sign(_intent(m.token_ids[0], Side.BUY, 5, 0.5), m)
