"""Automatic redemption of resolved winning positions (and, optionally, merging full sets back to pUSD).

A resolved market pays nobody: winning outcome tokens stay in the wallet until redeemed through the collateral
adapter, which burns every token of the market the caller holds and pays 1 pUSD per winning one. Without this the
pUSD balance ends up locked in outcome tokens within hours at the PRD's caps.

- When: a periodic pass (`redeem.interval_s`), and within a second of the market websocket's `market_resolved`.
- What: the chain is the authority. For every market we bought in (the store's filled BUYs, ended, within
  `redeem.lookback_hours`), the CTF's `balanceOfBatch` gives our tokens and `payoutDenominator` /
  `payoutNumerators` the resolution (the adapter's redeem reverts until the CTF has the payouts, whatever Gamma
  shows). `select` (pure) turns holdings and resolutions into the set of calls.
- How: an EOA (signature type 0) signs and sends one transaction per call to the adapter and pays POL gas (checked
  before sending); a deposit wallet (type 3) sends one gas-free batch of calls through the relayer, signed by its
  owner (EIP-712 `Batch` in the wallet's domain).
- Money safety, as for orders: the signed transaction (or the signed relayer request) is written to the store BEFORE
  it is sent; a restart re-sends the same bytes or looks the receipt up by hash, never signs a second one for the
  same call. While any action is unresolved no new one is signed (nonces stay in order). An action is FAILED only on
  positive evidence (a receipt with status 0, the relayer's STATE_FAILED / STATE_INVALID, or a nonce provably used
  by something else); anything unknown stays pending and is asked again with backoff, and is alerted when stuck.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from eth_abi import decode, encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

from copier.errors import MalformedMessage, TemporaryError
from copier.schemas import loads, parse_gamma

if TYPE_CHECKING:
    from copier.clock import Clock
    from copier.config import Config, RedeemConfig, Secrets
    from copier.ports import Alerts, Markets, Metrics
    from copier.store import Store
    from copier.types import MarketResolved

log = logging.getLogger("copier.redeem")

# Polygon mainnet (the unified SDK's production environment, polymarket-client 0.14.0).
CTF = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"
PUSD = "0xc011a7e12a19f7b1f670d46f03b03f3342e82dfb"
ADAPTER = "0xada100db00ca00073811820692005400218fce1f"
DEPOSIT_WALLET_FACTORY = "0x00000000000fb5c9adea0298d729a0cb3823cc07"
BINARY_PARTITION = [1, 2]
UNITS = 10**6                   # pUSD and outcome tokens: 6 decimals
GWEI = 10**9
MIN_TIP = 30 * GWEI             # Polygon refuses tips under 25 gwei
RPC_TIMEOUT_S = 5.0
WAKE_DELAY_S = 1.0              # after `market_resolved`: the next tick passes (the CTF has the payouts by then)
RECHECK_MIN_S, RECHECK_MAX_S = 2.0, 60.0
SUPERSEDED_AFTER_S = 120.0      # our nonce used, our hash unknown to the node this long: the slot went to another tx


class ActionStatus(StrEnum):
    SIGNED = "SIGNED"           # written, maybe sent (the answer may be lost): send the same bytes again
    SENT = "SENT"               # the node / relayer took it: wait for the receipt / a terminal state
    CONFIRMED = "CONFIRMED"     # mined with status 1 / STATE_CONFIRMED
    FAILED = "FAILED"           # positive evidence that it did nothing (and never will)


UNRESOLVED = (ActionStatus.SIGNED, ActionStatus.SENT)


class CallKind(StrEnum):
    APPROVE = "approve"         # setApprovalForAll(adapter) on the CTF, once per wallet
    REDEEM = "redeem"
    MERGE = "merge"


class Via(StrEnum):
    EOA = "eoa"
    RELAYER = "relayer"


@dataclass(frozen=True, slots=True)
class Planned:
    """One call the selection wants made."""
    kind: CallKind
    condition_id: str
    amount_units: int = 0       # merge: full sets to merge
    payout_units: int = 0       # pUSD it is expected to pay


@dataclass(frozen=True, slots=True)
class Resolution:
    numerators: tuple[int, ...]  # payoutNumerators per outcome index
    denominator: int

    def payout_units(self, units: Sequence[int]) -> int:
        return sum(u * n for u, n in zip(units, self.numerators, strict=False)) // self.denominator


def select(holdings: Mapping[str, tuple[int, ...]], resolutions: Mapping[str, Resolution], covered: Iterable[str],
           merging: Iterable[str], failures: Mapping[str, int], cfg: RedeemConfig) -> list[Planned]:
    """The calls to make now. holdings: condition -> our token units per outcome index (on chain); resolutions:
    resolved conditions; covered: conditions with a redemption in flight or confirmed (never redeemed twice);
    merging: conditions with a merge in flight; failures: FAILED redemptions per condition (the operator's after
    `redeem.max_failures`). Redeems every resolved holding that pays something; merges full sets of unresolved
    markets when `redeem.merge_full_sets`. Largest payout first, at most `redeem.max_per_batch`."""
    covered, merging = set(covered), set(merging)
    out: list[Planned] = []
    for cid, units in holdings.items():
        res = resolutions.get(cid)
        if res is not None:
            payout = res.payout_units(units)
            if payout > 0 and cid not in covered and failures.get(cid, 0) < cfg.max_failures:
                out.append(Planned(CallKind.REDEEM, cid, payout_units=payout))
        elif cfg.merge_full_sets and len(units) == 2 and cid not in merging:
            sets = min(units)
            if sets >= cfg.merge_min_sets * UNITS:
                out.append(Planned(CallKind.MERGE, cid, amount_units=sets, payout_units=sets))
    out.sort(key=lambda p: (-p.payout_units, p.condition_id))
    return out[:cfg.max_per_batch]


# ---- calldata -------------------------------------------------------------------------------------------------
def calldata(signature: str, types: list[str], args: list[Any]) -> str:
    return "0x" + (keccak(text=signature)[:4] + encode(types, args)).hex()


def redeem_data(condition_id: str) -> str:
    return calldata("redeemPositions(address,bytes32,bytes32,uint256[])",
                    ["address", "bytes32", "bytes32", "uint256[]"],
                    [PUSD, b"\0" * 32, bytes.fromhex(condition_id[2:]), BINARY_PARTITION])


def merge_data(condition_id: str, amount_units: int) -> str:
    return calldata("mergePositions(address,bytes32,bytes32,uint256[],uint256)",
                    ["address", "bytes32", "bytes32", "uint256[]", "uint256"],
                    [PUSD, b"\0" * 32, bytes.fromhex(condition_id[2:]), BINARY_PARTITION, amount_units])


def approve_data(operator: str) -> str:
    return calldata("setApprovalForAll(address,bool)", ["address", "bool"], [operator, True])


def call_data(p: Planned) -> tuple[str, str]:
    """(target, calldata) of a planned call."""
    if p.kind is CallKind.APPROVE:
        return CTF, approve_data(ADAPTER)
    if p.kind is CallKind.REDEEM:
        return ADAPTER, redeem_data(p.condition_id)
    return ADAPTER, merge_data(p.condition_id, p.amount_units)


# ---- the seams ------------------------------------------------------------------------------------------------
class RpcAnswerError(Exception):
    """The node answered a JSON-RPC error object (it understood the request and refused it)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Rpc(Protocol):
    def call(self, method: str, *params: object) -> object:
        """The result; raises RpcAnswerError for an error object, TemporaryError when there is no usable answer."""


