import json
import signal
import subprocess
import sys

import pytest

SOURCE = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    gt = tmp_path_factory.mktemp("sim") / "ground_truth.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "polysim.cli", "serve", "--speed", "4", "--seed", "5",
                             "--ground-truth", str(gt), "--rtds-delay", "0.3", "--data-api-delay", "0.5",
                             "--data-api-cache", "0"],
                            stdout=subprocess.PIPE)
    urls = json.loads(proc.stdout.readline())
    urls["ground_truth_path"] = gt
    yield urls
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
