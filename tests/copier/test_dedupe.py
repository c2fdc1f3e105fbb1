import random
from dataclasses import replace

from helpers import T0, fill
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.clock import FakeClock
from copier.dedupe import Deduper
from copier.types import SourceFill


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
    d.seed([(fill(1).dedupe_key, T0), (fill(2).dedupe_key, T0)])
    assert d.admit(fill(1), "data_api#1") is None and d.seen(fill(2).dedupe_key)
    assert d.admit(fill(3), "data_api#1") is not None


def test_a_seeded_key_is_forgotten_a_horizon_after_it_was_seen_not_after_the_restart():
    clock = FakeClock(T0 + 3600.0)
    d = Deduper(clock=clock)
    d.seed([(fill(1).dedupe_key, T0), (fill(2).dedupe_key, T0 + 3000.0)])
    d.forget(clock.now() - 3600.0 + 1.0)
    assert not d.seen(fill(1).dedupe_key) and d.seen(fill(2).dedupe_key)


def test_memory_is_bounded():
    d = Deduper(capacity=100)
    for i in range(1000):
        d.admit(fill(i), "s")
    assert len(d._groups) <= 100


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


def test_an_aggregate_and_its_per_maker_rows_are_one_set_of_shares_in_any_order():
    agg = replace(fill(1), size=60.0, price=0.513333)
    rows = [replace(fill(1), size=s, price=p) for s, p in ((20.0, 0.51), (25.0, 0.51), (15.0, 0.52))]
    # the aggregate first: every row is a sighting of it
    d = Deduper()
    assert d.admit(agg, "chain.logs:block1").size == 60.0
    assert [d.admit(r, "rtds-a#1:rtds.trades") for r in rows] == [None] * 3
    # the rows first: the aggregate brings nothing new
    d = Deduper()
    assert sum(d.admit(r, "rtds-a#1:rtds.trades").size for r in rows) == 60.0
    assert d.admit(agg, "chain-mempool:tx") is None
    # interleaved: the aggregate brings what the rows had not shown yet, the late rows nothing
    d = Deduper()
    first = d.admit(rows[0], "rtds-a#1:rtds.trades")
    rest = d.admit(agg, "chain.logs:block1")
    assert (first.size, rest.size) == (20.0, 40.0)
    assert d.admit(rows[1], "rtds-a#1:rtds.trades") is None and d.admit(rows[2], "rtds-a#1:rtds.trades") is None


def test_a_payload_sent_again_in_a_new_envelope_is_the_same_frame():
    import json

    from copier.schemas import parse_rtds_frame
    payload = {"proxyWallet": "0xsource", "side": "BUY", "asset": "1111", "conditionId": "0x" + "ab" * 32,
               "size": 10, "price": 0.5, "timestamp": 1_800_000_000, "outcome": "Up", "outcomeIndex": 0,
               "transactionHash": "0x" + "01" * 32}
    frames = [json.dumps({"connection_id": c, "timestamp": ts, "topic": "activity", "type": "trades",
                          "payload": payload}) for c, ts in (("a", 1_800_000_001_000), ("b", 1_800_000_004_250))]
    d = Deduper()
    got = []
    for text in frames:
        [f], frame_id = parse_rtds_frame(text, "0xsource", 1)
        got.append(d.admit(f, "rtds-a#1:rtds.trades", frame_id))
    assert got[0] is not None and got[1] is None


@settings(max_examples=300, deadline=None)
def _granular_deliveries(parts: list[int], n_aggregate: int, rng: random.Random) -> list[tuple[str, SourceFill]]:
    """One taker fill of sum(parts) shares as (stream, fill): n_aggregate streams deliver the total (6 decimals), two
    per-maker streams the parts (4 decimals, each in its own order), all interleaved."""
    total = float(sum(parts))
    deliveries = [(f"agg{k}", replace(fill(1), size=round(total + rng.uniform(-4e-6, 4e-6), 6)))
                  for k in range(n_aggregate)]
    for s in range(2):
        order = parts[:]
        rng.shuffle(order)
        deliveries += [(f"rows{s}", replace(fill(1), size=round(p + rng.uniform(-4e-5, 4e-5), 4))) for p in order]
    rng.shuffle(deliveries)
    return deliveries


@given(st.lists(st.integers(1, 40), min_size=1, max_size=5), st.integers(0, 3), st.integers(0, 10_000))
def test_streams_of_any_granularity_never_admit_more_than_the_source_traded(parts, n_aggregate, seed):
    """One source taker fill of sum(parts) shares: per-maker streams deliver the parts (rounded to 4 decimals, in
    any order), aggregate streams deliver the total (6 decimals); interleaved arbitrarily, the admitted shares add
    up to the total once, whichever arrives first."""
    rng = random.Random(seed)
    total = float(sum(parts))
    deliveries = _granular_deliveries(parts, n_aggregate, rng)
    d = Deduper()
    admitted = sum(a.size for s, f in deliveries if (a := d.admit(f, s)) is not None)
    assert abs(admitted - total) <= max(1e-4, 5e-3 * total)


