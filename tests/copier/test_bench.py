"""The bench's own judgement, on made-up runs: what makes a ramp step fail, how orders are counted per 2 s, what the
scenarios fire, where a profile sample is attributed, how StatsD lines are read."""
import socket
import time
from itertools import pairwise

from helpers import T0

from polylab.bench import (
    StatsdRecorder,
    _most_in_2s,
    plan_bursts,
    plan_mixed,
    plan_trickle,
    profile_summary,
    sustained_ok,
)


def _step(**over) -> dict:
    step = {"target_rate": 200, "fire_rate": 199.0, "missed": 0, "ingest_dropped": 0, "settled": True,
            "ingest_wait_p99_by_third_ms": [2.0, 3.0, 2.5], "ingest_wait_p99_ms": 3.0, "queue_peak_exec": 1,
            "copier_core_share": 0.3}
    step.update(over)
    return step


def test_a_ramp_step_holds_only_when_offered_complete_and_not_backed_up():
    assert sustained_ok(_step()) == (True, "held")
    for bad, why in [({"fire_rate": 150.0}, "offered only"), ({"missed": 1}, "missed 1"),
                     ({"settled": False}, "missed 0"), ({"ingest_wait_p99_by_third_ms": [2.0, 9.0, 80.0]}, "> 50"),
                     ({"queue_peak_exec": 30}, "exec queue"), ({"copier_core_share": 0.95}, "CPU-bound")]:
        ok, reason = sustained_ok(_step(**bad))
        assert not ok and why in reason


def test_orders_per_2s_counts_a_third_order_only_inside_the_window():
    assert _most_in_2s({("c", "Up"): [T0, T0 + 1.2, T0 + 2.0]}) == 2
    assert _most_in_2s({("c", "Up"): [T0, T0 + 1.2, T0 + 1.9995]}) == 3
    assert _most_in_2s({("c", "Up"): [T0, T0 + 1.0], ("c", "Down"): [T0 + 0.5]}) == 2


def test_scenarios_fire_what_they_claim():
    bursts = plan_bursts()
    for b in {burst for _, _, burst in bursts}:
        offsets = [t for t, _, burst in bursts if burst == b]
        assert len(offsets) >= 5 and max(offsets) - min(offsets) < 1.0      # the PRD's burst: >= 5 fills in ~1 s
        assert len({key for _, key, burst in bursts if burst == b}) == 1     # on one outcome
    trickle = plan_trickle()
    per_key = {}
    for t, key, _ in trickle:
        per_key.setdefault(key, []).append(t)
    assert all(b - a > 1.0 for ts in per_key.values() for a, b in pairwise(ts))  # each fill is a leading order
    mixed = plan_mixed()
    assert len({key for t, key, _ in mixed if t < 1.0}) == 4                 # four keys at once


def test_profile_samples_are_attributed_to_the_innermost_known_area(tmp_path):
    folded = tmp_path / "p.folded"
    folded.write_text(
        "run (gevent/hub.py:1);_executor_loop (copier/runtime.py:2);submit (copier/executor.py:3);"
        "sign_order (copier/signing.py:4);keccak (eth_utils/crypto.py:5) 30\n"
        "run (gevent/hub.py:1);_executor_loop (copier/runtime.py:2);submit (copier/executor.py:3);"
        "record_signed (copier/store.py:6);execute_sql (peewee.py:7) 10\n"
        "run (copier/wsfeed.py:1);_on_frame (copier/watcher.py:2);parse_rtds_frame (copier/schemas.py:3);"
        "loads (json/__init__.py:4) 50\n"
        "run (gevent/hub.py:1) 10\n")
    text = profile_summary(folded)
    assert "100 samples" in text
    assert " 50.0%  parse" in text and " 30.0%  signing" in text and " 10.0%  sqlite" in text
    assert " 10.0%  gevent hub" in text
    submit = text.split("inside ClobExecutor.submit")[1].split("top ")[0]
    assert " 30.0%  signing" in submit and " 10.0%  sqlite" in submit and "parse" not in submit


def test_statsd_lines_are_read_by_kind_and_arrival_window():
    rec = StatsdRecorder()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.time()
    sock.sendto(b"copier.stage.sign_ms:0.250000|ms\ncopier.queue_peak.ingest:3|g\ncopier.x:2|c\ncopier.x:1|c",
                ("127.0.0.1", rec.port))
    deadline = time.monotonic() + 5
    while len(rec.lines) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    timings, gauges, counters = rec.window(t0 - 1, time.time() + 1)
    assert [v for _, v in timings["stage.sign_ms"]] == [0.25]
    assert [v for _, v in gauges["queue_peak.ingest"]] == [3.0] and counters == {"x": 3.0}
    assert rec.window(t0 - 10, t0 - 5) == ({}, {}, {})
    sock.close()
    rec.close()
