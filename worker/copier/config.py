"""One frozen, typed configuration, validated once at start-up.

The YAML has exactly the PRD section-11 shape (copy, sizing, execution) plus the sections an operator needs
(risk, markets, feeds, endpoints, account, telemetry, store). Secrets never come from the YAML: they are read from
the environment into `Secrets`, whose repr hides them. Every problem raises ConfigError with one line naming the key.
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from copier.errors import ConfigError

_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class CopyConfig:
    source_wallet: str = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
    copy_mode: str = "intent_net"             # intent_net | fill_by_fill
    coalesce_ms: int = 300                    # quiet time that closes a trailing batch
    max_hold_ms: int = 2000                   # a trailing batch is released at the latest this long after its
                                              #   first fill
    net_opposite_trades: bool = True
    burst_window_ms: int = 2000               # order budget per (market, outcome): at most burst_max_orders orders
    burst_max_orders: int = 2                 #   in any burst_window_ms, however the feed spaces a burst's fills
    max_signal_age_s: float = 30.0            # older source fills (e.g. gap-filled after a long outage) are not copied


@dataclass(frozen=True)
class SizingConfig:
    mode: str = "capped_proportional"         # fixed | proportional | capped_proportional
    size_multiplier: float = 1.0
    fixed_notional_usd: float = 5.0           # per intent, for mode=fixed
    min_order_notional_usd: float = 1.0
    max_notional_per_order_usd: float = 25.0
    max_notional_per_market_usd: float = 150.0
    max_total_notional_per_15m_window_usd: float = 400.0
    size_tolerance: float = 0.05              # burst acceptance: |our net - intended net| / intended net
    exit_rule: str = "fraction"               # fraction: a source SELL of x% of its position sells x% of ours |
                                              #   size: the source's shares, sized like a BUY (capped by our position)


@dataclass(frozen=True)
class ExecutionConfig:
    order_type: str = "marketable_limit"      # marketable_limit (FAK with a price cap)
    max_slippage_bps: int = 120
    max_slippage_ticks: int = 0               # the budget is the larger of bps and this many ticks (0: bps alone)
    max_book_age_s: float = 5.0               # an older book is not trusted: the order is priced at the budget's edge
    max_remainder_orders: int = 1             # after a killed or partly filled FAK: more orders for what is left
    near_expiry_cutoff_seconds: float = 25.0
    dry_run: bool = True
    max_post_attempts: int = 10               # same signed bytes each time; backoff doubles from retry_backoff_s to 1 s
    retry_budget_s: float = 6.0               # no new attempt after this long: a venue outage outlives the signal
    post_timeout_s: float = 2.0
    retry_backoff_s: float = 0.05
    max_retry_after_s: float = 5.0            # longer Retry-After: give up on that order (the signal goes stale)
    executor_concurrency: int = 8
    order_horizon_s: float = 120.0            # an order the venue neither knows nor traded this long after signing
                                              #   is FAILED; until then it stays UNKNOWN (reserved, asked again)


@dataclass(frozen=True)
class RiskConfig:
    max_daily_notional_usd: float = 2000.0    # UTC day (a day of markets in a faster simulator), filled + in flight
    breaker_window_s: float = 60.0
    breaker_max_error_rate: float = 0.5       # failed / submitted orders in the window
    breaker_min_orders: int = 6               # no verdict on fewer orders than this
    breaker_max_p95_ms: float = 800.0         # ingest -> submit p95 in the window


@dataclass(frozen=True)
class MarketsConfig:
    slug_prefixes: tuple[str, ...] = ("btc-updown-15m", "eth-updown-15m", "sol-updown-15m", "xrp-updown-15m")
    window_seconds: int = 900
    warm_windows_ahead: int = 1               # warm the current window and this many next ones
    refresh_s: float = 20.0
    only_listed: bool = False                 # True: ignore fills on markets outside slug_prefixes


@dataclass(frozen=True)
class FeedsConfig:
    rtds_standby: bool = True                 # a hot-standby second RTDS socket
    ping_interval_s: float = 5.0
    data_watchdog_s: float = 15.0             # reconnect a socket silent this long
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 5.0
    gap_fill: bool = True
    gap_fill_page_limit: int = 500
    gap_fill_overlap_s: float = 10.0          # re-read this much before the durable cursor
    use_chain_logs: bool = False
    use_mempool: bool = False
    mempool_may_trigger: bool = True          # unconfirmed mempool fills may trigger the leading order
    confirm_timeout_s: float = 20.0           # a mempool fill no other feed confirms by then is retracted
    reinclude_timeout_s: float = 20.0         # a fill whose log a reorg removed is retracted unless re-included by then


@dataclass(frozen=True)
class EndpointsConfig:
    clob: str = "https://clob.polymarket.com"
    rtds_ws: str = "wss://ws-live-data.polymarket.com"
    market_ws: str = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    user_ws: str = "wss://ws-subscriptions-clob.polymarket.com/ws/user"
    data_api: str = "https://data-api.polymarket.com"
    gamma: str = "https://gamma-api.polymarket.com"
    polygon_ws: str = ""
    geoblock: str = "https://polymarket.com/api/geoblock"   # asked before a live start: the venue's verdict on our IP
    polygon_rpc: str = ""                     # JSON-RPC over HTTP(S): balances, resolutions, redemptions (EOA)
    relayer: str = "https://relayer-v2.polymarket.com"     # deposit-wallet redemptions (signature type 3)
    chain_id: int = 137


@dataclass(frozen=True)
class AccountConfig:
    signature_type: int = 0                   # 0 EOA, 1 POLY_PROXY, 2 POLY_GNOSIS_SAFE, 3 POLY_1271 (deposit wallet)
    funder: str = ""                          # address holding the funds; empty = the signer's address


@dataclass(frozen=True)
class TelemetryConfig:
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 8125
    statsd_prefix: str = "copier"
    log_level: str = "INFO"
    ntp_server: str = "127.0.0.1"             # the chronyd whose tracking state is read (chronyc -h); "" = no check
    ntp_check_interval_s: float = 30.0
    max_clock_offset_ms: float = 100.0        # alert when chronyd's error bound on the clock exceeds this
    max_unsynchronised_s: float = 300.0       # refuse new orders once the clock has been untrusted this long
    process_interval_s: float = 60.0          # resident memory, open fds and live greenlets gauged this often


@dataclass(frozen=True)
class RedeemConfig:
    enabled: bool = True                      # redeem resolved winning positions automatically (live only)
    interval_s: float = 30.0                  # the periodic pass; `market_resolved` triggers one within a second
    lookback_hours: float = 72.0              # markets bought in this long ago are checked on chain
    max_per_batch: int = 10                   # calls per pass (EOA: one transaction each; relayer: one batch)
    max_failures: int = 3                     # failed redemptions of one market before it is left to the operator
    merge_full_sets: bool = False             # merge full sets (one of each outcome) of open markets back to pUSD
    merge_min_sets: float = 1.0               # ... when at least this many sets are held
    max_fee_gwei: float = 500.0               # EOA: no redemption is sent while gas costs more than this
    gas_limit_margin: float = 1.3             # EOA: gas limit = estimate x this
    relayer_deadline_s: float = 600.0         # a relayer batch's signed deadline
    stuck_alert_s: float = 600.0              # alert for a redemption still unresolved this long after signing


@dataclass(frozen=True)
class PositionsConfig:
    reconcile_interval_s: float = 60.0        # our positions vs the Data API positions endpoint for our address
    drift_tolerance_shares: float = 0.05      # a larger difference in one token is alerted (never overwritten)
    reconcile_grace_s: float = 180.0          # a token we traded this recently is not compared (the index lags)
    snapshot_interval_s: float = 60.0         # PnL snapshots (per position) written to the store
    resolution_check_s: float = 30.0          # ask Gamma for the winner of held markets past their end


@dataclass(frozen=True)
class StoreConfig:
    path: str = "var/copier.sqlite"
    dedupe_retention_s: float = 172_800.0     # sightings and transaction aliases (what only dedupe and the detection
                                              #   report read) older than this are deleted; fills, intents and orders
                                              #   are the record and are kept
    maintenance_interval_s: float = 300.0     # prune, incremental vacuum and the WAL size check, this often
    wal_truncate_bytes: int = 67_108_864      # a WAL file larger than this is checkpointed and truncated


@dataclass(frozen=True)
class Config:
    copy: CopyConfig = field(default_factory=CopyConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    markets: MarketsConfig = field(default_factory=MarketsConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    account: AccountConfig = field(default_factory=AccountConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    redeem: RedeemConfig = field(default_factory=RedeemConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    positions: PositionsConfig = field(default_factory=PositionsConfig)


@dataclass(frozen=True)
class Secrets:
    """Read from the environment only. repr() never shows a value."""
    private_key: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    api_secret: str = field(default="", repr=False)
    api_passphrase: str = field(default="", repr=False)
    sentry_dsn: str = field(default="", repr=False)
    polygon_ws_url: str = field(default="", repr=False)   # node URLs usually embed the provider's API key
    polygon_rpc_url: str = field(default="", repr=False)
    relayer_api_key: str = field(default="", repr=False)
    relayer_api_key_address: str = field(default="", repr=False)

    def values(self) -> tuple[str, ...]:
        """Every non-empty secret, for scrubbing logs, metrics and alerts."""
        return tuple(v for v in (self.private_key, self.api_key, self.api_secret, self.api_passphrase,
                                 self.sentry_dsn, self.polygon_ws_url, self.polygon_rpc_url, self.relayer_api_key)
                     if v)


# ---------------------------------------------------------------------------------------------------------------
# loading


def _build(cls: Any, data: object, path: str) -> Any:
    """cls: a config dataclass (Any: the fields are read by reflection)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        where = f"{path}.{f.name}" if path else f.name
        values[f.name] = _coerce(hints[f.name], data[f.name], where)
    return cls(**values)


