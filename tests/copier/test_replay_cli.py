"""`copier replay` and the CLI as a real subprocess: the acceptance lines of the copier issue."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

PAYLOADS = Path(__file__).parents[1] / "payloads" / "polymarket"
SOURCE = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
EVENT = json.loads((PAYLOADS / "gamma_event_btc_updown_15m_trimmed_fixture.json").read_text())
START = 1774278900          # the fixture's window start; it ends 900 s later
CID = EVENT["markets"][0]["conditionId"]


def copier(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "copier", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def row(n, t, side="BUY", size=10, price=0.5, asset="up-token", outcome="Up"):
    return {"proxyWallet": SOURCE, "side": side, "asset": asset, "conditionId": CID, "size": size, "price": price,
            "timestamp": t, "outcome": outcome, "outcomeIndex": 0, "transactionHash": f"0x{n:064x}"}


def replay(tmp_path, rows, config=None, jsonl=False):
    fills = tmp_path / ("fills.jsonl" if jsonl else "fills.json")
    fills.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows))
    markets = tmp_path / "markets.json"
    markets.write_text(json.dumps(EVENT))
    args = ["replay", "--fills", str(fills), "--markets", str(markets)]
    if config:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    out = copier(*args)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_burst_of_six_within_1_5s_gives_at_most_two_orders_summing_to_the_intended_size(tmp_path):
    rows = [row(i, START + 100 + (0 if i < 3 else 1), size=10) for i in range(6)]     # whole-second timestamps
    lines = replay(tmp_path, rows)
    orders = [d for d in lines if d["action"] == "order"]
    assert len(orders) <= 2 and len(lines) == len(orders)
    assert abs(sum(o["size"] for o in orders) - 60.0) < 1e-9          # 60 shares x 0.50 cap = 30 USD <= caps
    assert sorted(k for o in orders for k in o["fills"]) == sorted(
        f"0x{i:064x}:up-token:BUY:0.5:10:0" for i in range(6))
    assert all(o["notional_usd"] <= 25.0 for o in orders)


def test_opposite_fill_inside_the_window_is_netted(tmp_path):
    rows = [row(1, START + 100), row(2, START + 100, size=20), row(3, START + 100, side="SELL", size=15)]
    orders = [d for d in replay(tmp_path, rows, jsonl=True) if d["action"] == "order"]
    assert [o["size"] for o in orders] == [10.0, 5.0]               # leading 10, then +20 -15 netted to 5


def test_fill_ten_seconds_before_the_end_is_skipped_naming_the_cutoff(tmp_path):
    (line,) = replay(tmp_path, [row(1, START + 890)])
    assert line["action"] == "skip" and "near_expiry_cutoff" in line["reason"]


def test_no_cap_is_ever_exceeded_over_a_long_history(tmp_path):
    rows = [row(i, START + 10 + i * 3, size=40 + (i % 7) * 10, price=0.3 + (i % 5) * 0.1) for i in range(200)]
    cfg = "sizing:\n  max_notional_per_order_usd: 20\n  max_notional_per_market_usd: 100\n"
    lines = replay(tmp_path, rows, config=cfg)
    orders = [d for d in lines if d["action"] == "order"]
    assert orders and all(o["notional_usd"] <= 20 + 1e-9 for o in orders)
    assert sum(o["notional_usd"] for o in orders) <= 100 + 1e-9
    assert any("max_notional_per_market" in d["reason"] for d in lines if d["action"] == "skip")


def test_check_config_names_a_misspelled_key_and_exits_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("copy:\n  coalesce_msec: 300\n")
    out = copier("check-config", "--config", str(cfg))
    assert out.returncode == 2 and "copy.coalesce_msec: unknown key" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", [["halt", "--reason", "maintenance"], ["resume"]])
def test_halt_and_resume_persist_in_the_store(tmp_path, cmd):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store:\n  path: {tmp_path / 's.sqlite'}\n")
    assert copier(*cmd, "--config", str(cfg)).returncode == 0
    status = json.loads(copier("status", "--config", str(cfg), "--json").stdout)
    assert status["halted"] is (cmd[0] == "halt")
