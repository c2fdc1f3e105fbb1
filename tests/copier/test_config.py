import dataclasses
import os
import subprocess
import sys

import pytest

from copier.config import Config, load_config, load_secrets, parse_config, polygon_ws
from copier.errors import ConfigError

PRD_EXAMPLE = """
copy:
  source_wallet: "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
  copy_mode: "intent_net"
  coalesce_ms: 300
  net_opposite_trades: true
sizing:
  mode: "capped_proportional"
  size_multiplier: 1.0
  min_order_notional_usd: 1
  max_notional_per_order_usd: 25
  max_notional_per_market_usd: 150
  max_total_notional_per_15m_window_usd: 400
execution:
  order_type: "marketable_limit"
  max_slippage_bps: 120
  near_expiry_cutoff_seconds: 25
  dry_run: true
"""


def test_config_prd_example_parses_to_frozen_defaults(tmp_path):
    # Arrange
    path = tmp_path / "c.yaml"
    path.write_text(PRD_EXAMPLE)
    # Act
    cfg = load_config(path)
    # Assert
    assert cfg.sizing.max_notional_per_order_usd == 25.0
    assert cfg.copy.coalesce_ms == 300
    assert cfg.execution.dry_run is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.copy.coalesce_ms = 5  # frozen


@pytest.mark.parametrize("data, key", [
    ({"sizing": {"max_notional_per_ordr_usd": 3}}, "sizing.max_notional_per_ordr_usd"),
    ({"copyy": {}}, "copyy"),
    ({"copy": {"coalesce_ms": "fast"}}, "copy.coalesce_ms"),
    ({"copy": {"copy_mode": "mirror"}}, "copy.copy_mode"),
    ({"copy": {"source_wallet": "0x123"}}, "copy.source_wallet"),
    ({"execution": {"dry_run": "yes"}}, "execution.dry_run"),
    ({"sizing": {"max_notional_per_order_usd": -1}}, "sizing.max_notional_per_order_usd"),
    ({"sizing": {"min_order_notional_usd": 30}}, "sizing.min_order_notional_usd"),
    ({"account": {"signature_type": 3}}, "account.funder"),
    ({"endpoints": {"rtds_ws": "http://x"}}, "endpoints.rtds_ws"),
    ({"sizing": {"exit_rule": "all"}}, "sizing.exit_rule"),
    ({"positions": {"reconcile_interval_s": 0}}, "positions.reconcile_interval_s"),
    ({"positions": {"drift_tolerance_shares": float("nan")}}, "positions.drift_tolerance_shares"),
    ({"positions": {"reconcile_grace_s": -1}}, "positions.reconcile_grace_s"),
    ({"positions": {"snapshot_interval_s": 1e9}}, "positions.snapshot_interval_s"),
])
def test_parse_config_bad_value_raises_naming_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value).startswith(key + ":")
    assert "\n" not in str(err.value)


