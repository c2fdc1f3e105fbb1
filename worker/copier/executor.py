"""Executors: turn an OrderIntent into an ExecutionReport. Same interface live and on paper (dry run).

Live order of operations, each step durable before the next:
  1. the gate (halted? stopping? signal age, expiry, market open?)   2. sign once (order hash = EIP-712 digest)
  3. persist the signed bytes (write-ahead)   4. the gate again, then POST (marked POSTING once the request is
     written, while the venue works on it)
  5. on 5xx / 425 / 429 / timeout: the gate, then POST the SAME bytes again (bounded; the venue rejects a duplicate
     hash)   6. still no answer: the venue is asked what happened, by order hash.
Order truth: an order is FAILED only on positive evidence from the venue: a terminal status, or neither the order
nor a trade for it at the venue once the order's horizon has passed. Whatever got no usable answer (404, 401/403,
429, 5xx, an HTML page, a timeout) stays UNKNOWN, reserved against the caps, persisted, and is asked about again with
backoff; LIVE and DELAYED answers are asked about the same way until they end. After a crash, recover() resolves
every persisted-but-unresolved order by hash; nothing is ever re-signed, and only the persisted bytes of an order
the venue never saw are posted again, and only if the gate lets them.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import peewee

from copier.errors import MalformedMessage, OperationalError, RateLimited, TemporaryError, UnknownOutcome
from copier.logs import batch_fields
from copier.schemas import parse_funds, parse_order_lookup, parse_post_order_answer, parse_trades_of_order
from copier.signing import OrderSigner
from copier.store import Store
from copier.transport import ApiCreds, ClobTransport, Response
from copier.types import ExecutionReport, Funds, MarketMeta, OrderIntent, OrderStatus, Side

if TYPE_CHECKING:
    from copier.books import BookCache
    from copier.clock import Clock
    from copier.config import Config, Secrets
    from copier.ports import Metrics, OrderGate

log = logging.getLogger("copier.executor")

FAK_NO_MATCH = "no orders found to match"
DUPLICATE = "duplicated"
VENUE_STATUSES = {s.value: s for s in (OrderStatus.LIVE, OrderStatus.DELAYED, OrderStatus.MATCHED,
                                       OrderStatus.UNMATCHED, OrderStatus.CANCELED)}
AUTH_ERRORS = (401, 403)
MAX_BACKOFF_S = 1.0
RECHECK_FIRST_S = 1.0       # an unresolved order is asked about again after 1 s, then 2, 4 ... up to 30 s
RECHECK_MAX_S = 30.0
MAX_TRADE_PAGES = 20
PAPER_IMPACT_S = 2.0        # how long what a paper order took stays off the paper book
END_CURSOR = "LTE="


class OpenGate:
    """Refuses nothing (replay, benchmarks and tests that are not about the gate)."""

    def refusal(self, intent: OrderIntent) -> tuple[str, str] | None:
        return None


@dataclass(frozen=True, slots=True)
class VenueRecord:
    """What the venue's answers prove about one of our orders."""
    status: OrderStatus        # UNKNOWN when the venue states something we do not know
    matched: float
    price: float


