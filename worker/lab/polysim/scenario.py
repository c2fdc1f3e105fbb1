"""Scenario files: everything a simulator run depends on, in one YAML or JSON document (JSON is valid YAML).

Every key is optional; an absent key keeps the default below. Unknown keys and wrong types are rejected with the
key's path, so a typo never silently runs a different experiment. Times are wall-clock seconds unless the name
says otherwise; `speed` shortens the 15-minute market window to 900/speed seconds.

    name: prd-burst                  # free text, echoed in /_sim/state
    seed: 7                          # one seed drives every random choice (reproducible runs)
    speed: 15                        # market clock: windows last 900/speed s
    markets:
      assets: [btc, eth]             # btc | eth | sol | xrp; slugs are {asset}-updown-15m-{window start}
      listed_windows: 3              # current + upcoming windows listed on Gamma and open for orders
      tick_size: 0.01                # starting tick; switches to 0.001 once the book leaves [0.04, 0.96]
      tick_size_switch: true
      min_size: 5                    # shares, for resting (non-marketable or GTC/GTD) orders
      min_marketable_buy_usd: 1.0    # marketable FOK/FAK BUY minimum notional
      neg_risk: false
      v2_every: 0                    # every Nth market is a Protocol-V2 (ExchangeV3, domain version 3) market
      fee_rate: 0.07                 # taker fee = C * rate * (p * (1 - p)) ** exponent, makers pay none
      fee_exponent: 1
      base_fee_bps: 1000             # legacy /fee-rate `base_fee`, Gamma makerBaseFee/takerBaseFee
      taker_delay_ms: 50             # itode: marketable orders wait this long before matching
      seconds_delay: 0               # sd > 0: marketable orders answer `delayed` and match after sd seconds
      price_model: static            # static: fair price fixed per market | walk: follows the oracle
      sigma_per_window: 0.002        # oracle volatility over one window (log return std)
      resolve_after: 0.1             # a window resolves this fraction of a window after it closes; the winner
                                     # comes from the oracle's 60 s TWAPs at the window's start and end
      auto_redeem: true              # the venue's auto-redeem operator redeems the winning tokens of wallets that
                                     # approved it (CTF setApprovalForAll to 0xa120...), gas-free for them
      auto_redeem_after: 0.5         # ... this fraction of a window after the resolution
    clob:
      latency_ms: 0                  # added before every CLOB REST answer (network + gateway)
      jitter_ms: 0                   # uniform extra 0..jitter_ms
      balance: 10000                 # pUSD every new API wallet starts with
      heartbeat_timeout_s: 15        # open orders are cancelled this long after the last heartbeat (10 s + buffer)
    feeds:
      rtds_delay_s: 2.1              # match -> RTDS `trades` (median); `orders_matched` lead: the next key
      rtds_orders_matched_lead_s: 0.2
      rtds_idle_stall_s: 360         # a connection that sent no PING for this long silently stops receiving
      rtds_unlabeled_p: 0            # share of rows with outcomeIndex 999 (the real feed's sentinel)
      market_ws_delay_s: 0.09        # match -> market websocket last_trade_price
      user_ws_delay_s: 0.05
      data_api_user_delay_s: 5.4     # match -> Data API row visible with ?user= (recomputed every refresh)
      data_api_market_delay_s: 9.0   # match -> visible with ?market= / no user
      data_api_refresh_s: 4.0
      data_api_cache_s: 300          # CloudFront max-age: same URL -> same answer; add a cache-buster param
      mined_after_s: 2.2             # trade status MATCHED -> MINED (transaction hash visible)
      confirmed_after_s: 8.0         # MATCHED -> CONFIRMED
      trade_fail_rate: 0             # share of API-owned trades that go RETRYING -> FAILED and are reverted
      positions_redeemable_lag_s: 60 # market seconds (divided by speed) from resolution until /positions shows it
                                     # (curPrice 1/0, redeemable); the real index lags about a minute
    chain:                           # the Polygon state behind the JSON-RPC and the relayer (wall-clock seconds)
      pol_balance: 10                # POL (gas money) every new API wallet starts with
      relayer_delay_s: 1.0           # relayer: accepted (STATE_NEW) -> broadcast (STATE_EXECUTED)
      relayer_confirmations: 2       # blocks until STATE_CONFIRMED
      relayer_min_deadline_s: 60     # a batch whose deadline is nearer is refused ("deadline too soon")
    background:                      # the liquidity model; calibration and sources in docs/polysim.md
      enabled: true
      taker_rate: 20                 # background taker orders per second (the RTDS firehose: ~3 frames each)
      maker_levels: 5                # levels the makers quote per side, one tick apart (Up and Down share them)
      makers_per_level: 8            # makers sharing each level, each with its own order and re-quote delay
      touch_size: [250, 1500]        # shares posted at the best level of each side (log-uniform in the range)
      maker_size: [400, 1400]        # shares posted at each deeper level
      requote_min_s: 0.3             # a maker re-posts an order a taker took no sooner than this after the fill
      requote_mean_s: 2.2            # mean extra re-quote delay beyond the minimum (exponential)
      informed_flow: true            # the source's and API wallets' taker flow is informed: the makers it took
                                     # do not offer that price again, and after a re-quote delay they move their
                                     # fair price past the deepest level it emptied and by impact_per_share
      impact_per_share: 0.00001      # fair-price shift (Up terms) per share an informed taker buys or sells
      taker_size: [5, 40]            # shares per background taker order
      wallets: 300                   # size of the background wallet pool
    source:
      wallet: "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
      mode: off                      # off (driven by /_sim/source-fill) | random | script
      bursts_per_window: 6           # random mode: mean bursts per market window
      burst_fills: [3, 12]
      burst_gap_ms: [40, 400]
      size: [5, 30]                  # shares per fill
      both_outcomes_p: 0.25          # a burst that buys both Up and Down
      sell_p: 0.1                    # a fill that sells held shares instead of buying
      maker_p: 0.2                   # a fill made as maker (a resting order a background taker then hits)
      near_expiry_p: 0.15            # a burst placed in the last 10% of the window
      script:                        # script mode: steps at seconds since start (optional every: repeat period)
        - {at: 5, asset: btc, outcome: Up, side: BUY, size: 10, role: taker}
        - {at: 6, asset: btc, outcome: Down, side: BUY, size: 8, role: maker, every: 30}
    faults:                          # the fault schedule; the same kinds POST /_sim/faults accepts
      - {at: 30, kind: clob_5xx, count: 3}
      - {at: 60, kind: engine_restart, seconds: 5, post_only_seconds: 120}
      - {at: 90, every: 120, kind: rtds_drop}
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

FAULT_KINDS = {
    "clob_429": "next N order POSTs answer 429 Too Many Requests with Retry-After (count, retry_after)",
    "clob_5xx": "next N order POSTs answer 5xx (count, status=500, error='order timed out')",
    "clob_garbage": "next N order POSTs answer a 502 HTML page (count)",
    "post_timeout_after_accept": "next N orders execute, then the answer is withheld (count, delay_s)",
    "engine_restart": "425 Too Early for `seconds`, then post-only mode (seconds, post_only_seconds)",
    "trading_disabled": "503 Trading is currently disabled for `seconds`",
    "cancel_only": "503 cancel-only for `seconds` (cancels still allowed)",
    "clob_latency": "extra latency on every CLOB answer for `seconds` (ms, jitter_ms, seconds)",
    "delay_failure": "next N marketable orders answer status `unmatched` and are not executed (count)",
    "trade_fail": "next N trades with an API owner go RETRYING -> FAILED and are reverted (count)",
    "rtds_stall": "RTDS connections stay open but receive nothing for `seconds`",
    "rtds_drop": "every RTDS connection is closed",
    "rtds_burst_hold": "RTDS frames are held for `seconds`, then delivered at once",
    "rtds_duplicate": "next N RTDS frames are sent twice (count)",
    "malformed": "N malformed frames on every websocket feed (count)",
    "market_ws_drop": "every market/user websocket connection is closed",
    "market_ws_stall": "the market websocket sends nothing for `seconds`",
    "data_api_5xx": "next N Data API requests answer 503 with Retry-After (count, retry_after)",
    "data_api_garbage": "next N Data API requests answer 200 with a truncated JSON body (count)",
    "rpc_5xx": "next N Polygon JSON-RPC requests fail (HTTP 503 / websocket error -32603), nothing applied (count)",
    "rpc_stall": "next N Polygon JSON-RPC requests are answered only after `seconds` (count, seconds)",
    "rpc_lost_answer": "next N eth_sendRawTransaction are accepted, then the answer is lost (HTTP 504 / the "
                       "websocket closed) (count)",
    "relayer_5xx": "next N relayer requests answer 503, nothing applied (count)",
    "relayer_lost_answer": "next N relayer submits are accepted, then the answer is lost (502) (count)",
    "relayer_stall": "next N accepted relayer batches stay STATE_NEW for `seconds` (past their deadline: "
                     "STATE_INVALID) (count, seconds)",
    "adapter_paused": "the collateral adapters revert OnlyUnpaused() for `seconds` (redeem and merge fail) (seconds)",
}


MAX_IMPACT_PER_SHARE = 0.01


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the offending key."""


