import random
from dataclasses import replace

from hypothesis import given, settings, strategies as st

from copier.dedupe import Deduper
from helpers import fill


def test_same_trade_on_two_channels_and_two_sockets_is_admitted_once():
    d = Deduper()
    f = fill(1)
    assert d.admit(f, "a#1:trades").occurrence == 0
    assert d.admit(f, "a#1:orders_matched") is None
    assert d.admit(f, "b#1:trades") is None
    assert d.admit(f, "data_api#1") is None


def test_two_identical_fills_in_one_tx_are_both_admitted():
    d = Deduper()
    f = fill(1)
    assert [d.admit(f, "a#1:trades").occurrence, d.admit(f, "a#1:trades").occurrence] == [0, 1]
    assert d.admit(f, "b#1:trades") is None and d.admit(f, "b#1:trades") is None
    assert d.admit(f, "b#1:trades").occurrence == 2


def test_a_redelivered_frame_is_not_a_second_fill():
    d = Deduper()
    f = fill(1)
    assert d.admit(f, "a#1:trades", frame_id="1700:abc") is not None
    assert d.admit(f, "a#1:trades", frame_id="1700:abc") is None


def test_seed_from_store_suppresses_refills_after_restart():
    d = Deduper()
    d.seed([fill(1).dedupe_key, fill(2).dedupe_key])
    assert d.admit(fill(1), "data_api#1") is None and d.seen(fill(2).dedupe_key)
    assert d.admit(fill(3), "data_api#1") is not None


def test_memory_is_bounded():
    d = Deduper(capacity=100)
    for i in range(1000):
        d.admit(fill(i), "s")
    assert len(d._admitted) <= 100 and len(d._claims) <= 100


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=12), st.integers(1, 4), st.integers(0, 10_000))
def test_any_interleaving_over_streams_admits_each_identity_once(contents, n_streams, seed):
    """Every stream delivers the same multiset of fills in its own order; each identity is admitted exactly once."""
    fills = [fill(c) for c in contents]
    rng = random.Random(seed)
    deliveries = []
    for s in range(n_streams):
        order = fills[:]
        rng.shuffle(order)
        deliveries += [(f"s{s}", f) for f in order]
    rng.shuffle(deliveries)
    d = Deduper()
    admitted = [a.dedupe_key for s, f in deliveries if (a := d.admit(f, s)) is not None]
    expected = sorted(f"{f.content_key}:{k}" for c in set(contents)
                      for k, f in enumerate([x for x in fills if x.content_key == fill(c).content_key]))
    assert sorted(admitted) == expected


def test_a_feed_rounding_size_and_showing_another_price_never_makes_a_second_fill():
    """Chain-first 6-decimal amounts; RTDS later with a 4-decimal size and a rounded (or limit) price."""
    d = Deduper()
    chain = replace(fill(1), size=2.702702, price=0.263333)
    first = d.admit(chain, "chain.logs#1")
    assert d.admit(replace(fill(1), size=2.7027, price=0.26), "rtds-a#1:rtds.trades") is None
    assert d.admit(replace(fill(1), size=2.7027, price=0.99), "rtds-b#1:rtds.orders_matched") is None
    assert d.admit(replace(fill(1), size=2.70, price=0.26), "data_api#1") is None
    assert first.dedupe_key == d.identify(replace(fill(1), size=2.7027, price=0.26))[0]


def test_equal_size_fills_at_two_prices_keep_their_own_identities():
    d = Deduper()
    low, high = replace(fill(1), price=0.50), replace(fill(1), price=0.51)
    keys = [d.admit(low, "rtds-a#1:rtds.trades").dedupe_key, d.admit(high, "rtds-a#1:rtds.trades").dedupe_key]
    assert d.admit(high, "chain.logs#1") is None and d.admit(low, "chain.logs#1") is None
    assert d.identify(high)[0] == keys[1]
