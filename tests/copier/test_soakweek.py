"""The week soak's growth verdicts, on samples made up to pass or fail each one."""
from polylab.soakweek import Sample, growth_verdict


def _samples(days=7, rss_mib=90.0, rss_growth_per_day=0.0, sightings_growth=0):
    out = []
    for h in range(1, days * 24 + 1):
        day = (h - 1) // 24
        rss = int((rss_mib + rss_growth_per_day * day) * 2**20)
        out.append(Sample(sim_hour=h, wall_s=h * 16.0, pid=1, rss_bytes=rss, fds=30, greenlets=40.0,
                          store_bytes=100_000 + 3_000 * 120 * h,
                          sightings=min(h, 48) * 500 + max(0, h - 48) * sightings_growth, db_bytes=0, wal_bytes=0,
                          log_bytes=0, statsd_pps=20.0, fills=120 * h, cpu_ms_per_fill=20.0))
    return out


def _hours(first_ms=10.0, last_ms=10.0, days=7):
    return {h: {"leading_ms": [first_ms if h <= 24 else last_ms if h > (days - 1) * 24 else 5.0] * 30,
                "fill_ms": [], "intended": 1.0, "filled": 1.0} for h in range(1, days * 24 + 1)}


def test_a_steady_week_passes_every_growth_verdict():
    growth, problems = growth_verdict(_samples(), _hours(), 7)
    assert problems == {} and growth["store_r2"] == 1.0 and growth["sightings"] == (24_000, 24_000)


def test_memory_that_grows_a_fifth_over_the_week_fails():
    _, problems = growth_verdict(_samples(rss_growth_per_day=3.0), _hours(), 7)
    assert list(problems) == ["rss_growth"]


def test_a_slower_last_day_fails_and_a_faster_one_passes():
    assert list(growth_verdict(_samples(), _hours(10.0, 12.5), 7)[1]) == ["leading_p99_drift"]
    assert growth_verdict(_samples(), _hours(10.0, 7.5), 7)[1] == {}


def test_sightings_that_keep_growing_past_the_horizon_fail():
    _, problems = growth_verdict(_samples(sightings_growth=500), _hours(), 7)
    assert list(problems) == ["sightings_not_flat"]


def test_a_run_shorter_than_the_retention_horizon_is_not_judged_on_the_store():
    growth, problems = growth_verdict(_samples(days=2), _hours(days=2), 2)
    assert problems == {} and growth["store_r2"] is None and growth["sightings"] is None
