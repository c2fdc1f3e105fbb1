"""`copier replay` decides what `copier run` decided: one history (a burst, netting inside a trailing batch, fills
first seen unconfirmed in the mempool, a market outside the listed ones) through a running copier in dry run against
the simulator, then its recorded arrivals through `copier replay --recorded`: identical decisions."""
import json
import signal
import time

from copier.replay import decision_lines
from copier.store import Store
from polylab.harness import copier_config, eventually, run_copier, start_copier, write_config


def _report(config) -> dict:
    out = run_copier("report", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _started(config) -> bool:
    out = run_copier("status", "--config", str(config), "--json")
    return out.returncode == 0 and json.loads(out.stdout).get("heartbeat") is not None


def _history(sim) -> list[dict]:
    sent = []

    def fill(asset, outcome, side, size, pause):
        sent.append(sim.source_fill(asset=asset, outcome=outcome, side=side, size=size))
        time.sleep(pause)

    for _ in range(5):                                       # a dense burst: a leading order, then a trailing one
        fill("btc", "Up", "BUY", 6, 0.06)
    time.sleep(2.5)
    fill("btc", "Down", "BUY", 10, 0.05)                     # leads at once
    fill("btc", "Down", "BUY", 12, 0.05)                     # these two net to a BUY of 8 in the trailing batch
    fill("btc", "Down", "SELL", 4, 2.5)
    fill("eth", "Up", "BUY", 7, 0.5)                         # eth is not listed: refused, in both
    return sent


def test_replay_of_a_runs_recorded_arrivals_makes_the_same_decisions(sim, tmp_path):
    db = tmp_path / "copier.sqlite"
    cfg = copier_config(sim.urls, db, speed=900 / sim.window_s,
                        overrides={"markets": {"slug_prefixes": ["btc-updown-15m"], "only_listed": True}})
    config = write_config(tmp_path / "copier.yaml", cfg)
    proc = start_copier(config, tmp_path / "copier.log")
    try:
        eventually(lambda: _started(config), 30, 0.3, "copier heartbeat")
        sim.fresh_window(40)
        sent = _history(sim)
        n = sum(len(s["fills"]) for s in sent)
        eventually(lambda: _report(config)["source_fills"] >= n, 40, 0.5, "every fill decided")
        time.sleep(3)                                       # late sightings (RTDS, gap-fill) recorded too
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    slugs = {s["slug"] for s in sent}
    markets = tmp_path / "markets.jsonl"
    markets.write_text("".join(json.dumps(sim.http.get(f"{sim.urls['gamma']}/events/slug/{slug}")
                                          .json()) + "\n" for slug in slugs))
    out = run_copier("replay", "--recorded", str(db), "--markets", str(markets), "--config", str(config))
    assert out.returncode == 0, out.stderr
    replayed = [json.loads(line) for line in out.stdout.splitlines()]
    live = Store.open(str(db))
    try:
        ran = decision_lines(live)
        mempool_first = sum(1 for s in live.sightings_since(0) if s["first"] and s["feed"] == "chain.mempool")
    finally:
        live.close()
    assert mempool_first >= 5, "the history had no unconfirmed first sightings"
    assert {d["reason"].split(":")[0] for d in ran if d["action"] == "skip"} >= {"unknown_market"}
    assert len([d for d in ran if d["action"] == "order"]) >= 4

    def decisions(lines):            # every field but the instant (run decides a few hundred us after arrival)
        return [{k: v for k, v in d.items() if k != "t"} for d in lines]
    assert decisions(replayed) == decisions(ran)
