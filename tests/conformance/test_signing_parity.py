"""The unified SDK and py-clob-client-v2 sign the same V2/V3 order to the same bytes (same salt and timestamp): the
copier's signing path (pinned to py-clob-client-v2 in tests/copier/test_signing.py) can move to the unified SDK
without a byte changing (docs/perf/signing.md)."""
import random
import time

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st
from polymarket._internal.actions.orders.typed_data import build_order_signature, build_order_typed_data
from polymarket._internal.actions.orders.types import UnsignedOrder
from py_clob_client_v2.clob_types import CreateOrderOptions, OrderArgsV2
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_builder.builder import OrderBuilder
from py_clob_client_v2.order_utils import SignatureTypeV2
from py_clob_client_v2.signer import Signer

KEY = "0x" + "42" * 32
ACCOUNT = Account.from_key(KEY)


def _both(monkeypatch, token: str, side: str, price: float, size: float, tick: str, neg_risk: bool, v3: bool):
    monkeypatch.setattr(time, "time_ns", lambda: 1_800_000_000_123_456_789)
    monkeypatch.setattr(random, "random", lambda: 0.27182818)
    args = OrderArgsV2(token_id=None if v3 else token, position_id=token if v3 else None, price=price, size=size,
                       side=side)
    sdk2 = OrderBuilder(Signer(KEY, 137), SignatureTypeV2.EOA, None).build_order(
        args, CreateOrderOptions(tick_size=tick, neg_risk=neg_risk), version=3 if v3 else 2)
    c = get_contract_config(137)
    unsigned = UnsignedOrder(
        chain_id=137, builder=sdk2.builder, exchange_address=c.exchange_v3 if v3 else
        c.neg_risk_exchange_v2 if neg_risk else c.exchange_v2, expiration=0, maker=sdk2.maker,
        maker_amount=int(sdk2.makerAmount), metadata=sdk2.metadata, order_type="FAK", salt=int(sdk2.salt), side=side,
        signature_type=0, signer=sdk2.signer, taker_amount=int(sdk2.takerAmount), timestamp=int(sdk2.timestamp),
        token_id=token, protocol_version="3" if v3 else "2")
    signed = ACCOUNT.sign_typed_data(full_message=build_order_typed_data(unsigned))
    return sdk2.signature, build_order_signature(unsigned, "0x" + signed.signature.hex().removeprefix("0x"))


@pytest.mark.parametrize("neg_risk,v3", [(False, False), (True, False), (False, True)])
def test_unified_sdk_signs_the_same_bytes_as_py_clob_client_v2_on_each_exchange(monkeypatch, neg_risk, v3):
    ours, theirs = _both(monkeypatch, "71321045679252212594626385532706912750332728571942532289631379312455583992563",
                         "BUY", 0.57, 12.34, "0.01", neg_risk, v3)
    assert ours.lower() == theirs.lower() and len(ours) == 132


@settings(max_examples=30, deadline=None)
@given(side=st.sampled_from(["BUY", "SELL"]), steps=st.integers(1, 99), size=st.floats(0.01, 5000),
       token=st.integers(1, 2**256 - 1))
def test_unified_sdk_signs_the_same_bytes_for_any_order(side, steps, size, token):
    with pytest.MonkeyPatch.context() as mp:
        ours, theirs = _both(mp, str(token), side, round(steps * 0.01, 2), round(size, 2) or 0.01, "0.01", False,
                             False)
    assert ours.lower() == theirs.lower()