class ClobExecutor:
    def __init__(self, cfg: Config, *, signer: OrderSigner, transport: ClobTransport, store: Store, clock: Clock,
                 metrics: Metrics, gate: OrderGate | None = None) -> None:
        self.cfg = cfg.execution
        self.signer = signer
        self.transport = transport
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.gate: OrderGate = gate or OpenGate()
        self.signature_type = cfg.account.signature_type
        self._rechecks: dict[str, tuple[float, float]] = {}     # order hash -> (next check, delay)

    @classmethod
    def from_config(cls, cfg: Config, secrets: Secrets, *, store: Store, clock: Clock, metrics: Metrics,
                    books: BookCache | None = None, gate: OrderGate | None = None) -> ClobExecutor:
        creds = _api_creds(cfg, secrets)
        signer = OrderSigner(secrets.private_key, cfg.endpoints.chain_id, cfg.account.signature_type,
                             cfg.account.funder, creds.api_key)
        transport = ClobTransport(cfg.endpoints.clob, creds, signer.address, clock=clock,
                                  timeout_s=cfg.execution.post_timeout_s, metrics=metrics)
        transport.warm(cfg.execution.executor_concurrency)
        return cls(cfg, signer=signer, transport=transport, store=store, clock=clock, metrics=metrics, gate=gate)

    # ---- submit ------------------------------------------------------------------------------------------
    def submit(self, intent: OrderIntent, market: MarketMeta) -> ExecutionReport:
        refusal = self._refused(intent)
        if refusal:
            return self._abandon_unsigned(intent, refusal)
        t0 = self.clock.monotonic()
        order, order_hash = self.signer.sign_order(intent, market)
        t1 = self.clock.monotonic()
        body = self.signer.serialize(order)
        t2 = self.clock.monotonic()
        signed_ns = self.clock.now_ns()
        try:
            self.store.record_signed(intent.intent_id, order_hash, body, signed_ns)
        except peewee.IntegrityError:
            # This intent already has an order: never a second one.
            self.metrics.incr("orders.duplicate_refused")
            return ExecutionReport(intent.intent_id, "", OrderStatus.REJECTED, error="intent already has an order")
        t3 = self.clock.monotonic()
        self.metrics.timing("stage.sign_ms", (t1 - t0) * 1000)
        self.metrics.timing("stage.serialize_ms", (t2 - t1) * 1000)
        self.metrics.timing("stage.persist_ms", (t3 - t2) * 1000)
        return self._post(intent, order_hash, body, signed_ns, announce=functools.partial(
            log.info, "order submit %s", order_hash,
            extra={**batch_fields(intent.intent_id, intent.fill_keys), "order_hash": order_hash}))

    def _refused(self, intent: OrderIntent) -> tuple[str, str] | None:
        refusal = self.gate.refusal(intent)
        if refusal:
            self.metrics.incr(f"orders.gate.{refusal[0]}")
            log.warning("order not sent: %s", refusal[1], extra=batch_fields(intent.intent_id, intent.fill_keys))
        return refusal

    def _abandon_unsigned(self, intent: OrderIntent, refusal: tuple[str, str]) -> ExecutionReport:
        """Refused before signing: recorded as never sent, so it is neither retried nor counted in flight."""
        error = f"not sent: {refusal[0]}: {refusal[1]}"
        self.store.record_abandoned(intent.intent_id, error, self.clock.now_ns())
        return ExecutionReport(intent.intent_id, "", OrderStatus.ABANDONED, error=error)

    def _post(self, intent: OrderIntent, order_hash: str, body: str, signed_ns: int,
              announce: Callable[[], None] | None = None) -> ExecutionReport:
        """POST the persisted bytes, retrying the same bytes; the gate is asked before every attempt.
        announce: called once the first request is out."""
        iid, side = intent.intent_id, intent.side
        submit_ns = 0
        ambiguous = False           # an attempt may have reached the venue without a usable answer
        last_error = ""
        attempts = 0
        sent: list[int] = []        # attempts whose request was written
        give_up_at = self.clock.monotonic() + self.cfg.retry_budget_s
        for attempt in range(1, self.cfg.max_post_attempts + 1):
            refusal = self._refused(intent)
            if refusal:
                last_error = f"not sent: {refusal[0]}: {refusal[1]}"
                break
            attempts = attempt
            t = self.clock.monotonic()
            submit_ns = submit_ns or self.clock.now_ns()
            retry_after = None
            try:
                resp = self.transport.request("POST", "/order", body, on_sent=functools.partial(
                    self._sent, iid, attempt, submit_ns, sent, t, announce))
            except UnknownOutcome as exc:
                ambiguous, last_error = True, str(exc)
                self.metrics.incr("orders.unknown_outcome")
            except TemporaryError as exc:
                last_error = str(exc)
            else:
                self.metrics.timing("stage.send_ms", (self.clock.monotonic() - t) * 1000)
                try:
                    return self._answer(iid, side, order_hash, resp, signed_ns, submit_ns, attempt)
                except TemporaryError as exc:
                    last_error, retry_after = str(exc), exc.retry_after
                    ambiguous = ambiguous or resp.status >= 500
                    self.metrics.incr(f"orders.retry.{resp.status}")
                    if isinstance(exc, RateLimited) and (retry_after or 0) > self.cfg.max_retry_after_s:
                        break
            if not self._wait_to_retry(attempt, retry_after, give_up_at):
                break
        if ambiguous:
            return self._resolve(iid, order_hash, signed_ns, submit_ns, attempts, last_error)
        if not sent:
            # No request carrying these bytes was ever written: the venue cannot have the order.
            return self._finish(iid, order_hash, OrderStatus.ABANDONED, submit_ns, attempts,
                                error=last_error or "never sent")
        # Every written attempt got a definite refusal (429, 425): positive evidence it was not taken.
        return self._finish(iid, order_hash, OrderStatus.FAILED, submit_ns, attempts, error=last_error)

    def _sent(self, intent_id: str, attempt: int, submit_ns: int, sent: list[int], t0: float,
              announce: Callable[[], None] | None) -> None:
        """The request is on the wire: record it while the venue works on it. The signed bytes and hash were
        committed before the first POST; a restart treats SIGNED exactly like POSTING (lookup by hash), so this
        write is bookkeeping and need not hold the order back."""
        self.metrics.timing("stage.request_ms", (self.clock.monotonic() - t0) * 1000)
        t = self.clock.monotonic()
        fields = {"attempts": attempt} if sent else {"status": OrderStatus.POSTING, "submit_ns": submit_ns,
                                                     "attempts": attempt}
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

    def _answer(self, intent_id: str, side: Side, order_hash: str, resp: Response, signed_ns: int, submit_ns: int,
                attempt: int) -> ExecutionReport:
        ack_ns = self.clock.now_ns()
        if resp.status == 200:
            try:
                answer = parse_post_order_answer(resp.body, side)
            except MalformedMessage as exc:
                # A 200 we cannot read proves nothing either way: the venue is asked what happened.
                return self._resolve(intent_id, order_hash, signed_ns, submit_ns, attempt, f"unreadable answer: {exc}")
            if answer.accepted:
                status = OrderStatus(answer.status)
                if status is not OrderStatus.MATCHED:
                    # LIVE / DELAYED: not over yet, whatever amounts came with it; UNMATCHED: nothing executed.
                    self._schedule(order_hash, RECHECK_FIRST_S)
                    return self._finish(intent_id, order_hash, status, submit_ns, attempt, ack_ns=ack_ns)
                return self._finish(intent_id, order_hash, status, submit_ns, attempt, ack_ns=ack_ns,
                                    filled=answer.filled_size, avg=answer.avg_price, trade_ids=answer.trade_ids)
        err = resp.error
        if resp.status in AUTH_ERRORS:
            # Our credentials were refused: the order was not taken (an auth failure precedes matching).
            self._finish(intent_id, order_hash, OrderStatus.REJECTED, submit_ns, attempt, ack_ns=ack_ns, error=err)
            raise OperationalError(f"CLOB rejected our credentials (HTTP {resp.status}): {err}")
        if resp.status == 429:
            raise RateLimited(f"429 {err}", retry_after=_retry_after(resp))
        if resp.status in (425, 500, 502, 503, 504) or resp.status > 500:
            raise TemporaryError(f"{resp.status} {err}", retry_after=_retry_after(resp))
        if FAK_NO_MATCH in err:
            return self._finish(intent_id, order_hash, OrderStatus.KILLED, submit_ns, attempt, ack_ns=ack_ns, error=err)
        if DUPLICATE in err.lower():
            # An earlier attempt of these same bytes reached the venue: ask it what happened.
            return self._resolve(intent_id, order_hash, signed_ns, submit_ns, attempt, err)
        if not _venue_refusal(resp):
            # Not the venue's own refusal (an edge's HTML page, an empty 404): nothing proves it was not taken.
            return self._resolve(intent_id, order_hash, signed_ns, submit_ns, attempt, f"HTTP {resp.status}: {err}")
        self.metrics.incr("orders.rejected")
        return self._finish(intent_id, order_hash, OrderStatus.REJECTED, submit_ns, attempt, ack_ns=ack_ns, error=err)

    # ---- order truth -------------------------------------------------------------------------------------
    def _lookup(self, order_hash: str) -> VenueRecord | None:
        """The venue's record of our order, or None when it answers that it has none. Raises UnknownOutcome for
        every other answer: a 404 (not indexed yet), 401/403, 429, 5xx, an HTML page, a timeout, a broken body."""
        resp = self._ask("GET", f"/data/order/{order_hash}")
        try:
            found = parse_order_lookup(resp.body)
        except MalformedMessage as exc:
            raise UnknownOutcome(f"lookup of {order_hash}: {exc}") from None
        if found is None:
            return None
        return VenueRecord(VENUE_STATUSES.get(found.status, OrderStatus.UNKNOWN), found.matched_size, found.price)

    def _traded(self, order_hash: str, signed_ns: int) -> tuple[float, float]:
        """(shares, average price) the venue's trade history shows for our order since it was signed."""
        after = int(signed_ns / 1e9) - 60
        shares = cost = 0.0
        cursor = ""
        for _ in range(MAX_TRADE_PAGES):
            resp = self._ask("GET", f"/data/trades?after={after}" + (f"&next_cursor={cursor}" if cursor else ""))
            try:
                page = parse_trades_of_order(resp.body, order_hash)
            except MalformedMessage as exc:
                raise UnknownOutcome(f"trade history: {exc}") from None
            shares, cost = shares + page.shares, cost + page.shares * page.avg_price
            cursor = page.next_cursor
            if not cursor or cursor == END_CURSOR:
                return shares, (cost / shares if shares else 0.0)
        raise UnknownOutcome("trade history longer than we read")

    def _ask(self, method: str, path: str) -> Response:
        """One read of the venue that must be answered with a 200; anything else is no answer."""
        try:
            resp = self.transport.request(method, path)
        except TemporaryError as exc:
            raise UnknownOutcome(str(exc)) from None
        self.metrics.incr("orders.lookups")
        if resp.status != 200:
            self.metrics.incr(f"orders.lookup_status.{resp.status}")
            raise UnknownOutcome(f"{method} {path.partition('?')[0]}: HTTP {resp.status} {resp.error[:100]}")
        return resp

    def _venue_record(self, order_hash: str, signed_ns: int) -> VenueRecord | None:
        """The venue's record of our order; when it has none, its trade history decides (the order index may lag
        the trades). None: neither the order nor a trade of it. Raises UnknownOutcome when either gave no answer."""
        found = self._lookup(order_hash)
        if found is None:
            shares, price = self._traded(order_hash, signed_ns)
            if shares > 0:
                found = VenueRecord(OrderStatus.MATCHED, shares, price)
        elif found.matched > 0 and not found.status.unresolved:
            # The order record's price is its limit, not what it filled at: the trade history has the average.
            # Without an answer from it the limit stands: the worst price the order could have filled at.
            try:
                shares, price = self._traded(order_hash, signed_ns)
            except UnknownOutcome as exc:
                log.warning("fill price of %s: %s; the order's limit is used", order_hash, exc)
                shares, price = 0.0, 0.0
            if shares > 0:
                found = VenueRecord(found.status, found.matched, price)
        return found

    def _resolve(self, intent_id: str, order_hash: str, signed_ns: int, submit_ns: int, attempts: int,
                 error: str) -> ExecutionReport:
        try:
            found = self._venue_record(order_hash, signed_ns)
        except UnknownOutcome as exc:
            self._schedule(order_hash)
            return self._finish(intent_id, order_hash, OrderStatus.UNKNOWN, submit_ns, attempts,
                                error=f"{error}; no answer: {exc}")
        return self._conclude(found, intent_id, order_hash, signed_ns, submit_ns, attempts, error)

    def _conclude(self, found: VenueRecord | None, intent_id: str, order_hash: str, signed_ns: int, submit_ns: int,
                  attempts: int, error: str) -> ExecutionReport:
        """FAILED only when the venue has neither the order nor a trade of it past the order's horizon; anything
        short of a final answer leaves the order unresolved, reserved, and asked about again later."""
        if found is None:
            if self.clock.now_ns() - signed_ns > self.cfg.order_horizon_s * 1e9:
                return self._finish(intent_id, order_hash, OrderStatus.FAILED, submit_ns, attempts,
                                    error=f"no such order and no trade of it at the venue "
                                          f"{self.cfg.order_horizon_s:g}s after signing ({error})")
            self._schedule(order_hash)
            return self._finish(intent_id, order_hash, OrderStatus.UNKNOWN, submit_ns, attempts,
                                error=f"{error}; not known at the venue yet")
        if found.status.unresolved:
            self._schedule(order_hash)
        return self._finish(intent_id, order_hash, found.status, submit_ns, attempts, ack_ns=self.clock.now_ns(),
                            filled=found.matched, avg=found.price if found.matched else 0.0)

    def _schedule(self, order_hash: str, delay: float | None = None) -> None:
        """Ask about this unresolved order again, later each time (1 s doubling to 30 s)."""
        previous = self._rechecks.get(order_hash)
        if delay is None:
            delay = RECHECK_FIRST_S if previous is None else min(previous[1] * 2, RECHECK_MAX_S)
        self._rechecks[order_hash] = (self.clock.monotonic() + delay, delay)

    def _finish(self, intent_id: str, order_hash: str, status: OrderStatus, submit_ns: int, attempts: int, *,
                ack_ns: int = 0, filled: float = 0.0, avg: float = 0.0, error: str = "",
                trade_ids: Iterable[str] = ()) -> ExecutionReport:
        if not status.unresolved:
            self._rechecks.pop(order_hash, None)
        self.store.update_order(intent_id, self.clock.now_ns(), status=status, ack_ns=ack_ns, filled_size=filled,
                                avg_price=avg, error=error[:500], attempts=attempts)
        self.metrics.incr(f"orders.status.{status.value.lower()}")
        return ExecutionReport(intent_id, order_hash, status, filled_size=filled, avg_price=avg, error=error,
                               submit_ns=submit_ns, ack_ns=ack_ns, attempts=attempts, trade_ids=tuple(trade_ids))

    # ---- restart and reconciliation ----------------------------------------------------------------------
    def recover(self) -> list[ExecutionReport]:
        """Resolve what a previous process left unanswered, by order hash; never re-signs. An order the venue does
        not know (no order, no trade) is posted again with its persisted bytes (same hash: the venue cannot execute
        it twice) if the gate lets it (not halted, signal fresh from the source fill, market open, not near expiry);
        otherwise it stays unresolved until the venue's answer or its horizon decides."""
        reports = []
        for iid in self.store.orphan_intents():
            self.store.record_abandoned(iid, "decided but never signed before a restart", self.clock.now_ns())
            reports.append(ExecutionReport(iid, "", OrderStatus.ABANDONED))
        for row in self.store.unresolved_orders():
            iid, order_hash, signed_ns = row["intent_id"], row["order_hash"], row["signed_ns"]
            try:
                found = self._venue_record(order_hash, signed_ns)
            except UnknownOutcome:
                reports.append(self._resolve(iid, order_hash, signed_ns, row["submit_ns"], row["attempts"],
                                             "recovered after restart"))
                continue
            intent = self.store.intent(iid) if found is None else None
            if intent is not None and not self._refused(intent):
                self.metrics.incr("orders.reposted")
                reports.append(self._post(intent, order_hash, row["body"], signed_ns))
                continue
            reports.append(self._conclude(found, iid, order_hash, signed_ns, row["submit_ns"], row["attempts"],
                                          "recovered after restart"))
        return reports

    def reconcile(self) -> list[ExecutionReport]:
        """Ask the venue again about orders still unresolved after their answer (UNKNOWN, LIVE, DELAYED), each when
        its backoff is due; orders being posted right now (SIGNED, POSTING) are their executor's."""
        now = self.clock.monotonic()
        reports = []
        for row in self.store.unresolved_orders():
            status, order_hash = OrderStatus(row["status"]), row["order_hash"]
            if status in (OrderStatus.SIGNED, OrderStatus.POSTING):
                continue
            due = self._rechecks.get(order_hash)
            if due is not None and due[0] > now:
                continue
            reports.append(self._resolve(row["intent_id"], order_hash, row["signed_ns"], row["submit_ns"],
                                         row["attempts"], row["error"]))
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


