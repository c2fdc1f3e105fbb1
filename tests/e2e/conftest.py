import pytest

from copier.harness import SimProcess


@pytest.fixture()
def sim(tmp_path):
    s = SimProcess(tmp_path / "sim", speed=15.0, seed=11)
    yield s
    s.stop()