def test_a_replaced_transaction_is_the_original_on_every_feed():
    d = Deduper()
    original, replacement = "0x" + "0a" * 32, "0x" + "0b" * 32
    assert d.admit(replace(fill(1), tx_hash=original, size=30.0), "chain-mempool:" + original) is not None
    d.alias(replacement, original)
    assert d.admit(replace(fill(1), tx_hash=replacement, size=30.0), "chain-mempool:" + replacement) is None
    assert d.admit(replace(fill(1), tx_hash=replacement, size=30.0), "chain.logs:block7") is None
    for part in (10.0, 20.0):
        assert d.admit(replace(fill(1), tx_hash=replacement, size=part), "rtds-a#1:rtds.trades") is None
    # after a restart, the persisted alias still holds
    again = Deduper()
    again.seed([(replace(fill(1), tx_hash=original, size=30.0).dedupe_key, T0)], d.aliases())
    assert again.admit(replace(fill(1), tx_hash=replacement, size=30.0), "data_api#1") is None


def test_dedupe_forget_past_the_horizon_stays_bounded_over_many_windows():
    """A week of windows at a steady rate: what is kept never exceeds what the horizon spans, whatever ran before."""
    clock = FakeClock(T0)
    d = Deduper(clock=clock)
    horizon, window, per_window = 4 * 900.0, 900.0, 20
    most = 0
    for w in range(7 * 96):
        for i in range(per_window):
            f = fill(w * per_window + i)
            for stream in ("rtds#1:trades", "rtds#1:orders_matched", "data_api#1", f"chain-logs:{w}"):
                d.observe(f, stream, frame_id=f"{w}:{i}")
        clock.advance(window)
        d.forget(clock.now() - horizon)
        most = max(most, len(d._groups))
    assert len(d._groups) == 4 * per_window
    assert most <= 5 * per_window           # the horizon's 4 windows and the one just written


def test_dedupe_forget_keeps_what_was_written_within_the_horizon():
    clock = FakeClock(T0)
    d = Deduper(clock=clock)
    old, recent = fill(1), fill(2)
    assert d.admit(old, "rtds#1:trades", frame_id="f1") is not None
    clock.advance(100.0)
    assert d.admit(recent, "rtds#1:trades", frame_id="f2") is not None
    d.alias("0xreplacement", recent.tx_hash)
    clock.advance(50.0)
    d.forget(clock.now() - 120.0)
    assert d.admit(recent, "data_api#1") is None                            # still a duplicate
    assert d.admit(replace(recent, tx_hash="0xreplacement"), "chain-mempool:x") is None
    assert not d.seen(old.dedupe_key)                                       # forgotten, as a restart would


def test_dedupe_a_group_written_again_is_kept_from_its_last_write():
    clock = FakeClock(T0)
    d = Deduper(clock=clock)
    f = fill(1)
    d.admit(f, "rtds#1:trades")
    clock.advance(100.0)
    assert d.admit(f, "data_api#1") is None                                 # a sighting rewrites the group
    d.forget(clock.now() - 50.0)
    assert d.seen(f.dedupe_key)


def test_dedupe_without_a_clock_forgets_nothing_before_epoch():
    d = Deduper()
    d.admit(fill(1), "s")
    assert d.forget(0.0) == 0 and d.seen(fill(1).dedupe_key)


def test_past_the_stream_horizon_a_group_keeps_its_admitted_fills_alone():
    clock = FakeClock(T0)
    d = Deduper(clock=clock)
    rows = [replace(fill(1), size=20.0), replace(fill(1), size=20.0), replace(fill(1), size=20.0)]
    for n, row in enumerate(rows[:2]):
        assert d.admit(row, "rtds#1:trades", frame_id=f"f{n}") is not None
    clock.advance(41.0)
    d.forget(clock.now() - 86_400, clock.now() - 40.0)
    (delivered,) = [v for _, v in d._groups.items()]
    assert delivered.streams is None and delivered.frames == () and len(delivered.admitted) == 2
    assert d.admit(rows[0], "rtds#1:trades", frame_id="f0") is None        # the same frame again: a sighting
    assert d.admit(replace(rows[0], size=40.0), "chain.logs:b1") is None    # the aggregate so far: a sighting
    assert d.admit(replace(rows[0], size=60.0), "chain.logs:b2") is not None   # beyond it: the third row
    assert d.seen(rows[0].dedupe_key) and len(d._streamed) == 1          # the group streams again


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=5), st.integers(0, 3), st.integers(0, 10_000),
       st.lists(st.integers(0, 30), max_size=6))
def test_forgetting_the_streams_at_any_moment_never_admits_more_than_the_source_traded(parts, n_aggregate, seed,
                                                                                      forget_at):
    """The granularity property with the streams' deliveries forgotten between any two deliveries: the admitted
    shares may fall short of what was traded (a stream cut off mid-delivery), never exceed it."""
    rng = random.Random(seed)
    clock = FakeClock(T0)
    total = float(sum(parts))
    deliveries = _granular_deliveries(parts, n_aggregate, rng)
    d = Deduper(clock=clock)
    admitted = 0.0
    for n, (stream, f) in enumerate(deliveries):
        if n in forget_at:
            clock.advance(50.0)
            d.forget(clock.now() - 86_400, clock.now() - 40.0)
        if (a := d.admit(f, stream, frame_id=f"{stream}:{n}")) is not None:
            admitted += a.size
    assert admitted <= total + max(1e-4, 5e-3 * total)
    if not forget_at:
        assert abs(admitted - total) <= max(1e-4, 5e-3 * total)