@dataclass(frozen=True)
class Markets:
    assets: tuple[str, ...] = ("btc", "eth")
    listed_windows: int = 3
    tick_size: float = 0.01
    tick_size_switch: bool = True
    min_size: float = 5.0
    min_marketable_buy_usd: float = 1.0
    neg_risk: bool = False
    v2_every: int = 0
    fee_rate: float = 0.07
    fee_exponent: float = 1.0
    base_fee_bps: int = 1000
    taker_delay_ms: float = 50.0
    seconds_delay: float = 0.0
    price_model: str = "static"
    sigma_per_window: float = 0.002
    resolve_after: float = 0.1
    auto_redeem: bool = True
    auto_redeem_after: float = 0.5


@dataclass(frozen=True)
class Clob:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    balance: float = 10_000.0
    heartbeat_timeout_s: float = 15.0


@dataclass(frozen=True)
class Feeds:
    rtds_delay_s: float = 2.1
    rtds_orders_matched_lead_s: float = 0.2
    rtds_idle_stall_s: float = 360.0
    rtds_unlabeled_p: float = 0.0
    market_ws_delay_s: float = 0.09
    user_ws_delay_s: float = 0.05
    data_api_user_delay_s: float = 5.4
    data_api_market_delay_s: float = 9.0
    data_api_refresh_s: float = 4.0
    data_api_cache_s: float = 300.0
    mined_after_s: float = 2.2
    confirmed_after_s: float = 8.0
    trade_fail_rate: float = 0.0
    positions_redeemable_lag_s: float = 60.0