def _venue_refusal(resp: Response) -> bool:
    """A 4xx the venue itself sent about this order: a JSON object naming the error (every recorded refusal has
    that shape). An edge's HTML page or an empty body proves nothing about the order."""
    return 400 <= resp.status < 500 and isinstance(resp.body, dict) and isinstance(resp.body.get("error"), str) \
        and bool(resp.body["error"])


class PaperExecutor:
    """Dry run: fills against the current book snapshot, same interface, same gate and same store records as live.
    The real book never shows a paper order's taking, so what paper orders took at a price stays taken for
    PAPER_IMPACT_S (about as long as makers take to re-quote a level): a remainder order cannot fill twice on it."""

    def __init__(self, cfg: Config, *, store: Store, clock: Clock, metrics: Metrics, books: BookCache | None,
                 gate: OrderGate | None = None) -> None:
        self.cfg = cfg.execution
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.books = books
        self.gate: OrderGate = gate or OpenGate()
        self._taken: dict[tuple[str, Side], list[tuple[float, float, float]]] = {}    # -> [(at, price, shares)]

    @classmethod
    def from_config(cls, cfg: Config, secrets: Secrets, *, store: Store, clock: Clock, metrics: Metrics,
                    books: BookCache | None = None, gate: OrderGate | None = None) -> PaperExecutor:
        return cls(cfg, store=store, clock=clock, metrics=metrics, books=books, gate=gate)

    def submit(self, intent: OrderIntent, market: MarketMeta) -> ExecutionReport:
        refusal = self.gate.refusal(intent)
        if refusal:
            self.metrics.incr(f"orders.gate.{refusal[0]}")
            error = f"not sent: {refusal[0]}: {refusal[1]}"
            self.store.record_abandoned(intent.intent_id, error, self.clock.now_ns())
            return ExecutionReport(intent.intent_id, "", OrderStatus.ABANDONED, error=error)
        paper_hash = f"paper:{intent.intent_id}"
        try:
            self.store.record_signed(intent.intent_id, paper_hash, "", self.clock.now_ns())
        except peewee.IntegrityError:
            return ExecutionReport(intent.intent_id, "", OrderStatus.REJECTED, error="intent already has an order")
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
            now = self.clock.now()
            taken = [t for t in self._taken.get((intent.asset, intent.side), []) if now - t[0] < PAPER_IMPACT_S]
            levels = top.asks if intent.side is Side.BUY else top.bids
            remaining = intent.size
            for price, size in levels:
                if (intent.side is Side.BUY and price > intent.price_cap + 1e-9) or \
                   (intent.side is Side.SELL and price < intent.price_cap - 1e-9) or remaining <= 0:
                    break
                size -= sum(shares for _, p, shares in taken if abs(p - price) < 1e-9)
                take = max(0.0, min(size, remaining))
                if take > 0:
                    taken.append((now, price, take))
                filled, cost, remaining = filled + take, cost + take * price, remaining - take
            self._taken[(intent.asset, intent.side)] = taken
        status = OrderStatus.PAPER_FILLED if filled > 0 else OrderStatus.PAPER_KILLED
        avg = cost / filled if filled else 0.0
        self.store.update_order(intent.intent_id, self.clock.now_ns(), status=status, submit_ns=submit_ns,
                                ack_ns=self.clock.now_ns(), filled_size=filled, avg_price=avg, attempts=1,
                                error="" if top is not None else "no book snapshot")
        self.metrics.incr(f"orders.status.{status.value.lower()}")
        return ExecutionReport(intent.intent_id, paper_hash, status, filled_size=filled, avg_price=avg,
                               submit_ns=submit_ns, ack_ns=self.clock.now_ns())

    def recover(self) -> list[ExecutionReport]:
        """Paper orders have no venue to ask: whatever a restart interrupted is abandoned."""
        reports = []
        for iid in self.store.orphan_intents():
            self.store.record_abandoned(iid, "decided but never submitted before a restart", self.clock.now_ns())
            reports.append(ExecutionReport(iid, "", OrderStatus.ABANDONED))
        for row in self.store.unresolved_orders():
            self.store.update_order(row["intent_id"], self.clock.now_ns(), status=OrderStatus.ABANDONED,
                                    error="paper order interrupted by a restart")
            reports.append(ExecutionReport(row["intent_id"], row["order_hash"], OrderStatus.ABANDONED))
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


def _api_creds(cfg: Config, secrets: Secrets) -> ApiCreds:
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
