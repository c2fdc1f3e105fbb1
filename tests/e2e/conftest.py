import pytest

from polylab.harness import SimProcess

SPEED = 6.0         # 150-second market windows: several rotations per session, rarely an expiry mid-test


@pytest.fixture()
def sim(tmp_path):
    s = SimProcess(tmp_path / "sim", speed=SPEED, seed=11)
    yield s
    s.stop()