@dataclass(frozen=True)
class Chain:
    pol_balance: float = 10.0
    relayer_delay_s: float = 1.0
    relayer_confirmations: int = 2
    relayer_min_deadline_s: float = 60.0


@dataclass(frozen=True)
class Background:
    enabled: bool = True
    taker_rate: float = 20.0
    maker_levels: int = 5
    makers_per_level: int = 8
    touch_size: tuple[float, float] = (250.0, 1500.0)
    maker_size: tuple[float, float] = (400.0, 1400.0)
    requote_min_s: float = 0.3
    requote_mean_s: float = 2.2
    informed_flow: bool = True
    impact_per_share: float = 0.00001
    taker_size: tuple[float, float] = (5.0, 40.0)
    wallets: int = 300


@dataclass(frozen=True)
class Step:
    at: float
    asset: str = "btc"
    outcome: str = "Up"
    side: str = "BUY"
    size: float = 10.0
    role: str = "taker"
    price: float | None = None
    window: str = "current"
    every: float | None = None


@dataclass(frozen=True)
class Source:
    wallet: str = "0x1d0034134e339a309700ff2d34e99fa2d48b0313"
    mode: str = "off"
    bursts_per_window: float = 6.0
    burst_fills: tuple[int, int] = (3, 12)
    burst_gap_ms: tuple[float, float] = (40.0, 400.0)
    size: tuple[float, float] = (5.0, 30.0)
    both_outcomes_p: float = 0.25
    sell_p: float = 0.1
    maker_p: float = 0.2
    near_expiry_p: float = 0.15
    script: tuple[Step, ...] = ()


