"""PnL for `copier report` and `copier positions`, from the store alone.

Ours: the ledger folded from our settled orders (fees included) and the markets' winners. Realised PnL counts a
resolved market at its resolution value (1 per winning token, 0 per losing one) whether or not its winning tokens
were redeemed yet: redemption turns tokens into pUSD at that value and changes cash, not PnL. The source's: the
same fold over its fills as the copier saw them, without fees (the feeds do not carry the source's fees), on the
markets we traded. Return on notional = realised PnL / what was spent on BUYs (fees included); tracking error = the
root mean square, over resolved markets both traded, of our return minus the source's.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from copier.positions import (
    DUST,
    Ledger,
    Resolution,
    ResolutionOrigin,
    Trade,
    fold,
    fold_realizations,
    own_events,
)
from copier.types import Side

if TYPE_CHECKING:
    from copier.store import Record, Row, Store

TEXT_MARKETS = 20           # market lines in the text report (the JSON has all of them)
PNL_STEP_S = 3600.0         # PnL over time: one point per UTC hour that changed it


@dataclass(frozen=True)
class OwnPnl:
    """Our settled orders (store.own_fills rows, oldest first), the ledger folded from them and the markets'
    winners and redemptions, and every amount it realised as (instant, pUSD) in event order."""
    fills: list[Row]
    ledger: Ledger
    realizations: list[tuple[float, float]]

    @classmethod
    def read(cls, store: Store, record: Record | None = None, resolutions: list[Row] | None = None) -> OwnPnl:
        """record: the report's record, whose orders are not read again."""
        fills = store.own_fills() if record is None else store.own_fills_with(record)
        redeemed = [(cid, at) for _, cid, at in store.redeemed_markets()]
        events = own_events(fills, store.resolutions() if resolutions is None else resolutions, redeemed)
        return cls(fills, *fold_realizations(events))


@dataclass(frozen=True)
class PnlPoint:
    at: float                       # epoch s
    realized: float                 # realised PnL so far, USD: every realisation since the store's first order
    unrealized: float | None        # the open positions' unrealised PnL at the last snapshot by then (None: none yet)

    @property
    def marked(self) -> float | None:
        return None if self.unrealized is None else self.realized + self.unrealized


def pnl_over_time(realizations: Iterable[tuple[float, float]], marks: Iterable[tuple[float, str, float]],
                  since: float, step_s: float = PNL_STEP_S) -> list[PnlPoint]:
    """Our PnL over time from `since` on: realised PnL accumulated from every realisation (instant, USD) and the
    unrealised PnL of the latest snapshot row of each position (instant, asset, USD), one point at the last change
    within each `step_s` (UTC-aligned), preceded by the value at `since` when there is history before it."""
    changes = sorted([(at, 0, amount, "") for at, amount in realizations]
                     + [(at, 1, unrealized, asset) for at, asset, unrealized in marks], key=lambda c: (c[0], c[1]))
    realized = 0.0
    unrealized: dict[str, float] = {}
    points: list[PnlPoint] = []

    def point(at: float) -> PnlPoint:
        return PnlPoint(at, realized, sum(unrealized.values()) if unrealized else None)

    last_at, pending, history = 0.0, False, False   # pending: a change at last_at (>= since) not yet in a point
    for at, kind, value, asset in changes:
        if pending and at // step_s != last_at // step_s:
            points.append(point(last_at))
            pending = False
        if at >= since and history and not points and not pending:
            points.append(point(since))     # what the history before `since` left
        if kind == 0:
            realized += value
        else:
            unrealized[asset] = value
        last_at, pending, history = at, at >= since, history or at < since
    if pending:
        points.append(point(last_at))
    elif history and not points:
        points.append(point(since))         # nothing changed from `since` on: the value it had then
    return points


class StorePnl:
    """`copier report --html`'s PnL over time (report_html's PnlSource), from the store: our ledger's realisations
    (the PnL section's fold) and the PnL snapshots the running copier writes."""

    def __init__(self, store: Store, record: Record | None = None) -> None:
        self.store = store
        self.record = record

    def pnl_points(self, since: float) -> list[PnlPoint]:
        realizations = OwnPnl.read(self.store, self.record).realizations
        return pnl_over_time(realizations, self.store.pnl_marks(), since)


def ledger_from_store(store: Store) -> Ledger:
    """Our whole ledger, folded once from the store (`copier positions`)."""
    return OwnPnl.read(store).ledger


def source_ledger(store: Store, resolutions: list[Row], record: Record | None = None) -> Ledger:
    """The source's fills as the copier decided them (every fill it saw, copied or not), with the markets' winners.
    record: the report's record, whose fills are not read again."""
    if record is None:
        fills = store.source_fills()
    else:
        fills = store.fills_before(record.since) + record.fills
        fills.sort(key=itemgetter("match_ts", "id"))
    trades: list[Trade | Resolution] = [
        Trade(r["condition_id"], r["asset"], r["outcome"], _SIDE[r["side"]], r["size"], r["price"], 0.0, r["match_ts"])
        for r in fills]
    trades += [Resolution(r["condition_id"], r["winning_asset"], r["resolved_at"], ResolutionOrigin(r["origin"]))
               for r in resolutions]
    return fold(sorted(trades, key=lambda e: e.at))


_SIDE = {side.value: side for side in Side}


def _day(day: int) -> str:
    return datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")


def _ret(pnl: float, notional: float) -> float | None:
    return round(100.0 * pnl / notional, 4) if notional > DUST else None


