import gc

import gevent
from helpers import RecordingMetrics

from copier.process import Census


def test_census_counts_greenlets_spawned_after_start_and_forgets_finished_ones():
    census = Census()
    gevent.sleep(0)                            # the hub exists before the count starts
    before = census.greenlets()
    blockers = [gevent.spawn(gevent.sleep, 30) for _ in range(7)]
    gevent.sleep(0)
    assert census.greenlets() == before + 7
    gevent.killall(blockers)
    assert census.greenlets() == before


def test_census_still_counts_greenlets_the_freeze_hid_from_the_collector():
    census = Census()
    held = [gevent.spawn(gevent.sleep, 30) for _ in range(3)]
    gevent.sleep(0)
    expected = census.greenlets()
    census.before_freeze()
    gc.freeze()
    try:
        assert census.greenlets() == expected
        held[0].kill()
        assert census.greenlets() == expected - 1
    finally:
        gc.unfreeze()
        gevent.killall(held)


def test_census_gauges_memory_fds_and_greenlets_of_this_process():
    metrics = RecordingMetrics()
    census = Census()
    with open("/dev/null") as _:
        census.gauge(metrics)
        gauges = metrics.gauges
    assert gauges["process.rss_bytes"] > 10 * 2**20
    assert gauges["process.fds"] >= 4          # stdin, stdout, stderr and the file opened here
    assert gauges["process.greenlets"] >= 1
