# The hostile peers (tests/e2e/hostile.py) are gevent servers in this process: the waits between checks must let
# them run, as the copier's own package makes sure when it is imported.
from gevent import monkey

monkey.patch_all()

import pytest  # noqa: E402  (after the patch, on purpose)

from polylab.harness import SimProcess  # noqa: E402

SPEED = 6.0         # 150-second market windows: several rotations per session, rarely an expiry mid-test


@pytest.fixture()
def sim(tmp_path):
    s = SimProcess(tmp_path / "sim", speed=SPEED, seed=11)
    yield s
    s.stop()