def test_load_secrets_env_file_world_readable_refused(tmp_path):
    env = tmp_path / "copier.env"
    env.write_text("POLY_PRIVATE_KEY=" + "ab" * 32 + "\n")
    os.chmod(env, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secrets(Config(), environ={}, env_file=str(env))


def test_load_secrets_repr_hides_values(tmp_path):
    env = tmp_path / "copier.env"
    key = "cd" * 32
    env.write_text(f"POLY_PRIVATE_KEY={key}\nSENTRY_DSN=http://k@127.0.0.1:1/1\n")
    os.chmod(env, 0o600)
    secrets = load_secrets(Config(), environ={}, env_file=str(env))
    assert secrets.private_key == key
    assert key not in repr(secrets)


def test_load_secrets_live_mode_without_key_raises():
    cfg = parse_config({"execution": {"dry_run": False}})
    with pytest.raises(ConfigError, match="^POLY_PRIVATE_KEY:"):
        load_secrets(cfg, environ={})


def test_chain_feeds_need_a_node_url_from_the_config_or_the_environment():
    cfg = parse_config({"feeds": {"use_chain_logs": True}})
    with pytest.raises(ConfigError, match="^endpoints.polygon_ws:"):
        load_secrets(cfg, environ={})
    url = "wss://polygon.example/v2/provider-key-123"
    secrets = load_secrets(cfg, environ={"POLYGON_WS_URL": url})
    assert polygon_ws(cfg, secrets) == url and url in secrets.values() and url not in repr(secrets)
    with pytest.raises(ConfigError, match="^POLYGON_WS_URL:"):
        load_secrets(cfg, environ={"POLYGON_WS_URL": "https://not-a-websocket"})


def test_cli_check_config_misspelled_key_exits_2_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(PRD_EXAMPLE.replace("coalesce_ms", "coalese_ms"))
    proc = subprocess.run([sys.executable, "-m", "copier", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "copy.coalese_ms: unknown key" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_check_config_valid_exits_0(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(PRD_EXAMPLE)
    proc = subprocess.run([sys.executable, "-m", "copier", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "POLY_PRIVATE_KEY": ""})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("data,key", [
    ({"redeem": {"interval_s": 0.5}}, "redeem.interval_s"),
    ({"redeem": {"max_per_batch": 0}}, "redeem.max_per_batch"),
    ({"redeem": {"max_failures": 0}}, "redeem.max_failures"),
    ({"redeem": {"merge_full_sets": "yes"}}, "redeem.merge_full_sets"),
    ({"redeem": {"merge_min_sets": 0}}, "redeem.merge_min_sets"),
    ({"redeem": {"max_fee_gwei": -1}}, "redeem.max_fee_gwei"),
    ({"redeem": {"gas_limit_margin": 0.9}}, "redeem.gas_limit_margin"),
    ({"redeem": {"relayer_deadline_s": 10}}, "redeem.relayer_deadline_s"),
    ({"redeem": {"lookback_hours": 0}}, "redeem.lookback_hours"),
    ({"redeem": {"unknown": 1}}, "redeem.unknown"),
    ({"endpoints": {"polygon_rpc": "ws://node"}}, "endpoints.polygon_rpc"),
    ({"endpoints": {"relayer": "relayer.example"}}, "endpoints.relayer"),
])
def test_parse_config_bad_redeem_value_raises_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        parse_config(data)


KEY_HEX = "ab" * 32


def test_live_redemption_needs_a_json_rpc_url_and_for_a_deposit_wallet_relayer_credentials():
    live = parse_config({"execution": {"dry_run": False}})
    with pytest.raises(ConfigError, match="^endpoints.polygon_rpc:"):
        load_secrets(live, environ={"POLY_PRIVATE_KEY": KEY_HEX})
    url = "https://polygon.example/v2/provider-key-456"
    secrets = load_secrets(live, environ={"POLY_PRIVATE_KEY": KEY_HEX, "POLYGON_RPC_URL": url})
    assert url in secrets.values() and url not in repr(secrets)
    assert load_secrets(parse_config({"execution": {"dry_run": False}, "redeem": {"enabled": False}}),
                        environ={"POLY_PRIVATE_KEY": KEY_HEX}).private_key == KEY_HEX
    assert load_secrets(parse_config({}), environ={}).polygon_rpc_url == ""          # dry run needs nothing
    dw = parse_config({"execution": {"dry_run": False}, "account": {"signature_type": 3, "funder": "0x" + "d1" * 20},
                       "endpoints": {"polygon_rpc": "http://127.0.0.1:8545"}})
    with pytest.raises(ConfigError, match="^RELAYER_API_KEY:"):
        load_secrets(dw, environ={"POLY_PRIVATE_KEY": KEY_HEX})
    with pytest.raises(ConfigError, match="^RELAYER_API_KEY:"):
        load_secrets(dw, environ={"POLY_PRIVATE_KEY": KEY_HEX, "RELAYER_API_KEY": "k",
                                  "RELAYER_API_KEY_ADDRESS": "not-an-address"})
    secrets = load_secrets(dw, environ={"POLY_PRIVATE_KEY": KEY_HEX, "RELAYER_API_KEY": "relayer-secret-1",
                                        "RELAYER_API_KEY_ADDRESS": "0x" + "d1" * 20})
    assert "relayer-secret-1" in secrets.values() and "relayer-secret-1" not in repr(secrets)


def test_config_warns_that_proxy_and_safe_wallets_are_not_redeemed():
    from copier.config import warnings
    cfg = parse_config({"account": {"signature_type": 2, "funder": "0x" + "d1" * 20}})
    assert any(line.startswith("redeem.enabled: signature type 2") for line in warnings(cfg))
    assert not any("redeem" in line for line in warnings(parse_config({})))
