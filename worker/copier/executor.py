"""Executors: turn an OrderIntent into an ExecutionReport. Same interface live and on paper (dry run).

Live order of operations, each step durable before the next:
  1. sign once (order hash = EIP-712 digest)   2. persist the signed bytes (write-ahead)   3. POST (marked
     POSTING once the request is written, while the venue works on it)
  4. on 5xx / 425 / 429 / timeout: POST the SAME bytes again (bounded; the venue rejects a duplicate hash)
  5. still no answer: GET /data/order/{hash} decides what happened.
After a crash, recover() resolves every persisted-but-unresolved order by hash; nothing is ever re-signed, and
only the persisted bytes of an order the venue never saw are posted again.
"""
from __future__ import annotations

import functools
import json
import logging

import peewee

from copier.errors import MalformedMessage, OperationalError, RateLimited, TemporaryError, UnknownOutcome
from copier.logs import batch_fields
from copier.schemas import amounts_tuple as _amounts, order_lookup_tuple as parse_order_lookup, parse_funds
from copier.signing import OrderSigner
from copier.store import Store
from copier.transport import ApiCreds, ClobTransport, Response
from copier.types import ExecutionReport, Funds, MarketMeta, OrderIntent, Side

log = logging.getLogger("copier.executor")

FAK_NO_MATCH = "no orders found to match"
DUPLICATE = "duplicated"
ACCEPTED = {"live": "LIVE", "matched": "MATCHED", "delayed": "DELAYED", "unmatched": "UNMATCHED"}
AUTH_ERRORS = (401, 403)
MAX_BACKOFF_S = 1.0