def pnl_section(store: Store, record: Record | None = None) -> dict[str, Any]:
    """record: the report's record from its `since` on (None: the whole history, read here)."""
    since = 0.0 if record is None else record.since
    # One read of our orders serves the fold and the market order: a running copier may add fills meanwhile.
    resolutions = store.resolutions()
    own = OwnPnl.read(store, record, resolutions)
    fills, ours, theirs = own.fills, own.ledger, source_ledger(store, resolutions, record)
    snapshot = store.latest_pnl_snapshot()
    ours_realized, ours_bought = ours.realized_by_market(), ours.bought_by_market()
    src_realized, src_bought = theirs.realized_by_market(), theirs.bought_by_market()
    first_day = int(since // 86400) * 86400
    markets = []
    errors = []
    first_traded = list(dict.fromkeys(r["condition_id"] for r in fills))
    for cid in first_traded:
        resolved = cid in ours.winners
        ours_ret, src_ret = _ret(ours_realized.get(cid, 0.0), ours_bought[cid]), \
            _ret(src_realized.get(cid, 0.0), src_bought.get(cid, 0.0))
        if resolved and ours_ret is not None and src_ret is not None:
            errors.append(ours_ret - src_ret)
        markets.append({"condition_id": cid, "resolved": resolved,
                        "realized_usd": round(ours_realized.get(cid, 0.0), 6),
                        "bought_usd": round(ours_bought[cid], 6), "return_pct": ours_ret,
                        "source_realized_usd": round(src_realized.get(cid, 0.0), 6),
                        "source_bought_usd": round(src_bought.get(cid, 0.0), 6), "source_return_pct": src_ret})
    by_day = {_day(d): round(v, 6) for d, v in sorted(ours.realized_by_day().items()) if d >= first_day}
    return {
        "realized_usd": round(ours.realized_total(), 6),
        "fees_usd": round(ours.fees, 6),
        "unrealized_usd": round(sum(r["unrealized"] for r in snapshot), 6),
        "unrealized_at": max((r["at"] for r in snapshot), default=None),
        "redeemable_shares": round(sum(p.size for p in ours.positions.values() if p.redeemable), 6),
        "by_day": by_day,
        "markets": markets,
        "tracking_error_pct": round(math.sqrt(sum(e * e for e in errors) / len(errors)), 4) if errors else None,
        "tracked_markets": len(errors),
        "note": "realised PnL counts a resolved market at its resolution value, redeemed or not",
    }


def render_pnl(pnl: dict[str, Any]) -> list[str]:
    lines = [f"pnl realised        {pnl['realized_usd']:.2f} USD (fees {pnl['fees_usd']:.2f} included; resolved "
             f"markets at their resolution value, redeemed or not), unrealised {pnl['unrealized_usd']:.2f} USD "
             f"(last snapshot), {pnl['redeemable_shares']:g} winning shares held"]
    for day, amount in pnl["by_day"].items():
        lines.append(f"pnl {day}      {amount:+.2f} USD realised")
    te = pnl["tracking_error_pct"]
    lines.append(f"tracking error      {'n/a' if te is None else f'{te:.2f} pp'} (RMS of our return on notional "
                 f"minus the source's, over {pnl['tracked_markets']} resolved markets)")
    for m in pnl["markets"][-TEXT_MARKETS:]:
        ours = "n/a" if m["return_pct"] is None else f"{m['return_pct']:+.1f}%"
        theirs = "n/a" if m["source_return_pct"] is None else f"{m['source_return_pct']:+.1f}%"
        lines.append(f"  {m['condition_id'][:12]}  {'resolved' if m['resolved'] else 'open    '}  ours "
                     f"{m['realized_usd']:+.2f} on {m['bought_usd']:.2f} ({ours})   source "
                     f"{m['source_realized_usd']:+.2f} on {m['source_bought_usd']:.2f} ({theirs})")
    return lines


def positions_table(store: Store) -> list[dict[str, Any]]:
    """Open positions (and resolved ones whose tokens are still held): size, cost, mark, unrealised PnL, redeemable.
    The mark is the last snapshot's (the running copier marks on its books), 1 or 0 once resolved."""
    ledger = ledger_from_store(store)
    marks = {r["asset"]: r["mark"] for r in store.latest_pnl_snapshot()}
    out = []
    for asset, p in ledger.positions.items():
        if p.size <= DUST:
            continue
        mark = p.mark(marks.get(asset))
        out.append({"condition_id": p.condition_id, "asset": asset, "outcome": p.outcome, "size": round(p.size, 6),
                    "cost": round(p.cost, 6), "avg_cost": round(p.avg_cost, 6), "mark": mark,
                    "unrealized": round(p.unrealized(mark), 6), "resolved": p.resolved, "redeemable": p.redeemable})
    return out


def render_positions(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'market':<14}{'outcome':<9}{'size':>10}{'cost':>10}{'mark':>8}{'unrealised':>12}  state"]
    for r in rows:
        mark = "n/a" if r["mark"] is None else f"{r['mark']:.3f}"
        state = "redeemable" if r["redeemable"] else "resolved" if r["resolved"] else "open"
        lines.append(f"{r['condition_id'][:12]:<14}{r['outcome'][:8]:<9}{r['size']:>10.2f}{r['cost']:>10.2f}"
                     f"{mark:>8}{r['unrealized']:>+12.2f}  {state}")
    if not rows:
        lines.append("(no positions)")
    return "\n".join(lines)