def _coerce(tp: Any, value: object, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - a programming error


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {message}")


def _validate(cfg: Config) -> None:
    c, s, e, r, t = cfg.copy, cfg.sizing, cfg.execution, cfg.risk, cfg.telemetry
    _require(bool(_HEX_ADDRESS.match(c.source_wallet)), "copy.source_wallet",
             "must be a 0x-prefixed 40-hex-digit address")
    _require(c.copy_mode in ("intent_net", "fill_by_fill"), "copy.copy_mode", "must be intent_net or fill_by_fill")
    _require(0 < c.coalesce_ms <= 5000, "copy.coalesce_ms", "must be in (0, 5000]")
    _require(c.coalesce_ms <= c.max_hold_ms <= 10000, "copy.max_hold_ms", "must be >= coalesce_ms and <= 10000")
    _require(c.max_signal_age_s > 0, "copy.max_signal_age_s", "must be > 0")
    _require(0 <= c.burst_window_ms <= 10000, "copy.burst_window_ms", "must be in [0, 10000] (0 disables the budget)")
    _require(1 <= c.burst_max_orders <= 100, "copy.burst_max_orders", "must be in [1, 100]")
    _require(s.mode in ("fixed", "proportional", "capped_proportional"), "sizing.mode",
             "must be fixed, proportional or capped_proportional")
    _require(s.size_multiplier > 0, "sizing.size_multiplier", "must be > 0")
    _require(s.fixed_notional_usd > 0, "sizing.fixed_notional_usd", "must be > 0")
    _require(s.min_order_notional_usd >= 0, "sizing.min_order_notional_usd", "must be >= 0")
    _require(s.max_notional_per_order_usd > 0, "sizing.max_notional_per_order_usd", "must be > 0")
    _require(s.min_order_notional_usd <= s.max_notional_per_order_usd, "sizing.min_order_notional_usd",
             "must not exceed sizing.max_notional_per_order_usd")
    _require(s.max_notional_per_market_usd >= s.max_notional_per_order_usd, "sizing.max_notional_per_market_usd",
             "must be >= sizing.max_notional_per_order_usd")
    _require(s.max_total_notional_per_15m_window_usd >= s.max_notional_per_order_usd,
             "sizing.max_total_notional_per_15m_window_usd", "must be >= sizing.max_notional_per_order_usd")
    _require(0 <= s.size_tolerance < 1, "sizing.size_tolerance", "must be in [0, 1)")
    _require(s.exit_rule in ("fraction", "size"), "sizing.exit_rule", "must be fraction or size")
    _require(e.order_type == "marketable_limit", "execution.order_type", "only marketable_limit is supported")
    _require(0 <= e.max_slippage_bps <= 5000, "execution.max_slippage_bps", "must be in [0, 5000]")
    _require(0 <= e.max_slippage_ticks <= 50, "execution.max_slippage_ticks", "must be in [0, 50]")
    _require(e.max_book_age_s > 0, "execution.max_book_age_s", "must be > 0")
    _require(0 <= e.max_remainder_orders <= 3, "execution.max_remainder_orders", "must be in [0, 3]")
    _require(e.near_expiry_cutoff_seconds >= 0, "execution.near_expiry_cutoff_seconds", "must be >= 0")
    _require(1 <= e.max_post_attempts <= 20, "execution.max_post_attempts", "must be in [1, 20]")
    _require(e.post_timeout_s > 0, "execution.post_timeout_s", "must be > 0")
    _require(0 <= e.retry_budget_s <= 60, "execution.retry_budget_s", "must be in [0, 60]")
    _require(1 <= e.executor_concurrency <= 64, "execution.executor_concurrency", "must be in [1, 64]")
    _require(e.order_horizon_s > c.max_signal_age_s + e.retry_budget_s + e.post_timeout_s, "execution.order_horizon_s",
             "must exceed copy.max_signal_age_s + execution.retry_budget_s + execution.post_timeout_s (the last "
             "instant an order can be posted)")
    _require(r.max_daily_notional_usd >= s.max_notional_per_order_usd, "risk.max_daily_notional_usd",
             "must be >= sizing.max_notional_per_order_usd")
    _require(0 < r.breaker_max_error_rate <= 1, "risk.breaker_max_error_rate", "must be in (0, 1]")
    _require(cfg.markets.window_seconds > 0, "markets.window_seconds", "must be > 0")
    _require(cfg.account.signature_type in (0, 1, 2, 3), "account.signature_type", "must be 0, 1, 2 or 3")
    _require(cfg.account.funder == "" or bool(_HEX_ADDRESS.match(cfg.account.funder)), "account.funder",
             "must be empty or a 0x address")
    _require(cfg.account.signature_type in (0,) or cfg.account.funder != "", "account.funder",
             "is required for signature types 1, 2 and 3 (the proxy, safe or deposit wallet address)")
    _require(t.log_level in ("DEBUG", "INFO", "WARNING", "ERROR"), "telemetry.log_level",
             "must be DEBUG, INFO, WARNING or ERROR")
    _require(0 < t.statsd_port < 65536, "telemetry.statsd_port", "must be a port number")
    _require(0 < t.ntp_check_interval_s <= 3600, "telemetry.ntp_check_interval_s", "must be in (0, 3600]")
    _require(1 <= t.process_interval_s <= 3600, "telemetry.process_interval_s", "must be in [1, 3600]")
    _require(t.max_clock_offset_ms > 0, "telemetry.max_clock_offset_ms", "must be > 0")
    _require(0 <= t.max_unsynchronised_s <= 86400, "telemetry.max_unsynchronised_s", "must be in [0, 86400]")
    for name in ("clob", "data_api", "gamma", "geoblock"):
        url = getattr(cfg.endpoints, name)
        _require(url.startswith(("http://", "https://")), f"endpoints.{name}", "must be an http(s) URL")
    for name in ("rtds_ws", "market_ws", "user_ws"):
        url = getattr(cfg.endpoints, name)
        _require(url.startswith(("ws://", "wss://")), f"endpoints.{name}", "must be a ws(s) URL")
    _require(cfg.endpoints.polygon_ws == "" or cfg.endpoints.polygon_ws.startswith(("ws://", "wss://")),
             "endpoints.polygon_ws", "must be empty or a ws(s) URL")
    _require(cfg.feeds.confirm_timeout_s > 0, "feeds.confirm_timeout_s", "must be > 0")
    _require(cfg.feeds.reinclude_timeout_s > 0, "feeds.reinclude_timeout_s", "must be > 0")
    _require(bool(cfg.store.path), "store.path", "must not be empty")
    _require(cfg.endpoints.polygon_rpc == "" or cfg.endpoints.polygon_rpc.startswith(("http://", "https://")),
             "endpoints.polygon_rpc", "must be empty or an http(s) URL")
    _require(cfg.endpoints.relayer.startswith(("http://", "https://")), "endpoints.relayer", "must be an http(s) URL")
    rd = cfg.redeem
    _require(rd.interval_s >= 1, "redeem.interval_s", "must be >= 1")
    _require(rd.lookback_hours > 0, "redeem.lookback_hours", "must be > 0")
    _require(1 <= rd.max_per_batch <= 50, "redeem.max_per_batch", "must be in [1, 50]")
    _require(rd.max_failures >= 1, "redeem.max_failures", "must be >= 1")
    _require(rd.merge_min_sets > 0, "redeem.merge_min_sets", "must be > 0")
    _require(0 < rd.max_fee_gwei <= 100_000, "redeem.max_fee_gwei", "must be in (0, 100000]")
    _require(1 <= rd.gas_limit_margin <= 5, "redeem.gas_limit_margin", "must be in [1, 5]")
    _require(60 <= rd.relayer_deadline_s <= 86_400, "redeem.relayer_deadline_s", "must be in [60, 86400]")
    _require(rd.stuck_alert_s > 0, "redeem.stuck_alert_s", "must be > 0")
    horizon = replay_horizon_s(cfg)
    _require(cfg.store.dedupe_retention_s >= horizon, "store.dedupe_retention_s",
             f"must be >= {horizon:g} s, the longest a source fill can come back to the dedupe (its seed window of "
             f"a day of markets, "
             f"copy.max_signal_age_s + feeds.gap_fill_overlap_s, feeds.confirm_timeout_s, feeds.reinclude_timeout_s)")
    _require(10 <= cfg.store.maintenance_interval_s <= 86_400, "store.maintenance_interval_s",
             "must be in [10, 86400]")
    _require(cfg.store.wal_truncate_bytes >= 1_048_576, "store.wal_truncate_bytes", "must be >= 1048576 (1 MiB)")

    p = cfg.positions
    for name in ("reconcile_interval_s", "snapshot_interval_s", "resolution_check_s"):
        _require(1.0 <= getattr(p, name) <= 86400.0, f"positions.{name}", "must be in [1, 86400]")
    _require(0 < p.drift_tolerance_shares <= 1e6, "positions.drift_tolerance_shares", "must be in (0, 1e6]")
    _require(0 <= p.reconcile_grace_s <= 86400.0, "positions.reconcile_grace_s", "must be in [0, 86400]")


DEDUPE_SEED_S = 86_400.0        # the dedupe memory a restart reloads from the store, and the oldest fill any feed
                                #   may bring (schemas.MATCH_TS_HORIZON_S), with 15-minute windows
DAY_WINDOWS = 96                # 15-minute windows in a day


def market_day_s(cfg: Config) -> float:
    """A day of markets: 86,400 s live, shorter when a simulator runs market time faster (markets.window_seconds
    below 900), so that what the copier remembers "for a day" (the dedupe seed a restart loads, the source holdings'
    look-back) spans a day of markets there too."""
    return DAY_WINDOWS * cfg.markets.window_seconds


def replay_horizon_s(cfg: Config) -> float:
    """The longest time after which a source fill can still reach the dedupe, on any path: the seed a restart loads
    (and the edge's age limit), the gap-fill's look-back (signal age plus overlap), a mempool fill's wait for
    confirmation, a reorged log's wait for re-inclusion. Rows only the dedupe needs are safe to delete past it."""
    c, f = cfg.copy, cfg.feeds
    return max(market_day_s(cfg), c.max_signal_age_s + f.gap_fill_overlap_s, f.confirm_timeout_s, f.reinclude_timeout_s)


def stream_horizon_s(cfg: Config) -> float:
    """The longest one stream (a socket's frame type, a gap-fill scan, a block, a pending transaction) goes on
    delivering one fill: bounded by the gap-fill's look-back (signal age plus overlap), a mempool fill's wait for
    confirmation and a reorged log's wait for re-inclusion. Past it the dedupe keeps a fill's identity alone."""
    c, f = cfg.copy, cfg.feeds
    return max(c.max_signal_age_s + f.gap_fill_overlap_s, f.confirm_timeout_s, f.reinclude_timeout_s)


TYPICAL_TICK = 0.01             # the 15-minute markets' tick over most of their range (0.001 only near 0 and 1)


def warnings(cfg: Config) -> list[str]:
    """What a valid configuration implies that an operator may not expect: one line each, no refusal."""
    e = cfg.execution
    out = []
    one_tick_bps = TYPICAL_TICK / 0.5 * 10_000          # one tick at the middle of the price range
    if e.max_slippage_bps < one_tick_bps and e.max_slippage_ticks < 1:
        below = min(1.0, TYPICAL_TICK * 10_000 / e.max_slippage_bps) if e.max_slippage_bps else 1.0
        out.append(f"execution.max_slippage_bps {e.max_slippage_bps} is less than one {TYPICAL_TICK:g} tick at any "
                   f"price below {below:.2f}: there a BUY never pays more than the source did, and once the level "
                   f"the source took is gone the order is refused or killed; execution.max_slippage_ticks 1 allows "
                   f"one tick whatever the price")
    if cfg.redeem.enabled and cfg.account.signature_type in (1, 2):
        out.append(f"redeem.enabled: signature type {cfg.account.signature_type} (proxy / Safe wallet) is not redeemed "
                   f"automatically; redeem resolved positions yourself or use an EOA (0) or a deposit wallet (3)")
    return out


def parse_config(data: object) -> Config:
    cfg: Config = _build(Config, data, "")
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {p}{where}: not valid YAML") from None
    return parse_config(data)


ENV_NAMES = {
    "private_key": "POLY_PRIVATE_KEY",
    "api_key": "POLY_API_KEY",
    "api_secret": "POLY_API_SECRET",
    "api_passphrase": "POLY_API_PASSPHRASE",
    "sentry_dsn": "SENTRY_DSN",
    "polygon_ws_url": "POLYGON_WS_URL",
    "polygon_rpc_url": "POLYGON_RPC_URL",
    "relayer_api_key": "RELAYER_API_KEY",
    "relayer_api_key_address": "RELAYER_API_KEY_ADDRESS",
}


def load_secrets(cfg: Config, environ: Mapping[str, str] = os.environ, env_file: str | None = None) -> Secrets:
    """Secrets from the environment, optionally from a KEY=VALUE env file that must not be group/world-readable."""
    values = {}
    if env_file:
        values.update(read_env_file(env_file))
    values.update({k: v for k, v in environ.items() if k in ENV_NAMES.values()})
    secrets = Secrets(**{attr: values.get(env, "").strip() for attr, env in ENV_NAMES.items()})
    if not cfg.execution.dry_run:
        _require(bool(secrets.private_key), "POLY_PRIVATE_KEY",
                 "must be set in the environment when execution.dry_run is false")
        _require(bool(re.match(r"^(0x)?[0-9a-fA-F]{64}$", secrets.private_key)), "POLY_PRIVATE_KEY",
                 "must be 32 bytes of hex")
    creds = (secrets.api_key, secrets.api_secret, secrets.api_passphrase)
    _require(all(creds) or not any(creds), "POLY_API_KEY",
             "POLY_API_KEY, POLY_API_SECRET and POLY_API_PASSPHRASE must be set together (or none, to derive them)")
    _require(secrets.polygon_ws_url == "" or secrets.polygon_ws_url.startswith(("ws://", "wss://")),
             "POLYGON_WS_URL", "must be a ws(s) URL")
    _require(not (cfg.feeds.use_chain_logs or cfg.feeds.use_mempool) or bool(polygon_ws(cfg, secrets)),
             "endpoints.polygon_ws", "(or POLYGON_WS_URL in the environment) is required when feeds.use_chain_logs "
             "or feeds.use_mempool is true")
    _require(secrets.polygon_rpc_url == "" or secrets.polygon_rpc_url.startswith(("http://", "https://")),
             "POLYGON_RPC_URL", "must be an http(s) URL")
    redeeming = cfg.redeem.enabled and not cfg.execution.dry_run
    _require(not redeeming or cfg.account.signature_type not in (0, 3) or bool(polygon_rpc(cfg, secrets)),
             "endpoints.polygon_rpc", "(or POLYGON_RPC_URL in the environment) is required when redeem.enabled is "
             "true and execution.dry_run is false (balances and resolutions are read on chain)")
    _require(not redeeming or cfg.account.signature_type != 3 or
             bool(secrets.relayer_api_key and _HEX_ADDRESS.match(secrets.relayer_api_key_address)),
             "RELAYER_API_KEY", "RELAYER_API_KEY and RELAYER_API_KEY_ADDRESS (a 0x address) are required for "
             "redemptions through the relayer (signature type 3, redeem.enabled true)")
    return secrets


def polygon_rpc(cfg: Config, secrets: Secrets) -> str:
    """The Polygon JSON-RPC HTTP URL: POLYGON_RPC_URL (it usually carries an API key) over endpoints.polygon_rpc."""
    return secrets.polygon_rpc_url or cfg.endpoints.polygon_rpc


def polygon_ws(cfg: Config, secrets: Secrets) -> str:
    """The Polygon node websocket: POLYGON_WS_URL (it usually carries an API key) over endpoints.polygon_ws."""
    return secrets.polygon_ws_url or cfg.endpoints.polygon_ws


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines of a secrets file; refuses a file that group or others can access."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"env file {p}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"env file {p}: mode {stat.S_IMODE(mode):04o} is group/world-accessible; chmod 600 it")
    out = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError(f"env file {p} line {n}: expected KEY=VALUE")
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out