@dataclass(frozen=True)
class FaultStep:
    at: float
    kind: str
    every: float | None = None
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str = "default"
    seed: int = 1
    speed: float = 1.0
    markets: Markets = Markets()
    clob: Clob = Clob()
    feeds: Feeds = Feeds()
    chain: Chain = Chain()
    background: Background = Background()
    source: Source = Source()
    faults: tuple[FaultStep, ...] = ()

    @property
    def window_s(self) -> float:
        return 900.0 / self.speed


PRESETS: dict[str, dict] = {
    # What the copier's PRD describes: a fast source wallet on 15-minute crypto markets, busy background.
    "prd": {"name": "prd", "speed": 15, "markets": {"price_model": "walk"},
            "feeds": {"rtds_unlabeled_p": 0.005},
            "source": {"mode": "random"}},
    # Same, plus the venue misbehaving on a schedule.
    "chaos": {"name": "chaos", "speed": 15, "markets": {"price_model": "walk"},
              "source": {"mode": "random"},
              "faults": [{"at": 20, "every": 90, "kind": "clob_5xx", "count": 2},
                         {"at": 35, "every": 90, "kind": "clob_429", "count": 2, "retry_after": 1},
                         {"at": 50, "every": 120, "kind": "post_timeout_after_accept", "count": 1, "delay_s": 3},
                         {"at": 65, "every": 150, "kind": "rtds_drop"},
                         {"at": 80, "every": 150, "kind": "rtds_stall", "seconds": 8},
                         {"at": 95, "every": 180, "kind": "engine_restart", "seconds": 4, "post_only_seconds": 8},
                         {"at": 110, "every": 120, "kind": "rtds_duplicate", "count": 5}]},
}