class TokenLookup(Protocol):
    def tokens(self, condition_id: str, asset: str) -> tuple[str, ...] | None:
        """The market's ERC1155 position ids by outcome index, or None when nobody could say (asked again later)."""


class GammaTokens:
    """Position ids of a market, from the catalog when it still has it, else from Gamma asking for closed markets
    too (`/markets` hides closed ones by default, and every market we redeem is closed). Kept: they never change."""

    def __init__(self, catalog: Markets, gamma_url: str, client: httpx.Client | None = None) -> None:
        self._catalog = catalog
        self._http = client or httpx.Client(base_url=gamma_url, timeout=RPC_TIMEOUT_S)
        self._known: dict[str, tuple[str, ...]] = {}

    def tokens(self, condition_id: str, asset: str) -> tuple[str, ...] | None:
        known = self._known.get(condition_id)
        if known is not None:
            return known
        meta = self._catalog.by_asset(asset)
        token_ids = meta.token_ids if meta is not None and meta.condition_id == condition_id else None
        for closed in ("true", "false"):        # closed: what is redeemed; open: what a merge may take
            if token_ids is None:
                token_ids = self._ask(condition_id, closed)
        if token_ids is not None:
            self._known[condition_id] = token_ids
        return token_ids

    def _ask(self, condition_id: str, closed: str) -> tuple[str, ...] | None:
        try:
            resp = self._http.get("/markets", params={"condition_ids": condition_id, "closed": closed})
        except httpx.HTTPError as exc:
            raise TemporaryError(f"gamma market {condition_id[:12]}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise TemporaryError(f"gamma market {condition_id[:12]}: HTTP {resp.status_code}")
        meta = next((m for m in parse_gamma(resp.content).markets if m.condition_id == condition_id), None)
        return meta.token_ids if meta is not None else None


class RelayerApi(Protocol):
    def submit(self, body: Mapping[str, object]) -> tuple[int, object]:
        """(HTTP status, parsed JSON or None); raises TemporaryError when there is no answer at all."""
    def transaction(self, relayer_id: str) -> tuple[int, object]: ...
    def transactions(self) -> tuple[int, object]: ...
    def nonce(self, owner: str) -> tuple[int, object]: ...


def _json(resp: httpx.Response) -> object:
    """The answer's JSON (strict, bounded size and nesting); a 4xx that is not JSON keeps its text as the error,
    anything else unusable is None."""
    try:
        return loads(resp.content, "relayer answer")
    except MalformedMessage:
        if 400 <= resp.status_code < 500:
            return {"error": resp.content[:200].decode("utf-8", "replace")}
        return None


class HttpRpc:
    """JSON-RPC over HTTP POST. Every failure to get a well-formed answer is a TemporaryError."""

    def __init__(self, url: str, timeout_s: float = RPC_TIMEOUT_S, client: httpx.Client | None = None) -> None:
        self._http = client or httpx.Client(timeout=timeout_s)
        self._url = url
        self._id = 0

    def call(self, method: str, *params: object) -> object:
        self._id += 1
        try:
            resp = self._http.post(self._url, json={"jsonrpc": "2.0", "id": self._id, "method": method,
                                                    "params": list(params)})
        except httpx.HTTPError as exc:
            raise TemporaryError(f"{method}: {type(exc).__name__}") from None
        try:
            doc = loads(resp.content, f"{method} answer")
        except MalformedMessage:
            raise TemporaryError(f"{method}: HTTP {resp.status_code}, not JSON") from None
        if not isinstance(doc, dict):
            raise TemporaryError(f"{method}: HTTP {resp.status_code}, not a JSON-RPC answer")
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            code = err.get("code")
            raise RpcAnswerError(code if isinstance(code, int) and not isinstance(code, bool) else 0,
                                 err["message"][:300])
        if resp.status_code != 200 or "result" not in doc:
            raise TemporaryError(f"{method}: HTTP {resp.status_code}, no result")
        return doc["result"]


class HttpRelayer:
    """Polymarket's relayer for deposit-wallet batches (auth: RELAYER_API_KEY + RELAYER_API_KEY_ADDRESS)."""

    def __init__(self, url: str, api_key: str, api_key_address: str, timeout_s: float = RPC_TIMEOUT_S,
                 client: httpx.Client | None = None) -> None:
        self._http = client or httpx.Client(base_url=url, timeout=timeout_s)
        self._auth = {"RELAYER_API_KEY": api_key, "RELAYER_API_KEY_ADDRESS": api_key_address}

    def _do(self, method: str, path: str, **kw: Any) -> tuple[int, object]:
        try:
            resp = self._http.request(method, path, headers=self._auth, **kw)
        except httpx.HTTPError as exc:
            raise TemporaryError(f"relayer {path}: {type(exc).__name__}") from None
        return resp.status_code, _json(resp)

    def submit(self, body: Mapping[str, object]) -> tuple[int, object]:
        return self._do("POST", "/submit", json=dict(body))

    def transaction(self, relayer_id: str) -> tuple[int, object]:
        return self._do("GET", f"/v1/account/transactions/{relayer_id}")

    def transactions(self) -> tuple[int, object]:
        return self._do("GET", "/transactions")

    def nonce(self, owner: str) -> tuple[int, object]:
        return self._do("GET", "/v1/account/transactions/params", params={"address": owner, "type": "WALLET"})


# ---- answers made typed ---------------------------------------------------------------------------------------
def _hex_int(value: object, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 66:
        raise MalformedMessage(f"{what}: not a hex quantity")
    try:
        return int(value, 16)
    except ValueError:
        raise MalformedMessage(f"{what}: not a hex quantity") from None


def _words(value: object, types: list[str], what: str) -> tuple[Any, ...]:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 2 + 64 * 1024:
        raise MalformedMessage(f"{what}: not hex data")
    try:
        return tuple(decode(types, bytes.fromhex(value[2:])))
    except Exception:  # eth-abi raises its own hierarchy for short or malformed data
        raise MalformedMessage(f"{what}: does not decode as {types}") from None


@dataclass(frozen=True, slots=True)
class Receipt:
    status: int
    gas_used: int
    price: int


def parse_receipt(doc: object) -> Receipt | None:
    """eth_getTransactionReceipt's result: None while not mined."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise MalformedMessage("receipt: not an object")
    status = _hex_int(doc.get("status"), "receipt status")
    if status not in (0, 1):
        raise MalformedMessage("receipt status: not 0 or 1")
    price = doc.get("effectiveGasPrice")
    return Receipt(status, _hex_int(doc.get("gasUsed"), "receipt gasUsed"),
                   _hex_int(price, "receipt effectiveGasPrice") if price is not None else 0)


RELAYER_DONE, RELAYER_DEAD = "STATE_CONFIRMED", ("STATE_FAILED", "STATE_INVALID")
RELAYER_STATES = {"STATE_NEW", "STATE_EXECUTED", "STATE_MINED", RELAYER_DONE, *RELAYER_DEAD}


# ---- the redeemer ---------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    """Backoff and first-seen times of one unresolved action (memory only: a restart asks at once)."""
    due: float = 0.0
    delay: float = RECHECK_MIN_S
    nonce_used_since: float | None = None
    alerted_stuck: bool = False
    alerted_refused: bool = False


class Redeemer:
    def __init__(self, cfg: Config, *, private_key: str, store: Store, rpc: Rpc, relayer: RelayerApi | None,
                 markets: TokenLookup, clock: Clock, metrics: Metrics, alerts: Alerts) -> None:
        self.cfg = cfg
        self.rc = cfg.redeem
        self._account = Account.from_key(private_key)
        self.owner = self._account.address.lower()
        self.via = Via.RELAYER if cfg.account.signature_type == 3 else Via.EOA
        self.holder = (cfg.account.funder or self.owner).lower() if self.via is Via.RELAYER else self.owner
        self.store = store
        self.rpc = rpc
        self.relayer = relayer
        self.markets = markets
        self.clock = clock
        self.metrics = metrics
        self.alerts = alerts
        self._next_pass = 0.0
        self._pending: dict[str, _Pending] = {}
        self._settled: set[str] = set()          # resolved, nothing of ours left to redeem: not read again
        self._short_pol = False
        self._alerted: set[str] = set()
        self._failing_since: float | None = None
        self.redeemable_units = 0                # resolved winnings not yet paid (the funds check counts them)

    @classmethod
    def from_config(cls, cfg: Config, secrets: Secrets, *, store: Store, markets: Markets, clock: Clock,
                    metrics: Metrics, alerts: Alerts) -> Redeemer:
        from copier.config import polygon_rpc
        relayer = None
        if cfg.account.signature_type == 3:
            relayer = HttpRelayer(cfg.endpoints.relayer, secrets.relayer_api_key, secrets.relayer_api_key_address)
        return cls(cfg, private_key=secrets.private_key, store=store, rpc=HttpRpc(polygon_rpc(cfg, secrets)),
                   relayer=relayer, markets=GammaTokens(markets, cfg.endpoints.gamma), clock=clock, metrics=metrics,
                   alerts=alerts)

    # ---- triggers ----------------------------------------------------------------------------------------
    def on_resolved(self, event: MarketResolved) -> None:
        """The market websocket's `market_resolved`: pass soon (the chain stays the authority)."""
        self._settled.discard(event.market)
        self._next_pass = min(self._next_pass, self.clock.now() + WAKE_DELAY_S)

    def redeemable_usd(self) -> float:
        return self.redeemable_units / UNITS

    def tick(self) -> None:
        """The Periodic task (every second): drive unresolved actions when due; plan new ones when the pass is due
        and nothing is unresolved."""
        now = self.clock.now()
        open_actions = self.store.chain_actions(UNRESOLVED)
        if open_actions:
            self._advance(open_actions, now)
            return
        if now < self._next_pass:
            return
        self._next_pass = now + self.rc.interval_s
        try:
            self.plan_and_send(now)
        except (TemporaryError, MalformedMessage, RpcAnswerError) as exc:
            # The node, Gamma or the relayer gave no usable answer: nothing was signed; the next pass asks again.
            self.metrics.incr("redeem.errors")
            log.warning("redeem: pass skipped: %s: %s", type(exc).__name__, str(exc)[:200])
            self._next_pass = now + min(self.rc.interval_s, RECHECK_MIN_S * 5)
            if self._failing_since is None:
                self._failing_since = now
            elif now - self._failing_since > self.rc.stuck_alert_s:
                self._alert_once("redeem_unavailable", f"redemption passes failing for "
                                 f"{now - self._failing_since:.0f}s: {type(exc).__name__}")
            return
        self._failing_since = None
        self._alerted.discard("redeem_unavailable")

    # ---- planning ----------------------------------------------------------------------------------------
    def _read_chain(self, now: float, covered: set[str]) -> tuple[dict[str, tuple[int, ...]],
                                                                  dict[str, Resolution]]:
        """Our tokens and the payouts of every market we bought in that may still need a call (a market with a
        redemption in flight or done is not read again)."""
        holdings: dict[str, tuple[int, ...]] = {}
        resolutions: dict[str, Resolution] = {}
        since = now - self.rc.lookback_hours * 3600
        bought = self.store.bought_markets(since, None if self.rc.merge_full_sets else now)
        self._settled &= {cid for cid, _ in bought}          # past the look-back a market is not read anyway
        for cid, asset in bought:
            if cid in self._settled or cid in holdings or cid in covered:
                continue
            token_ids = self.markets.tokens(cid, asset)
            if token_ids is None or len(token_ids) != 2:
                continue
            units = self._balances(token_ids)
            holdings[cid] = units
            res = self._resolution(cid)
            if res is not None:
                resolutions[cid] = res
                if res.payout_units(units) == 0 and (not self.rc.merge_full_sets or min(units) == 0):
                    self._settled.add(cid)
        return holdings, resolutions

    def _eth_call(self, to: str, data: str) -> object:
        return self.rpc.call("eth_call", {"to": to, "data": data}, "latest")

    def _balances(self, token_ids: Sequence[str]) -> tuple[int, ...]:
        data = calldata("balanceOfBatch(address[],uint256[])", ["address[]", "uint256[]"],
                        [[self.holder] * len(token_ids), [int(t) for t in token_ids]])
        (units,) = _words(self._eth_call(CTF, data), ["uint256[]"], "balanceOfBatch")
        if len(units) != len(token_ids):
            raise MalformedMessage("balanceOfBatch: wrong length")
        return tuple(int(u) for u in units)

    def _resolution(self, cid: str) -> Resolution | None:
        key = bytes.fromhex(cid[2:])
        (den,) = _words(self._eth_call(CTF, calldata("payoutDenominator(bytes32)", ["bytes32"], [key])),
                        ["uint256"], "payoutDenominator")
        if den == 0:
            return None
        nums = tuple(_words(self._eth_call(CTF, calldata("payoutNumerators(bytes32,uint256)", ["bytes32", "uint256"],
                                                         [key, i])), ["uint256"], "payoutNumerators")[0]
                     for i in range(2))
        return Resolution(tuple(int(n) for n in nums), int(den))

    def _approved(self) -> bool:
        (ok,) = _words(self._eth_call(CTF, calldata("isApprovedForAll(address,address)", ["address", "address"],
                                                    [self.holder, ADAPTER])), ["bool"], "isApprovedForAll")
        return bool(ok)

    def plan_and_send(self, now: float) -> int:
        """One planning pass -> how many calls were written and sent."""
        covered, merging, failures = self._coverage(now)
        holdings, resolutions = self._read_chain(now, covered)
        planned = select(holdings, resolutions, covered, merging, failures, self.rc)
        # Kept until the next pass: what it selects stays counted while in flight, and a confirmation passes again.
        self.redeemable_units = sum(r.payout_units(holdings[c]) for c, r in resolutions.items() if c in holdings)
        self.metrics.gauge("redeem.redeemable_usd", self.redeemable_usd())
        if not planned:
            return 0
        if not self._approved():
            planned = [Planned(CallKind.APPROVE, ""), *planned] if self.via is Via.RELAYER else \
                [Planned(CallKind.APPROVE, "")]        # an EOA's calls are estimated after the approval is mined
        rows = self._build_relayer(planned, now) if self.via is Via.RELAYER else self._build_eoa(planned, now)
        if not rows:
            return 0
        self.store.record_chain_actions(rows)          # write-ahead: nothing is sent that is not recorded
        log.info("redeem: %d action(s) signed: %s", len(rows),
                 ", ".join(f"{p.kind.value} {p.condition_id[:10]}" for p in planned))
        self._advance(self.store.chain_actions(UNRESOLVED), now)
        return len(planned)

    def _coverage(self, now: float) -> tuple[set[str], set[str], dict[str, int]]:
        """The actions of the look-back only: a market bought within it can have no call signed before it (reading
        every action ever signed made each pass's cost grow with the store's history)."""
        covered: set[str] = set()
        merging: set[str] = set()
        failures: dict[str, int] = {}
        for row in self.store.chain_actions(created_from_ns=int((now - self.rc.lookback_hours * 3600) * 1e9)):
            status = ActionStatus(row["status"])
            for call in json.loads(row["calls"]):
                kind, cid = CallKind(call["kind"]), call["condition_id"]
                if kind is CallKind.REDEEM:
                    if status is ActionStatus.FAILED:
                        failures[cid] = failures.get(cid, 0) + 1
                    else:
                        covered.add(cid)
                elif kind is CallKind.MERGE and status in UNRESOLVED:
                    merging.add(cid)
        return covered, merging, failures

    # ---- building (signing happens here; nothing is sent) ------------------------------------------------
    def _build_eoa(self, planned: list[Planned], now: float) -> list[dict[str, Any]]:
        nonce = _hex_int(self.rpc.call("eth_getTransactionCount", self.owner, "pending"), "transaction count")
        gas_price = _hex_int(self.rpc.call("eth_gasPrice"), "gas price")
        tip = max(MIN_TIP, _hex_int(self.rpc.call("eth_maxPriorityFeePerGas"), "priority fee"))
        fee_cap = max(2 * gas_price, tip + gas_price)
        cap = int(self.rc.max_fee_gwei * GWEI)
        if tip > cap or gas_price > cap:
            self._alert_once("redeem_gas_price", f"gas price {gas_price / GWEI:.0f} gwei is above "
                             f"redeem.max_fee_gwei {self.rc.max_fee_gwei:g}: redemptions wait")
            return []
        fee_cap = min(fee_cap, cap)
        calls = []
        for p in planned:
            target, data = call_data(p)
            est = _hex_int(self.rpc.call("eth_estimateGas", {"from": self.owner, "to": target, "data": data}),
                           "gas estimate")
            calls.append((p, target, data, int(est * self.rc.gas_limit_margin)))
        cost = sum(gas * fee_cap for *_, gas in calls)
        pol = _hex_int(self.rpc.call("eth_getBalance", self.owner, "latest"), "balance")
        self.metrics.gauge("redeem.pol_balance", pol / 10**18)
        if pol < cost:
            if not self._short_pol:
                self.alerts.alert("low_pol", f"POL balance {pol / 10**18:.4f} cannot pay the gas of {len(calls)} "
                                  f"redemption transaction(s) (up to {cost / 10**18:.4f} POL): top up the wallet")
            self._short_pol = True
            log.warning("redeem: POL %.4f < gas up to %.4f; waiting", pol / 10**18, cost / 10**18)
            return []
        self._short_pol = False
        rows = []
        for i, (p, target, data, gas) in enumerate(calls):
            tx = {"to": to_checksum_address(target), "data": data, "gas": gas, "nonce": nonce + i,
                  "chainId": self.cfg.endpoints.chain_id, "value": 0, "maxFeePerGas": fee_cap,
                  "maxPriorityFeePerGas": min(tip, fee_cap), "type": 2}
            raw = "0x" + self._account.sign_transaction(tx).raw_transaction.hex()
            rows.append(self._row(f"eoa:{self.owner}:{nonce + i}:{keccak(text=raw).hex()[:16]}", [p], nonce + i,
                                  raw, "0x" + keccak(bytes.fromhex(raw[2:])).hex(), 0.0, now))
        return rows

    def _build_relayer(self, planned: list[Planned], now: float) -> list[dict[str, Any]]:
        assert self.relayer is not None
        status, doc = self.relayer.nonce(self.owner)
        if status != 200 or not isinstance(doc, dict):
            raise TemporaryError(f"relayer nonce: HTTP {status}")
        try:
            nonce = int(str(doc.get("nonce")))
        except ValueError:
            raise MalformedMessage("relayer nonce: not an integer") from None
        deadline = int(now + self.rc.relayer_deadline_s)
        calls = [call_data(p) for p in planned]
        typed = {"domain": {"name": "DepositWallet", "version": "1", "chainId": self.cfg.endpoints.chain_id,
                            "verifyingContract": to_checksum_address(self.holder)},
                 "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                            {"name": "chainId", "type": "uint256"},
                                            {"name": "verifyingContract", "type": "address"}],
                           "Batch": [{"name": "wallet", "type": "address"}, {"name": "nonce", "type": "uint256"},
                                     {"name": "deadline", "type": "uint256"}, {"name": "calls", "type": "Call[]"}],
                           "Call": [{"name": "target", "type": "address"}, {"name": "value", "type": "uint256"},
                                    {"name": "data", "type": "bytes"}]},
                 "primaryType": "Batch",
                 "message": {"wallet": to_checksum_address(self.holder), "nonce": nonce, "deadline": deadline,
                             "calls": [{"target": to_checksum_address(t), "value": 0, "data": bytes.fromhex(d[2:])}
                                       for t, d in calls]}}
        signature = "0x" + self._account.sign_message(encode_typed_data(full_message=typed)).signature.hex()
        body = {"type": "WALLET", "from": to_checksum_address(self.owner), "to": DEPOSIT_WALLET_FACTORY,
                "nonce": str(nonce), "signature": signature, "metadata": "redeem",
                "depositWalletParams": {"depositWallet": to_checksum_address(self.holder), "deadline": str(deadline),
                                        "calls": [{"target": t, "value": "0", "data": d} for t, d in calls]}}
        return [self._row(f"relayer:{self.holder}:{nonce}:{signature[2:18]}", planned, nonce,
                          json.dumps(body, separators=(",", ":")), "", float(deadline), now)]

    def _row(self, action_id: str, planned: list[Planned], nonce: int, payload: str, tx_hash: str, deadline: float,
             now: float) -> dict[str, Any]:
        calls = [{"kind": p.kind.value, "condition_id": p.condition_id, "amount_units": p.amount_units,
                  "payout_units": p.payout_units} for p in planned]
        return dict(action_id=action_id, via=self.via.value, calls=json.dumps(calls), nonce=nonce, payload=payload,
                    tx_hash=tx_hash, status=ActionStatus.SIGNED.value, deadline=deadline,
                    created_ns=int(now * 1e9), updated_ns=int(now * 1e9))

    # ---- driving what is in flight -------------------------------------------------------------------------
    def _advance(self, rows: list[dict[str, Any]], now: float) -> None:
        for row in sorted(rows, key=lambda r: (r["nonce"], r["id"])):
            p = self._pending.setdefault(row["action_id"], _Pending())
            if p.due > now:
                continue
            try:
                if row["via"] == Via.RELAYER.value:
                    done = self._advance_relayer(row, p, now)
                else:
                    done = self._advance_eoa(row, p, now)
            except (TemporaryError, MalformedMessage) as exc:
                self.metrics.incr("redeem.errors")
                log.warning("redeem: %s: no usable answer (%s); asked again later", row["action_id"][:40], exc)
                done = False
            if done:
                self._pending.pop(row["action_id"], None)
                self._next_pass = min(self._next_pass, now)     # an approval mined, or more than one batch's worth
                continue
            p.due = now + p.delay
            p.delay = min(RECHECK_MAX_S, p.delay * 2)
            age = now - row["created_ns"] / 1e9
            if age > self.rc.stuck_alert_s and not p.alerted_stuck:
                p.alerted_stuck = True
                self.alerts.alert("redemption_stuck", f"redemption {row['action_id'][:60]} unresolved for "
                                  f"{age:.0f}s (status {row['status']}); it is asked again, never signed twice")

    def _update(self, row: dict[str, Any], now: float, **fields: Any) -> None:
        if isinstance(fields.get("status"), ActionStatus):
            fields["status"] = fields["status"].value
        self.store.update_chain_action(row["action_id"], int(now * 1e9), **fields)
        row.update(fields)

    def _advance_eoa(self, row: dict[str, Any], p: _Pending, now: float) -> bool:
        """True when the action reached a final status."""
        receipt = parse_receipt(self.rpc.call("eth_getTransactionReceipt", row["tx_hash"]))
        if receipt is not None:
            return self._mined(row, receipt, now)
        try:
            self.rpc.call("eth_sendRawTransaction", row["payload"])      # the same bytes, every time
        except RpcAnswerError as exc:
            text = exc.message.lower()
            if text.startswith("already known"):
                pass
            elif text.startswith("nonce too low"):
                return self._nonce_used(row, p, now)
            else:
                # Not in the pool (e.g. insufficient funds for gas): the same bytes go again later.
                self._update(row, now, attempts=row["attempts"] + 1, error=exc.message[:300])
                if not p.alerted_refused:
                    p.alerted_refused = True
                    self.alerts.alert("redemption_not_sent", f"redemption {row['action_id'][:60]} refused by the "
                                      f"node: {exc.message[:200]}; sent again later (same transaction)")
                return False
        if row["status"] != ActionStatus.SENT.value:
            self._update(row, now, status=ActionStatus.SENT, attempts=row["attempts"] + 1)
        return False

    def _nonce_used(self, row: dict[str, Any], p: _Pending, now: float) -> bool:
        """Our nonce is used: ours (its receipt will show) or another transaction's (ours can never be mined)."""
        if self.rpc.call("eth_getTransactionByHash", row["tx_hash"]) is not None:
            return False
        if p.nonce_used_since is None:
            p.nonce_used_since = now
        if now - p.nonce_used_since < SUPERSEDED_AFTER_S:
            return False
        self._fail(row, now, "nonce used by another transaction; this one was never mined")
        return True

    def _mined(self, row: dict[str, Any], receipt: Receipt, now: float) -> bool:
        gas = dict(gas_used=receipt.gas_used, gas_price=receipt.price)
        if receipt.status == 1:
            self._update(row, now, status=ActionStatus.CONFIRMED, error="", **gas)
            self.metrics.incr("redeem.confirmed")
            log.info("redeem: %s confirmed (gas %d x %d)", row["action_id"][:60], receipt.gas_used, receipt.price)
        else:
            self._fail(row, now, "reverted on chain (receipt status 0)", **gas)
        return True

    def _fail(self, row: dict[str, Any], now: float, why: str, **fields: Any) -> None:
        self._update(row, now, status=ActionStatus.FAILED, error=why[:300], **fields)
        self.metrics.incr("redeem.failed")
        kinds = ", ".join(f"{c['kind']} {c['condition_id'][:12]}" for c in json.loads(row["calls"]))
        log.error("redeem: %s failed: %s", row["action_id"][:60], why)
        self.alerts.alert("redemption_failed", f"redemption failed ({kinds}): {why[:200]}", via=row["via"])

    def _advance_relayer(self, row: dict[str, Any], p: _Pending, now: float) -> bool:
        assert self.relayer is not None
        if row["relayer_id"]:
            return self._poll_relayer(row, now)
        status, doc = self.relayer.submit(json.loads(row["payload"]))     # the same signed request, every time
        if status == 200 and isinstance(doc, dict) and isinstance(doc.get("transactionID"), str) and \
                doc["transactionID"]:
            self._update(row, now, status=ActionStatus.SENT, relayer_id=doc["transactionID"][:100],
                         attempts=row["attempts"] + 1)
            return self._poll_relayer(row, now)
        error = doc.get("error") if isinstance(doc, dict) else None
        if not (400 <= status < 500 and isinstance(error, str)):
            raise TemporaryError(f"relayer submit: HTTP {status}")         # no usable answer: send again later
        self._update(row, now, attempts=row["attempts"] + 1, error=error[:300])
        if "busy" in error or "in-flight" in error:
            return False                                                   # another batch first; ours still valid
        # A refusal of a request that may have been taken before (a lost answer): find it by its signature.
        found = self._find_submitted(row)
        if found:
            self._update(row, now, status=ActionStatus.SENT, relayer_id=found)
            return self._poll_relayer(row, now)
        if error.startswith(("deadline expired", "batch nonce")) or now > row["deadline"]:
            self._fail(row, now, f"the relayer refused it and does not know it: {error}")
            return True
        return False

    def _find_submitted(self, row: dict[str, Any]) -> str:
        assert self.relayer is not None
        signature = json.loads(row["payload"])["signature"].lower()
        status, doc = self.relayer.transactions()
        if status != 200 or not isinstance(doc, list):
            raise TemporaryError(f"relayer transactions: HTTP {status}")
        for tx in doc:
            if isinstance(tx, dict) and str(tx.get("signature", "")).lower() == signature and \
                    isinstance(tx.get("transactionID"), str):
                return str(tx["transactionID"])[:100]
        return ""

    def _poll_relayer(self, row: dict[str, Any], now: float) -> bool:
        assert self.relayer is not None
        status, doc = self.relayer.transaction(row["relayer_id"])
        if status != 200 or not isinstance(doc, dict) or doc.get("state") not in RELAYER_STATES:
            raise TemporaryError(f"relayer transaction {row['relayer_id'][:40]}: HTTP {status}, no state")
        state = str(doc["state"])
        tx_hash = doc.get("transaction_hash")
        if isinstance(tx_hash, str) and tx_hash.startswith("0x") and len(tx_hash) == 66 and not row["tx_hash"]:
            self._update(row, now, tx_hash=tx_hash)
        if state == RELAYER_DONE:
            self._update(row, now, status=ActionStatus.CONFIRMED, error="")
            self.metrics.incr("redeem.confirmed")
            log.info("redeem: relayer batch %s confirmed", row["relayer_id"])
            return True
        if state in RELAYER_DEAD:
            self._fail(row, now, f"relayer {state}: {str(doc.get('error_msg') or '')[:200]}")
            return True
        return False

    def _alert_once(self, kind: str, message: str) -> None:
        log.warning("redeem: %s", message)
        if kind not in self._alerted:
            self._alerted.add(kind)
            self.alerts.alert(kind, message)


def build_redeemer(cfg: Config, secrets: Secrets, *, store: Store, markets: Markets, clock: Clock,
                   metrics: Metrics, alerts: Alerts) -> Redeemer | None:
    """The live redeemer, or None: dry run holds no tokens; proxy and Safe wallets (types 1 and 2) are not
    redeemed automatically (config warnings say so)."""
    if not cfg.redeem.enabled or cfg.execution.dry_run or cfg.account.signature_type not in (0, 3):
        return None
    return Redeemer.from_config(cfg, secrets, store=store, markets=markets, clock=clock, metrics=metrics,
                                alerts=alerts)

