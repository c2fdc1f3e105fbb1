"""The makers' quoting rules (pure) and the liquidity model's calibration against the recorded books."""
import dataclasses
import math
import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from polysim import calibrate
from polysim.book import UNIT
from polysim.makers import NOT_AGAIN, Desk, Seen, ladder, order_size, plan, requote_delay
from polysim.scenario import Background, Scenario

TICK = 10_000                   # 0.01 in micro-units


@settings(max_examples=300, deadline=None)
@given(fair=st.floats(0.0, 1.0), tick=st.sampled_from([10_000, 1_000]), levels=st.integers(1, 12))
def test_ladder_any_fair_one_tick_spread_one_tick_apart_inside_the_price_range(fair, tick, levels):
    bids, asks = ladder(fair, tick, levels)
    assert bids and asks and asks[0] - bids[0] == tick
    assert all(a - b == tick for a, b in pairwise(bids))
    assert all(b - a == tick for a, b in pairwise(asks))
    assert 0 < min(bids) and max(asks) < UNIT and len(bids) <= levels and len(asks) <= levels
    if tick <= fair * UNIT < UNIT - tick:                     # away from the edges the spread brackets the fair
        assert bids[0] <= round(fair * UNIT) < asks[0]


def test_plan_a_taken_maker_posts_again_only_at_its_deadline_and_informed_takes_never_on_that_level():
    bids, asks = [500_000, 490_000], [510_000, 520_000]
    present = {(True, p, k) for p in bids for k in range(2)} | {(False, 520_000, k) for k in range(2)}
    refill = {(False, 510_000, 0): 10.0, (False, 510_000, 1): NOT_AGAIN}
    cancel, post, forget = plan(bids, asks, 2, present, refill, now=9.99)
    assert cancel == [] and post == [] and forget == []
    _, post, _ = plan(bids, asks, 2, present, refill, now=10.0)
    assert post == [((False, 510_000, 0), 0)]
    _, post, _ = plan(bids, asks, 2, present, refill, now=1e9)
    assert (False, 510_000, 1) not in [slot for slot, _ in post]
    # The ladder moves up a tick: the old best ask is off it, its deadlines are forgotten, its orders cancelled.
    cancel, post, forget = plan([510_000, 500_000], [520_000, 530_000], 2, present, refill, now=1e9)
    assert sorted(forget) == sorted(refill) and set(cancel) == {(True, 490_000, 0), (True, 490_000, 1)}
    assert {slot for slot, _ in post} == {(True, 510_000, 0), (True, 510_000, 1), (False, 530_000, 0),
                                          (False, 530_000, 1)}


def test_desk_informed_flow_counts_only_once_seen_and_moves_past_the_level_it_emptied():
    desk = Desk(base=0.505)
    desk.unseen = [Seen(at=5.0, shift=0.001, buy=True, emptied=0.52), Seen(at=3.0, shift=0.001, buy=True)]
    desk.catch_up(2.9, base=0.505)
    assert desk.impact == 0.0
    desk.catch_up(3.0, base=0.505)
    assert math.isclose(desk.impact, 0.001) and len(desk.unseen) == 1
    desk.catch_up(5.0, base=0.505)
    assert ladder(0.505 + desk.impact, TICK, 1) == ([520_000], [530_000])     # the emptied ask is now the bid
    desk.unseen = [Seen(at=6.0, shift=-0.0001, buy=False, emptied=0.47)]
    desk.catch_up(6.0, base=0.505)
    assert ladder(0.505 + desk.impact, TICK, 1) == ([460_000], [470_000])     # the emptied bid is now the ask


def test_desk_refill_deadlines_pass_but_not_again_stays():
    desk = Desk(base=0.5)
    desk.refill_at = {(False, 510_000, 0): 4.0, (False, 510_000, 1): NOT_AGAIN}
    desk.catch_up(4.0, base=0.5)
    assert desk.refill_at == {(False, 510_000, 1): NOT_AGAIN}


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), floor=st.floats(0.0, 3.0), mean=st.floats(0.0, 5.0))
def test_requote_delay_never_below_its_floor(seed, floor, mean):
    cfg = Background(requote_min_s=floor, requote_mean_s=mean)
    rng = random.Random(seed)
    assert all(requote_delay(rng, cfg) >= floor for _ in range(200))


def test_requote_delay_mean_is_floor_plus_mean_and_sizes_stay_in_their_ranges():
    cfg = Background()
    rng = random.Random(3)
    delays = [requote_delay(rng, cfg) for _ in range(20_000)]
    assert abs(sum(delays) / len(delays) - (cfg.requote_min_s + cfg.requote_mean_s)) < 0.1
    k = cfg.makers_per_level
    touch = [order_size(rng, 0, cfg) for _ in range(2000)]
    behind = [order_size(rng, 3, cfg) for _ in range(2000)]
    assert cfg.touch_size[0] / k - 0.01 <= min(touch) and max(touch) <= cfg.touch_size[1] / k + 0.01
    assert cfg.maker_size[0] / k - 0.01 <= min(behind) and max(behind) <= cfg.maker_size[1] / k + 0.01


def test_calibration_default_books_match_the_recorded_spread_and_depth():
    stats = calibrate.measure(Scenario(), 300)
    assert stats.samples > 1000
    assert stats.spread_ticks.get(1, 0) >= 0.65                              # recorded: 8 of 10 books
    q1, q3 = calibrate.RECORDED_TOUCH_QUARTILES[0], calibrate.RECORDED_TOUCH_QUARTILES[2]
    assert q1 <= stats.touch_quartiles[1] <= q3
    q1, q3 = calibrate.RECORDED_BEHIND_QUARTILES[0], calibrate.RECORDED_BEHIND_QUARTILES[2]
    assert q1 <= stats.behind_quartiles[1] <= q3
    for t, (lo, hi) in calibrate.RECORDED_RECOVERY.items():                  # the re-quote delay distribution
        assert lo - 0.05 <= calibrate.requote_cdf(Background(), t) <= hi + 0.05, t


def test_calibration_slow_makers_leave_the_spread_wide():
    """The calibration check can fail: makers ten times slower no longer keep a one-tick spread."""
    slow = Scenario(background=dataclasses.replace(Background(), requote_mean_s=22.0))
    assert calibrate.measure(slow, 300).spread_ticks.get(1, 0) < 0.5