class ClobExecutor:
    def __init__(self, cfg, *, signer: OrderSigner, transport: ClobTransport, store: Store, clock, metrics):
        self.cfg = cfg.execution
        self.max_signal_age_s = cfg.copy.max_signal_age_s
        self.signature_type = cfg.account.signature_type
        self.signer = signer
        self.transport = transport
        self.store = store
        self.clock = clock
        self.metrics = metrics

    @classmethod
    def from_config(cls, cfg, secrets, *, store, clock, metrics, books=None) -> "ClobExecutor":
        creds = _api_creds(cfg, secrets)
        signer = OrderSigner(secrets.private_key, cfg.endpoints.chain_id, cfg.account.signature_type,
                             cfg.account.funder, creds.api_key)
        transport = ClobTransport(cfg.endpoints.clob, creds, signer.address, clock=clock,
                                  timeout_s=cfg.execution.post_timeout_s, metrics=metrics)
        transport.warm(cfg.execution.executor_concurrency)
        return cls(cfg, signer=signer, transport=transport, store=store, clock=clock, metrics=metrics)

    # ---- submit ------------------------------------------------------------------------------------------
    def submit(self, intent: OrderIntent, market: MarketMeta) -> ExecutionReport:
        t0 = self.clock.monotonic()
        order, order_hash = self.signer.sign_order(intent, market)
        t1 = self.clock.monotonic()
        body = self.signer.serialize(order)
        t2 = self.clock.monotonic()
        try:
            self.store.record_signed(intent.intent_id, order_hash, body, self.clock.now_ns())
        except peewee.IntegrityError:
            # This intent already has an order: never a second one.
            self.metrics.incr("orders.duplicate_refused")
            return ExecutionReport(intent.intent_id, "", "REJECTED", error="intent already has an order")
        t3 = self.clock.monotonic()
        self.metrics.timing("stage.sign_ms", (t1 - t0) * 1000)
        self.metrics.timing("stage.serialize_ms", (t2 - t1) * 1000)
        self.metrics.timing("stage.persist_ms", (t3 - t2) * 1000)
        return self._post(intent.intent_id, intent.side, order_hash, body, announce=functools.partial(
            log.info, "order submit %s", order_hash,
            extra={**batch_fields(intent.intent_id, intent.fill_keys), "order_hash": order_hash}))

    def _post(self, intent_id: str, side: Side, order_hash: str, body: str, announce=None) -> ExecutionReport:
        """POST the persisted bytes, retrying the same bytes. announce: called once the first request is out."""
        submit_ns = 0
        ambiguous = False
        last_error = ""
        attempts = 0
        sent: list[int] = []                 # attempts whose request was written
        give_up_at = self.clock.monotonic() + self.cfg.retry_budget_s
        for attempt in range(1, self.cfg.max_post_attempts + 1):
            attempts = attempt
            t = self.clock.monotonic()
            submit_ns = submit_ns or self.clock.now_ns()
            retry_after = None
            try:
                resp = self.transport.request("POST", "/order", body, on_sent=functools.partial(
                    self._sent, intent_id, attempt, submit_ns, sent, t, announce))
            except UnknownOutcome as exc:
                ambiguous, last_error = True, str(exc)
                self.metrics.incr("orders.unknown_outcome")
            except TemporaryError as exc:
                last_error = str(exc)
            else:
                self.metrics.timing("stage.send_ms", (self.clock.monotonic() - t) * 1000)
                try:
                    return self._answer(intent_id, side, order_hash, resp, submit_ns, attempt)
                except TemporaryError as exc:
                    last_error, retry_after = str(exc), exc.retry_after
                    ambiguous = ambiguous or resp.status >= 500
                    self.metrics.incr(f"orders.retry.{resp.status}")
                    if isinstance(exc, RateLimited) and (retry_after or 0) > self.cfg.max_retry_after_s:
                        break
            if not self._wait_to_retry(attempt, retry_after, give_up_at):
                break
        if ambiguous:
            return self._resolve_by_hash(intent_id, side, order_hash, submit_ns, attempts, last_error)
        return self._finish(intent_id, order_hash, "FAILED", submit_ns, attempts, error=last_error)

    def _sent(self, intent_id: str, attempt: int, submit_ns: int, sent: list[int], t0: float, announce) -> None:
        """The request is on the wire: record it while the venue works on it. The signed bytes and hash were
        committed before the first POST; a restart treats SIGNED exactly like POSTING (lookup by hash), so this
        write is bookkeeping and need not hold the order back."""
        self.metrics.timing("stage.request_ms", (self.clock.monotonic() - t0) * 1000)
        t = self.clock.monotonic()
        fields = {"attempts": attempt} if sent else {"status": "POSTING", "submit_ns": submit_ns, "attempts": attempt}
        sent.append(attempt)
        try:
            self.store.update_order(intent_id, self.clock.now_ns(), **fields)
        except peewee.PeeweeException:
            self.metrics.incr("orders.posting_write_failed")
            log.exception("could not record order %s as posted (it stays SIGNED)", intent_id)
        self.metrics.timing("stage.persist_posting_ms", (self.clock.monotonic() - t) * 1000)
        if announce is not None and len(sent) == 1:
            announce()

    def _wait_to_retry(self, attempt: int, retry_after: float | None, give_up_at: float) -> bool:
        """Sleep before the next attempt; False when attempts or the retry budget are spent (the signal ages)."""
        if attempt >= self.cfg.max_post_attempts:
            return False
        delay = min(self.cfg.retry_backoff_s * (2 ** (attempt - 1)), MAX_BACKOFF_S)
        if retry_after:
            delay = max(delay, min(retry_after, self.cfg.max_retry_after_s))
        if self.clock.monotonic() + delay > give_up_at:
            return False
        self.clock.sleep(delay)
        return True

    def _answer(self, intent_id, side, order_hash, resp: Response, submit_ns, attempt) -> ExecutionReport:
        ack_ns = self.clock.now_ns()
        body = resp.body if isinstance(resp.body, dict) else {}
        if resp.status == 200 and body.get("success") and str(body.get("status", "")).lower() in ACCEPTED:
            status = ACCEPTED[str(body["status"]).lower()]
            filled, avg = _amounts(body, side)
            return self._finish(intent_id, order_hash, status, submit_ns, attempt, ack_ns=ack_ns, filled=filled,
                                avg=avg, trade_ids=tuple(body.get("tradeIDs") or ()))
        err = resp.error
        if resp.status in AUTH_ERRORS:
            self._finish(intent_id, order_hash, "REJECTED", submit_ns, attempt, ack_ns=ack_ns, error=err)
            raise OperationalError(f"CLOB rejected our credentials (HTTP {resp.status}): {err}")
        if resp.status == 429:
            raise RateLimited(f"429 {err}", retry_after=_retry_after(resp))
        if resp.status in (425, 500, 502, 503, 504) or resp.status > 500:
            raise TemporaryError(f"{resp.status} {err}", retry_after=_retry_after(resp))
        if FAK_NO_MATCH in err:
            return self._finish(intent_id, order_hash, "KILLED", submit_ns, attempt, ack_ns=ack_ns, error=err)
        if DUPLICATE in err.lower():
            # An earlier attempt of these same bytes reached the venue: ask it what happened.
            return self._resolve_by_hash(intent_id, side, order_hash, submit_ns, attempt, err)
        self.metrics.incr("orders.rejected")
        return self._finish(intent_id, order_hash, "REJECTED", submit_ns, attempt, ack_ns=ack_ns, error=err)

    def _lookup(self, order_hash: str) -> tuple[str, float, float] | None:
        """The venue's record of our order: (status, matched shares, price), or None when it does not know the
        hash. Raises UnknownOutcome when the venue cannot answer."""
        for attempt in range(3):
            try:
                resp = self.transport.request("GET", f"/data/order/{order_hash}")
            except TemporaryError:
                self._backoff(attempt + 1, None)
                continue
            if resp.status >= 500 or resp.status == 429:
                self._backoff(attempt + 1, _retry_after(resp))
                continue
            self.metrics.incr("orders.lookups")
            return parse_order_lookup(resp.body) if resp.status == 200 else None
        raise UnknownOutcome(f"no answer to the lookup of {order_hash}")

    def _resolve_by_hash(self, intent_id, side, order_hash, submit_ns, attempts, error) -> ExecutionReport:
        try:
            found = self._lookup(order_hash)
        except UnknownOutcome:
            # Still unknown: left UNKNOWN, counted as in flight; reconcile() asks again.
            return self._finish(intent_id, order_hash, "UNKNOWN", submit_ns, attempts, error=error)
        return self._settle_lookup(intent_id, order_hash, found, submit_ns, attempts, error)

    def _settle_lookup(self, intent_id, order_hash, found, submit_ns, attempts, error) -> ExecutionReport:
        if found is None:
            return self._finish(intent_id, order_hash, "FAILED", submit_ns, attempts,
                                error=f"not found at venue after: {error}")
        status, matched, price = found
        return self._finish(intent_id, order_hash, status, submit_ns, attempts, ack_ns=self.clock.now_ns(),
                            filled=matched, avg=price if matched else 0.0)

    def _finish(self, intent_id, order_hash, status, submit_ns, attempts, *, ack_ns=0, filled=0.0, avg=0.0,
                error="", trade_ids=()) -> ExecutionReport:
        self.store.update_order(intent_id, self.clock.now_ns(), status=status, ack_ns=ack_ns, filled_size=filled,
                                avg_price=avg, error=error[:500], attempts=attempts)
        self.metrics.incr(f"orders.status.{status.lower()}")
        return ExecutionReport(intent_id, order_hash, status, filled_size=filled, avg_price=avg, error=error,
                               submit_ns=submit_ns, ack_ns=ack_ns, attempts=attempts, trade_ids=tuple(trade_ids))

    def _backoff(self, attempt: int, retry_after: float | None) -> None:
        delay = self.cfg.retry_backoff_s * (2 ** (attempt - 1))
        if retry_after:
            delay = max(delay, min(retry_after, self.cfg.max_retry_after_s))
        self.clock.sleep(delay)

    # ---- restart -----------------------------------------------------------------------------------------
    def recover(self, may_repost: bool) -> list[ExecutionReport]:
        """Resolve what a previous process left unanswered, by order hash; never re-signs. An order the venue
        never saw is posted again with its persisted bytes (same hash: the venue cannot execute it twice) while
        its signal is fresh and `may_repost` (not halted); otherwise it is FAILED."""
        reports = []
        for iid in self.store.orphan_intents():
            self.store.record_abandoned(iid, "decided but never signed before a restart", self.clock.now_ns())
            reports.append(ExecutionReport(iid, "", "ABANDONED"))
        for row in self.store.unresolved_orders():
            iid, order_hash, body = row["intent_id"], row["order_hash"], row["body"]
            try:
                found = self._lookup(order_hash)
            except UnknownOutcome:
                reports.append(self._finish(iid, order_hash, "UNKNOWN", row["submit_ns"], row["attempts"],
                                            error="no answer to the lookup after a restart"))
                continue
            fresh = self.clock.now_ns() - row["signed_ns"] <= self.max_signal_age_s * 1e9
            if found is None and may_repost and fresh:
                self.metrics.incr("orders.reposted")
                reports.append(self._post(iid, _side_of(body), order_hash, body))
                continue
            reports.append(self._settle_lookup(iid, order_hash, found, row["submit_ns"], row["attempts"],
                                               "recovered after restart"))
        return reports

    def reconcile(self) -> list[ExecutionReport]:
        """Ask the venue again about orders whose outcome stayed UNKNOWN (their lookups got no answer)."""
        reports = []
        for row in self.store.unresolved_orders():
            if row["status"] == "UNKNOWN":
                reports.append(self._resolve_by_hash(row["intent_id"], _side_of(row["body"]), row["order_hash"],
                                                     row["submit_ns"], row["attempts"], row["error"]))
        return reports

    def funds(self) -> Funds | None:
        """The account's pUSD balance and allowances at the venue, or None when it gave no usable answer."""
        path = f"/balance-allowance?asset_type=COLLATERAL&signature_type={self.signature_type}"
        try:
            resp = self.transport.request("GET", path)
            if resp.status == 200:
                return parse_funds(resp.body)
            problem = f"HTTP {resp.status}: {str(resp.body)[:200]}"
        except (TemporaryError, MalformedMessage) as exc:
            problem = str(exc)
        self.metrics.incr("funds.check_errors")
        log.warning("balance-allowance check failed: %s", problem)
        return None

    def keep_warm(self) -> None:
        """Between trades: every executor slot keeps an open, recently used connection to the CLOB."""
        self.transport.keep_warm(self.cfg.executor_concurrency)

    def close(self) -> None:
        self.transport.close()


