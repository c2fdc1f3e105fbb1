"""The positions we hold, kept current while the copier runs: the ledger (positions.py) folded from our settled
orders and the markets' winners in the store, marked on the books the copier follows, written as PnL snapshots, and
reconciled with the venue's own index (the Data API positions endpoint for our address).

The store is the truth about what we did; the venue's index is a second witness that lags (about a minute). A token
whose holding differs by more than `positions.drift_tolerance_shares` is alerted (once, until it agrees again) and
gauged, never overwritten: an unexplained position is a question for the operator, not something to paper over.
Winners are learned from the market channel's `market_resolved`, from Gamma for a held market past its end, and from
the index (`redeemable` at curPrice 1); the first word stands.

A market resolved a day ago (a day of markets under a faster simulator) of which nothing is held but losing tokens is
closed: its realised PnL per day and the losing tokens still held go to the store, and the ledger, the reads of a
start and of every pass leave it out; reconciliation expects those tokens from the store. What the copier holds in
memory and reads at a start is then the open markets and a day of resolved ones, not its whole history. A
settlement recorded after its market closed reaches the report, not these gauges.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import httpx

from copier.alerts import EdgeErrors
from copier.clock import Clock
from copier.config import Config, market_day_s
from copier.errors import MalformedMessage
from copier.exposure import DAY_S, bucket
from copier.ports import Alerts, Books, Metrics, PositionsIndex
from copier.positions import (
    DUST,
    Ledger,
    ResolutionOrigin,
    SourceHoldings,
    book_mark,
    fold,
    holdings_from_fills,
    own_events,
)
from copier.schemas import loads, parse_gamma_winner, parse_positions
from copier.store import Row, Store
from copier.types import MarketResolved, VenuePosition

log = logging.getLogger("copier.positions")

PAGE = 500                  # the positions endpoint's largest page
OVERLAP_NS = 5_000_000_000  # re-read orders updated this long before the newest seen (applied ones are skipped)
MAX_PAGES = 20              # 10,000 positions: beyond that the answer is not used (the offset limit is 10,000)


class PositionsClient:
    """GET /positions of one address, every page. A bad answer (HTML, wrong types, NaN, numbers no position has)
    is counted and gives None; a bad row is counted and skipped, and the answer is then incomplete: None too, since
    a comparison with a partial list would report drift that is not there."""

    def __init__(self, base_url: str, *, metrics: Metrics | None, alerts: Alerts | None, clock: Clock,
                 http: httpx.Client | None = None) -> None:
        self.http = http or httpx.Client(base_url=base_url, timeout=5.0)
        self.metrics = metrics
        self.clock = clock
        self.edge = EdgeErrors("positions", metrics=metrics, alerts=alerts, clock=clock, logger=log)

    def fetch(self, address: str) -> list[VenuePosition] | None:
        out: list[VenuePosition] = []
        try:
            for page in range(MAX_PAGES):
                # A cache-buster, as the gap-filler: CloudFront would serve one URL's answer for minutes.
                resp = self.http.get("/positions", params={"user": address, "sizeThreshold": 0, "limit": PAGE,
                                                           "offset": page * PAGE, "_": self.clock.now_ns()})
                if resp.status_code != 200:
                    log.warning("positions of %s: HTTP %d", address, resp.status_code)
                    self._count("positions.fetch_errors")
                    return None
                answer = parse_positions(resp.content)
                for refused in answer.refused:
                    self.edge.refused(refused.reason, f"positions row: {refused.detail}")
                if answer.refused:
                    return None
                out += answer.positions
                if len(answer.positions) < PAGE:
                    return out
        except httpx.HTTPError as exc:
            log.warning("positions of %s: %s", address, exc)
            self._count("positions.fetch_errors")
            return None
        except MalformedMessage as exc:
            self.edge.malformed(exc)
            return None
        except Exception as exc:
            self.edge.failed("positions", exc)
            return None
        log.warning("positions of %s: more than %d rows, not used", address, PAGE * MAX_PAGES)
        return None

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.incr(name)


class PositionWatch:
    def __init__(self, cfg: Config, *, store: Store, books: Books, client: PositionsIndex, clock: Clock,
                 metrics: Metrics, alerts: Alerts, our_address: str, gamma: httpx.Client | None = None) -> None:
        """our_address: the wallet our orders trade for (the funder, or the signer for an EOA); "" on paper, where
        the venue holds nothing of ours and there is nothing to reconcile."""
        self.cfg = cfg
        self.store = store
        self.books = books
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self.alerts = alerts
        self.our_address = our_address.lower()
        self.gamma = gamma or httpx.Client(base_url=cfg.endpoints.gamma, timeout=5.0)
        self.gamma_edge = EdgeErrors("gamma", metrics=metrics, alerts=alerts, clock=clock, logger=log)
        self.ledger = Ledger()
        self._applied: dict[str, str] = {}          # intent id -> condition id, of the orders already in the ledger
        self._updated_ns = 0                        # the newest update of an order in the ledger
        self._resolution_id = 0                     # the last resolution row in the ledger
        self._redemption_id = 0                     # the last confirmed redemption row in the ledger
        self._resolved_at: dict[str, float] = {}    # condition id -> when its winner was learned (open markets)
        self._close_after_s = market_day_s(cfg)
        today = bucket(clock.now(), DAY_S)
        # The closed markets' realised PnL: in all, and per UTC day for today and yesterday.
        self._closed_total, self._closed_by_day = store.closed_realized(today - DAY_S)
        self._market_end: dict[str, float] = {}     # condition id -> market end (of the markets we traded)
        self._last_trade: dict[str, float] = {}     # asset -> our last fill
        self._drifting: set[str] = set()            # assets alerted for drift and not yet back in agreement
        self._written: dict[str, Row] = {}          # asset -> the valuation last written to the snapshots

    # ---- the ledger --------------------------------------------------------------------------------------
    def refresh(self) -> Ledger:
        """Apply what the store learned since the last pass: settled orders and winners, in time order."""
        # Re-read a little before the newest update seen: two orders can settle within one clock tick.
        fresh = [r for r in self.store.own_fills(max(0, self._updated_ns - OVERLAP_NS), open_only=True)
                 if r["intent_id"] not in self._applied]
        winners = self.store.resolutions(self._resolution_id, open_only=True)
        redeemed = self.store.redeemed_markets(self._redemption_id, open_only=True)
        self.ledger = fold(own_events(fresh, winners, [(cid, at) for _, cid, at in redeemed]), self.ledger)
        self._resolution_id = max((r["id"] for r in winners), default=self._resolution_id)
        self._redemption_id = max((row_id for row_id, _, _ in redeemed), default=self._redemption_id)
        for r in winners:
            self._resolved_at[r["condition_id"]] = r["resolved_at"]
        for r in fresh:
            self._applied[r["intent_id"]] = r["condition_id"]
            self._updated_ns = max(self._updated_ns, r["updated_ns"])
            self._market_end[r["condition_id"]] = r["market_end_ts"]
            self._last_trade[r["asset"]] = max(self._last_trade.get(r["asset"], 0.0), r["at"])
        return self.ledger

    def held_assets(self) -> list[str]:
        """Tokens of the open positions: their books mark them, and their channel says when they resolve (after a
        restart they may lie outside the windows the catalog warms)."""
        return [a for a, p in self.refresh().positions.items() if p.size > DUST and not p.resolved]

    def on_resolved(self, event: MarketResolved) -> None:
        """The market channel's `market_resolved` (a callback of the book cache)."""
        if self.store.record_resolution(event.market, event.winning_asset, self.clock.now(),
                                        ResolutionOrigin.MARKET_WS.value):
            log.info("market %s resolved: winner %s", event.market, event.winning_asset[:12])

    # ---- periodic tasks ----------------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Mark every position on its book and write a PnL snapshot row for each one whose valuation changed since
        the last row written (an open position every pass, as its mark moves; a closed or resolved one once);
        gauge the totals."""
        ledger = self.refresh()
        now = self.clock.now()
        realized = ledger.realized_by_market()
        rows: list[Row] = []
        unrealized_total = redeemable_usd = 0.0
        held = 0
        for asset, p in ledger.positions.items():
            mark = p.mark(book_mark(self.books.top(asset)))
            unrealized = p.unrealized(mark)
            unrealized_total += unrealized
            redeemable_usd += p.size if p.redeemable else 0.0
            held += 1 if p.size > DUST and not p.resolved else 0
            row = dict(condition_id=p.condition_id, asset=asset, outcome=p.outcome, size=p.size, cost=p.cost,
                       mark=mark, realized=realized.get(p.condition_id, 0.0), unrealized=unrealized,
                       redeemable=p.redeemable)
            if self._written.get(asset) != row:
                self._written[asset] = row
                rows.append(dict(row, at=now, day=bucket(now, DAY_S)))
        self._forget_closed(ledger, now)
        if rows:
            self.store.record_pnl_snapshot(rows)
        today = bucket(now, DAY_S)
        self.metrics.gauge("pnl.realized_usd", self.ledger.realized_total() + self._closed_total)
        self.metrics.gauge("pnl.realized_today_usd", self.ledger.realized_by_day().get(today, 0.0)
                           + self._closed_by_day.get(today, 0.0))
        self.metrics.gauge("pnl.unrealized_usd", unrealized_total)
        self.metrics.gauge("positions.open", held)
        self.metrics.gauge("positions.redeemable_usd", redeemable_usd)

    def _forget_closed(self, ledger: Ledger, now: float) -> None:
        """Positions whose market resolved and that hold nothing any more (redeemed, or sold out), once their last
        valuation is written: nothing can change them but a late fill, which the ledger then counts from the winner
        it keeps, as before. Their realised PnL stays in the ledger's realised map. Without this, every token ever
        traded stayed in the ledger, in the snapshots' memory, and in every pass over them."""
        closed = {asset for asset, p in ledger.positions.items()
                  if p.resolved and p.size <= DUST and asset not in self._drifting}
        if closed:
            self.ledger = replace(ledger, positions={a: p for a, p in ledger.positions.items() if a not in closed})
            for asset in closed:
                self._written.pop(asset, None)
            open_markets = {p.condition_id for p in self.ledger.positions.values()}
            for cid in [c for c in self._market_end if c not in open_markets]:
                del self._market_end[cid]
        grace = self.cfg.positions.reconcile_grace_s
        for asset in [a for a, at in self._last_trade.items() if now - at >= grace]:
            del self._last_trade[asset]             # past the grace, a missing entry compares the same
        self._close_settled(now)

    def _close_settled(self, now: float) -> None:
        """Close the markets resolved at least a day ago of which the ledger holds nothing but losing tokens (none
        drifting): their realised PnL per day (a row of 0 for one that realised nothing) and those tokens go to the
        store, and the ledger forgets their positions, winner and realised amounts."""
        cutoff = now - self._close_after_s
        live = {p.condition_id for a, p in self.ledger.positions.items()
                if not p.resolved or p.redeemable or a in self._drifting}
        done = {cid for cid, at in self._resolved_at.items() if at <= cutoff and cid not in live}
        if not done:
            return
        rows = [(cid, day, amount) for (cid, day), amount in self.ledger.realized.items() if cid in done]
        realized = {cid for cid, _, _ in rows}
        rows += [(cid, bucket(self._resolved_at[cid], DAY_S), 0.0) for cid in sorted(done - realized)]
        losing = [(a, p.condition_id, p.size) for a, p in self.ledger.positions.items()
                  if p.condition_id in done and p.size > DUST]
        self.store.close_markets(rows, losing, now)
        today = bucket(now, DAY_S)
        for _, day, amount in rows:
            self._closed_total += amount
            if day >= today - DAY_S:
                self._closed_by_day[day] = self._closed_by_day.get(day, 0.0) + amount
        for day in [d for d in self._closed_by_day if d < today - DAY_S]:
            del self._closed_by_day[day]
        self.ledger = replace(self.ledger,
                              positions={a: p for a, p in self.ledger.positions.items() if p.condition_id not in done},
                              realized={k: v for k, v in self.ledger.realized.items() if k[0] not in done},
                              winners={c: w for c, w in self.ledger.winners.items() if c not in done})
        for asset, _, _ in losing:
            self._written.pop(asset, None)
        for cid in done:
            del self._resolved_at[cid]
            self._market_end.pop(cid, None)
        self._applied = {iid: cid for iid, cid in self._applied.items() if cid not in done}

    def check_resolutions(self) -> None:
        """Gamma, for the winner of every market we hold past its end whose resolution we have not heard of (the
        copier may have been down when the market channel said it)."""
        ledger = self.refresh()
        now = self.clock.now()
        pending = {p.condition_id for p in ledger.positions.values()
                   if p.size > DUST and not p.resolved and 0 < self._market_end.get(p.condition_id, 0.0) < now}
        for cid in sorted(pending):
            try:
                # closed=true: Gamma's /markets lists only open markets unless asked otherwise.
                resp = self.gamma.get("/markets", params={"condition_ids": cid, "closed": "true"})
                resp.raise_for_status()
                doc = loads(resp.content, "gamma answer", 8 * 1024 * 1024)
                for m in doc if isinstance(doc, list) else [doc]:
                    won = parse_gamma_winner(m)
                    if won is not None and won[0] == cid:
                        self.store.record_resolution(cid, won[1], now, ResolutionOrigin.GAMMA.value)
            except httpx.HTTPError as exc:
                log.warning("gamma resolution of %s: %s", cid, exc)
            except MalformedMessage as exc:
                self.gamma_edge.malformed(exc)

    def reconcile(self) -> None:
        """Our holdings against the venue's index for our address: drift alerted and gauged, never overwritten."""
        if not self.our_address:
            return
        venue = self.client.fetch(self.our_address)
        if venue is None:
            return
        now = self.clock.now()
        theirs = {v.asset: v for v in venue}
        for v in venue:
            if v.redeemable and v.cur_price == 1.0:
                self.store.record_resolution(v.condition_id, v.asset, now, ResolutionOrigin.POSITIONS.value)
        ledger = self.refresh()
        closed = self.store.closed_holdings(sorted(a for a in theirs if a not in ledger.positions))
        drift = _drift(ledger, theirs, closed, self._last_trade, now, self.cfg.positions.reconcile_grace_s,
                       self.cfg.positions.drift_tolerance_shares)
        self.metrics.gauge("positions.drift_tokens", len(drift))
        new = {asset: sizes for asset, sizes in drift.items() if asset not in self._drifting}
        for asset, (ours, venue_size) in new.items():
            log.error("position drift on token %s: the store says %.6f shares, the venue's index %.6f", asset, ours,
                      venue_size)
            self.metrics.incr("positions.drift")
        if new:
            # One alert per pass naming every token that started to drift (alerts are rate limited per kind).
            lines = [f"{asset[:16]}… store {ours:.6f} / venue {venue_size:.6f}"
                     for asset, (ours, venue_size) in sorted(new.items())]
            self.alerts.alert("position_drift", f"position drift on {len(new)} token(s): {'; '.join(lines[:10])}",
                              assets=sorted(new)[:10])
        for asset in self._drifting - set(drift):
            log.info("position on token %s agrees with the venue again", asset[:16])
        self._drifting = set(drift)

    # ---- the source, for the exit rule -------------------------------------------------------------------
    def seed_source(self, holdings: SourceHoldings, source_wallet: str) -> None:
        """The source's holdings at start: its positions on the venue's index, or else its fills in the store over
        the last day (what we saw it trade)."""
        now = self.clock.now()
        venue = self.client.fetch(source_wallet)
        if venue is not None:
            held = {v.asset: v.size for v in venue if v.size > DUST}
            log.info("source holdings seeded from the positions endpoint: %d tokens", len(held))
        else:
            day = market_day_s(self.cfg)
            held = {a: s for a, s in holdings_from_fills(self.store.source_fills(since=now - day)).items()
                    if s > DUST}
            log.warning("source holdings seeded from the store's fills (the positions endpoint did not answer): %d "
                        "tokens", len(held))
        holdings.seed(held, now)
        self.store.record_source_seed(now, held)


def _drift(ledger: Ledger, theirs: Mapping[str, VenuePosition], closed: Mapping[str, float],
           last_trade: Mapping[str, float], now: float, grace_s: float, tolerance: float) \
        -> dict[str, tuple[float, float]]:
    """asset -> (our shares, the index's shares) where they differ by more than the tolerance; closed: the losing
    tokens held when their market closed (out of the ledger). Not compared: a token we traded within the grace (the
    index lags), and a resolved market the index no longer lists (redeemed)."""
    out = {}
    for asset in set(ledger.positions) | set(theirs):
        if now - last_trade.get(asset, 0.0) < grace_s:
            continue
        p = ledger.positions.get(asset)
        ours = p.size if p is not None else closed.get(asset, 0.0)
        venue = theirs[asset].size if asset in theirs else 0.0
        if p is not None and p.resolved and asset not in theirs:
            continue
        if abs(ours - venue) > tolerance:
            out[asset] = (ours, venue)
    return out