_ENUMS = {"price_model": ("static", "walk"), "mode": ("off", "random", "script"), "role": ("taker", "maker"),
          "side": ("BUY", "SELL"), "window": ("current", "next"), "assets": ("btc", "eth", "sol", "xrp"),
          "asset": ("btc", "eth", "sol", "xrp"), "outcome": ("Up", "Down")}


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ScenarioError(f"{path}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ScenarioError(f"{path}: expected {len(args)} values, got {len(value)}")
        out = tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        if len(out) == 2 and out[0] > out[1]:
            raise ScenarioError(f"{path}: the range {list(out)} is reversed")
        return out
    if origin is not None and type(None) in get_args(tp):         # Optional[x]
        return None if value is None else _convert(value, [a for a in get_args(tp) if a is not type(None)][0], path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ScenarioError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ScenarioError(f"{path}: expected a finite number, got {value!r}")
        if tp is int and value != int(value):
            raise ScenarioError(f"{path}: expected a whole number, got {value!r}")
        if value < 0:
            raise ScenarioError(f"{path}: must not be negative, got {value!r}")
        return tp(value)
    if tp is str:
        if value is False and path.endswith(".mode"):      # YAML reads a bare `off` as false
            value = "off"
        if not isinstance(value, str):
            raise ScenarioError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise ScenarioError(f"{path}: expected a mapping")
        return dict(value)
    raise ScenarioError(f"{path}: unsupported type {tp}")


def _build(cls, doc: Any, path: str):
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path or 'scenario'}: expected a mapping, got {type(doc).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if cls is FaultStep:                # free-form parameters beside at/kind/every
        doc = {"at": doc.get("at"), "kind": doc.get("kind"), "every": doc.get("every"),
               "params": {k: v for k, v in doc.items() if k not in ("at", "kind", "every")}}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise ScenarioError(f"{path + '.' if path else ''}{unknown[0]}: unknown key")
    kwargs = {}
    for name in names:
        if name in doc:
            kwargs[name] = _convert(doc[name], hints[name], f"{path + '.' if path else ''}{name}")
        elif not any(f.name == name and (f.default is not dataclasses.MISSING
                                         or f.default_factory is not dataclasses.MISSING)
                     for f in dataclasses.fields(cls)):
            raise ScenarioError(f"{path + '.' if path else ''}{name}: required")
    for name, allowed in _ENUMS.items():
        if name in kwargs:
            values = kwargs[name] if isinstance(kwargs[name], tuple) else (kwargs[name],)
            for v in values:
                if v not in allowed:
                    raise ScenarioError(f"{path + '.' if path else ''}{name}: {v!r} is not one of {list(allowed)}")
    return cls(**kwargs)


def _check(s: Scenario) -> Scenario:
    if s.speed <= 0:
        raise ScenarioError("speed: must be positive")
    if not s.markets.assets:
        raise ScenarioError("markets.assets: at least one asset")
    if s.markets.tick_size not in (0.1, 0.01, 0.001, 0.0001):
        raise ScenarioError("markets.tick_size: one of 0.1, 0.01, 0.001, 0.0001")
    if s.markets.listed_windows < 1:
        raise ScenarioError("markets.listed_windows: at least 1")
    for name in ("rtds_unlabeled_p", "trade_fail_rate"):
        if getattr(s.feeds, name) > 1:
            raise ScenarioError(f"feeds.{name}: a probability in [0, 1]")
    for name in ("both_outcomes_p", "sell_p", "maker_p", "near_expiry_p"):
        if getattr(s.source, name) > 1:
            raise ScenarioError(f"source.{name}: a probability in [0, 1]")
    b = s.background
    for name in ("maker_levels", "makers_per_level"):
        if getattr(b, name) < 1:
            raise ScenarioError(f"background.{name}: at least 1")
    for name in ("touch_size", "maker_size"):
        if getattr(b, name)[0] <= 0:
            raise ScenarioError(f"background.{name}: sizes must be positive")
    if b.impact_per_share > MAX_IMPACT_PER_SHARE:
        raise ScenarioError(f"background.impact_per_share: at most {MAX_IMPACT_PER_SHARE} (one share moving the "
                            f"price by a cent)")
    if s.chain.relayer_confirmations < 1:
        raise ScenarioError("chain.relayer_confirmations: at least 1")
    if s.source.mode == "script" and not s.source.script:
        raise ScenarioError("source.script: script mode needs at least one step")
    w = s.source.wallet
    if not (w.startswith("0x") and len(w) == 42):
        raise ScenarioError("source.wallet: a 0x-prefixed 20-byte address")
    for i, f in enumerate(s.faults):
        if f.kind not in FAULT_KINDS:
            raise ScenarioError(f"faults[{i}].kind: unknown fault {f.kind!r}")
        if f.every is not None and f.every <= 0:
            raise ScenarioError(f"faults[{i}].every: must be positive")
    return s


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(doc: dict, overrides: dict | None = None) -> Scenario:
    return _check(_build(Scenario, _merge(doc or {}, overrides or {}), ""))


def load(spec: str | None, overrides: dict | None = None) -> Scenario:
    """A preset name (prd, chaos), a .yaml/.yml/.json path, or None for the defaults."""
    if spec is None:
        doc = {}
    elif spec in PRESETS:
        doc = PRESETS[spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise ScenarioError(f"scenario {spec!r}: no such file and not a preset ({', '.join(PRESETS)})")
        try:
            text = path.read_text()
            doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ScenarioError(f"scenario {spec!r}: {str(exc).splitlines()[0]}") from None
    return from_dict(doc or {}, overrides)