class PaperExecutor:
    """Dry run: fills against the current book snapshot, same interface and same store records as live."""

    def __init__(self, cfg, *, store: Store, clock, metrics, books):
        self.cfg = cfg.execution
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.books = books

    @classmethod
    def from_config(cls, cfg, secrets, *, store, clock, metrics, books=None) -> "PaperExecutor":
        return cls(cfg, store=store, clock=clock, metrics=metrics, books=books)

    def submit(self, intent: OrderIntent, market: MarketMeta) -> ExecutionReport:
        paper_hash = f"paper:{intent.intent_id}"
        try:
            self.store.record_signed(intent.intent_id, paper_hash, "", self.clock.now_ns())
        except peewee.IntegrityError:
            return ExecutionReport(intent.intent_id, "", "REJECTED", error="intent already has an order")
        submit_ns = self.clock.now_ns()
        log.info("paper order submit", extra={**batch_fields(intent.intent_id, intent.fill_keys),
                                              "order_hash": paper_hash})
        top = None
        if self.books is not None:
            top = self.books.top(intent.asset)
            if top is None:             # a market first seen on this trade: one REST snapshot (cold path)
                self.books.snapshot(intent.asset)
                top = self.books.top(intent.asset)
        filled, cost = 0.0, 0.0
        if top is not None:
            levels = top.asks if intent.side is Side.BUY else top.bids
            remaining = intent.size
            for price, size in levels:
                if (intent.side is Side.BUY and price > intent.price_cap + 1e-9) or \
                   (intent.side is Side.SELL and price < intent.price_cap - 1e-9) or remaining <= 0:
                    break
                take = min(size, remaining)
                filled, cost, remaining = filled + take, cost + take * price, remaining - take
        status = "PAPER_FILLED" if filled > 0 else "PAPER_KILLED"
        avg = cost / filled if filled else 0.0
        self.store.update_order(intent.intent_id, self.clock.now_ns(), status=status, submit_ns=submit_ns,
                                ack_ns=self.clock.now_ns(), filled_size=filled, avg_price=avg, attempts=1,
                                error="" if top is not None else "no book snapshot")
        self.metrics.incr(f"orders.status.{status.lower()}")
        return ExecutionReport(intent.intent_id, paper_hash, status, filled_size=filled, avg_price=avg,
                               submit_ns=submit_ns, ack_ns=self.clock.now_ns())

    def recover(self, may_repost: bool) -> list[ExecutionReport]:
        """Paper orders have no venue to ask: whatever a restart interrupted is abandoned."""
        reports = []
        for iid in self.store.orphan_intents():
            self.store.record_abandoned(iid, "decided but never submitted before a restart", self.clock.now_ns())
            reports.append(ExecutionReport(iid, "", "ABANDONED"))
        for row in self.store.unresolved_orders():
            self.store.update_order(row["intent_id"], self.clock.now_ns(), status="ABANDONED",
                                    error="paper order interrupted by a restart")
            reports.append(ExecutionReport(row["intent_id"], row["order_hash"], "ABANDONED"))
        return reports

    def reconcile(self) -> list[ExecutionReport]:
        return []

    def funds(self) -> Funds | None:
        """Paper trading spends nothing."""
        return None

    def keep_warm(self) -> None:
        pass

    def close(self) -> None:
        pass


def _retry_after(resp: Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None and isinstance(resp.body, dict):
        value = resp.body.get("retry_after_seconds")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _side_of(body: str) -> Side:
    try:
        return Side(json.loads(body)["order"]["side"])
    except (ValueError, KeyError, TypeError):
        return Side.BUY


def _api_creds(cfg, secrets) -> ApiCreds:
    """Creds from the environment, or derived once at start-up with the L1 signature (cold path)."""
    if secrets.api_key:
        return ApiCreds(secrets.api_key, secrets.api_secret, secrets.api_passphrase)
    from py_clob_client_v2.client import ClobClient
    try:
        client = ClobClient(cfg.endpoints.clob, chain_id=cfg.endpoints.chain_id, key=secrets.private_key)
        c = client.create_or_derive_api_key()
    except Exception as exc:  # the SDK raises bare exceptions for HTTP failures
        raise OperationalError(f"could not create or derive CLOB API credentials: {type(exc).__name__}") from None
    return ApiCreds(c.api_key, c.api_secret, c.api_passphrase)
