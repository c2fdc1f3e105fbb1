"""polysim's geoblock surface: the recorded answer's shape, and a control that makes it answer "blocked"."""
import httpx
import pytest
from conftest import payload


def test_geoblock_answers_the_recorded_shape_not_blocked_by_default(sim):
    answer = httpx.get(sim["geoblock"], timeout=5).json()
    recorded = payload("geoblock_response.json")
    assert list(answer) == list(recorded)
    assert {k: type(v) for k, v in answer.items()} == {k: type(v) for k, v in recorded.items()}
    assert answer["blocked"] is False and answer["ip"] == "127.0.0.1"


def test_geoblock_control_makes_it_answer_blocked_then_allowed_again(sim):
    control = f"{sim['control']}/geoblock"
    try:
        r = httpx.post(control, json={"blocked": True, "country": "US", "region": "NY"}, timeout=5)
        assert r.status_code == 200
        assert httpx.get(sim["geoblock"], timeout=5).json() == {"blocked": True, "ip": "127.0.0.1", "country": "US",
                                                                 "region": "NY"}
    finally:
        httpx.post(control, json={"blocked": False, "country": "NL", "region": "NH"}, timeout=5)
    assert httpx.get(sim["geoblock"], timeout=5).json()["blocked"] is False


@pytest.mark.parametrize("body", [b"not json", b'{"blocked": "yes"}', b"[true]", b'{"blocked": true, "country": 7}'])
def test_geoblock_control_bad_request_is_400_and_changes_nothing(sim, body):
    r = httpx.post(f"{sim['control']}/geoblock", content=body, timeout=5)
    assert r.status_code == 400 and "bad geoblock request" in r.json()["error"]
    assert httpx.get(sim["geoblock"], timeout=5).json()["blocked"] is False
