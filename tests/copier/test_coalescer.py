from dataclasses import replace

from helpers import DOWN, T0, UP, fill
from hypothesis import given, settings
from hypothesis import strategies as st

from copier.coalescer import SUBMIT_GUARD_S, Coalescer
from copier.config import CopyConfig
from copier.types import Side


def run(coalescer, timed_fills, until):
    out = []
    for t, f in timed_fills:
        out += coalescer.add(f, t)
    out += coalescer.due(until)
    return out


def test_first_fill_of_a_quiet_key_is_released_at_once():
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000))
    batches = c.add(fill(1), T0)
    assert [b.kind for b in batches] == ["leading"]
    assert batches[0].net_size == 10.0


def test_burst_becomes_one_leading_and_one_trailing_batch():
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000))
    fills = [(T0 + i * 0.25, fill(i, t=T0 + i * 0.25)) for i in range(6)]
    batches = run(c, fills, T0 + 10)
    assert [b.kind for b in batches] == ["leading", "trailing"]
    assert sum(b.net_size for b in batches) == 60.0
    # The trailing batch is released coalesce_ms after the last fill.
    assert abs(batches[1].released_at - (T0 + 1.25 + 0.3)) < 1e-9


def test_trailing_batch_waits_at_most_max_hold():
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=1000))
    fills = [(T0 + i * 0.2, fill(i, t=T0 + i * 0.2)) for i in range(10)]   # a steady 2 s stream
    batches = run(c, fills, T0 + 10)
    trailing = [b for b in batches if b.kind == "trailing"]
    assert abs(trailing[0].released_at - (T0 + 0.2 + 1.0)) < 1e-9
    assert sum(b.net_size for b in batches) == 100.0


def test_opposite_fill_inside_the_window_is_netted():
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000, net_opposite_trades=True))
    fills = [(T0, fill(1)), (T0 + 0.1, fill(2, size=6)), (T0 + 0.2, fill(3, side=Side.SELL, size=4))]
    batches = run(c, fills, T0 + 5)
    assert [b.net_size for b in batches] == [10.0, 2.0]


def test_without_netting_sides_are_separate_keys():
    c = Coalescer(CopyConfig(net_opposite_trades=False))
    batches = run(c, [(T0, fill(1)), (T0 + 0.1, fill(2, side=Side.SELL, size=4))], T0 + 5)
    assert [(b.kind, b.net_size) for b in batches] == [("leading", 10.0), ("leading", -4.0)]


def test_fill_by_fill_releases_every_fill():
    c = Coalescer(CopyConfig(copy_mode="fill_by_fill"))
    batches = run(c, [(T0 + i * 0.01, fill(i)) for i in range(4)], T0 + 1)
    assert [b.kind for b in batches] == ["single"] * 4
    assert c.next_deadline() is None


def test_key_goes_quiet_again_after_coalesce_ms():
    c = Coalescer(CopyConfig(coalesce_ms=300))
    assert c.add(fill(1), T0)[0].kind == "leading"
    assert c.add(fill(2), T0 + 0.5)[0].kind == "leading"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.29), st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 50)),
                min_size=5, max_size=40).filter(lambda ev: sum(gap for gap, _, _ in ev[1:]) <= 2.0))
def test_dense_burst_within_two_seconds_gives_at_most_two_batches_preserving_net_size(events):
    """A burst whose fills come less than coalesce_ms apart (as observed on the source) -> leading + one trailing."""
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000))
    timed, t = [], T0
    for i, (gap, side, size) in enumerate(events):
        t += gap if i else 0.0
        timed.append((t, replace(fill(i, side=side, size=float(size)), match_ts=t)))
    batches = run(c, timed, T0 + 60)
    assert len(batches) <= 2
    assert abs(sum(b.net_size for b in batches) - sum(f.side.sign * f.size for _, f in timed)) < 1e-9
    assert sorted(f.dedupe_key for b in batches for f in b.fills) == sorted(f.dedupe_key for _, f in timed)


def test_a_pause_inside_a_burst_defers_the_third_batch_to_the_order_budget():
    """A gap longer than coalesce_ms mid-burst (feed jitter) must not become a third order inside the window."""
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000, burst_window_ms=2000, burst_max_orders=2))
    batches = run(c, [(T0, fill(1)), (T0 + 0.1, fill(2)), (T0 + 1.0, fill(3)), (T0 + 1.2, fill(4))], T0 + 5)
    assert [b.kind for b in batches] == ["leading", "trailing", "trailing"]
    assert [len(b.fills) for b in batches] == [1, 1, 2]
    # The third batch waits until the leading release leaves the 2 s window (and the submit-jitter guard).
    assert abs(batches[2].released_at - (T0 + 2.0 + SUBMIT_GUARD_S)) < 1e-6


def test_a_key_quiet_for_longer_than_the_budget_window_leads_again():
    c = Coalescer(CopyConfig(coalesce_ms=300, burst_window_ms=2000))
    batches = run(c, [(T0, fill(1)), (T0 + 0.1, fill(2)), (T0 + 2.5, fill(3))], T0 + 5)
    assert [b.kind for b in batches] == ["leading", "trailing", "leading"]
    assert batches[2].released_at == T0 + 2.5


def test_without_a_budget_a_quiet_gap_starts_a_new_episode():
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000, burst_window_ms=0))
    batches = run(c, [(T0, fill(1)), (T0 + 0.1, fill(2)), (T0 + 1.0, fill(3))], T0 + 5)
    assert [b.kind for b in batches] == ["leading", "trailing", "leading"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3.0), st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 50),
                          st.sampled_from(["Up", "Down"])), min_size=1, max_size=60),
       st.integers(1, 3))
def test_no_key_ever_releases_more_than_its_budget_in_any_window(events, budget):
    """Any spacing, any sides, two keys: every fill released once, net size kept, <= budget batches per 2 s."""
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000, burst_window_ms=2000, burst_max_orders=budget))
    timed, t = [], T0
    for i, (gap, side, size, outcome) in enumerate(events):
        t += gap
        timed.append((t, fill(i, side=side, size=float(size), outcome=outcome, asset=UP if outcome == "Up" else DOWN)))
    batches = []
    for when, f in timed:
        batches += c.add(f, when)
        while (d := c.next_deadline()) is not None and d < when:    # the pipeline wakes at every deadline
            batches += c.due(d)
    while (d := c.next_deadline()) is not None:
        batches += c.due(d)
    assert sorted(f.dedupe_key for b in batches for f in b.fills) == sorted(f.dedupe_key for _, f in timed)
    for outcome in ("Up", "Down"):
        mine = [b for b in batches if b.outcome == outcome]
        assert abs(sum(b.net_size for b in mine) - sum(f.side.sign * f.size for _, f in timed
                                                        if f.outcome == outcome)) < 1e-6
        instants = sorted(b.released_at for b in mine)
        for i in range(len(instants) - budget):
            assert instants[i + budget] - instants[i] >= 2.0 + SUBMIT_GUARD_S - 1e-6   # epoch floats: ~2e-7 s steps


def test_whole_second_history_widens_the_quiet_window_to_its_resolution():
    c = Coalescer(CopyConfig(coalesce_ms=300, max_hold_ms=2000), time_resolution_s=1.0)
    timed = [(T0, fill(i)) for i in range(3)] + [(T0 + 1, fill(i)) for i in range(3, 6)]
    assert [b.kind for b in run(c, timed, T0 + 10)] == ["leading", "trailing"]


def test_a_batch_that_went_out_late_moves_its_budget_slot():
    """Held for confirmation from T0+0.5 to T0+1.9: the next batch may not go before T0+1.9+2 s (+ the guard)."""
    c = Coalescer(CopyConfig(coalesce_ms=300, burst_window_ms=2000, burst_max_orders=2))
    lead = c.add(fill(1), T0)
    c.add(fill(2), T0 + 0.2)
    [held] = c.due(T0 + 0.5)
    c.postpone(held, T0 + 1.9)
    assert [b.kind for b in c.add(fill(3), T0 + 2.1)] == ["leading"]    # only 1.9 and 2.1 in (0.1, 2.1]
    c.add(fill(4), T0 + 2.5)
    assert lead and abs(c.next_deadline() - (T0 + 1.9 + 2.0 + SUBMIT_GUARD_S)) < 1e-6  # not T0 + 0.5 + 2 s
