"""`copier report` and `copier status`, computed from the store alone, plus the PRD acceptance verdict.

Delays are recomputed exactly from persisted timestamps:
- copy delay  = order submit instant - fill receive instant (ingest -> submit), per fill (including the time a
  trailing fill waits for its burst to go quiet) and per leading order;
- order delay = order submit instant - receive instant of the newest fill it copies: how fast the bot acts on what
  it knows. The PRD's delay criterion is judged on this one: with <=2 orders per burst, a fill early in a 1-second
  burst must wait for the burst to end, so per-fill delay measures the source's burst length, not the bot;
- detection lag = first arrival on any feed - source match time, from the per-feed sightings (see
  `detection_section`). A fill first seen unconfirmed (mempool) that had to wait for confirmation before a trailing
  order counts its copy and order delays from its confirming sighting, when it became actionable.
Copied means filled. An intent is *eligible* when its batch passed the policy filters (its decision is an order) or
was refused only for want of liquidity inside the budget (`no_liquidity_within_budget`: it stays in the denominator).
Its *intended* size is the decision's size; its *filled* size is what its orders filled (the first order and any
remainder orders). The headline is filled notional / intended notional, both at the source's price, so a partial
fill counts by its fraction and a killed order by nothing. A fill is copied by the fraction its intent filled.
Slippage is signed per side so that positive is always worse for us: BUY (our average - source) / source, SELL
(source - our average) / source, in bps, over the orders that filled.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from copier.config import Config, market_day_s
from copier.errors import ConfigError
from copier.exposure import bucket, fill_cost
from copier.pnl_report import pnl_section, render_pnl
from copier.types import UNRESOLVED, Side

if TYPE_CHECKING:
    from copier.store import Record, Store

ANSWERED = {"LIVE", "MATCHED", "DELAYED", "UNMATCHED", "KILLED", "CANCELED", "PAPER_FILLED", "PAPER_KILLED"}
KILLED = {"KILLED", "PAPER_KILLED", "UNMATCHED"}
BURST_FILLS, BURST_WINDOW_S, BURST_MAX_ORDERS = 5, 2.0, 2
NO_LIQUIDITY = "no_liquidity_within_budget"
UNRESOLVED_STATUSES = {s.value for s in UNRESOLVED}
FILLED_TARGET_PCT = 90.0    # filled / intended notional the acceptance asks for (at a budget of 300 bps)


_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None, now: float = 0.0) -> float | None:
    """Epoch seconds, an ISO-8601 instant, or a span back from `now` (7d, 12h, 30m, 90s)."""
    if text is None:
        return None
    if m := _AGO.fullmatch(text.strip()):
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
        raise ConfigError(f"--since: expected a finite instant, got {text!r}")
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since: expected epoch seconds, an ISO-8601 instant or a span such as 7d, 12h, 30m, "
                          f"got {text!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    return _ranked(sorted(values), q)


def _ranked(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _dist(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"n": len(values), "p50": _ranked(ordered, 50), "p95": _ranked(ordered, 95), "p99": _ranked(ordered, 99),
            "max": max(values) if values else None}


def intent_fills(intents: dict[str, Any], orders_by_intent: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per eligible intent: intended shares, filled shares (its orders and its remainder orders), their cost, and
    the source's price."""
    children: dict[str, list[str]] = defaultdict(list)
    for iid, i in intents.items():
        if i["parent_id"]:
            children[i["parent_id"]].append(iid)
    out = {}
    for iid, i in intents.items():
        if i["parent_id"] or not (i["decision"] == "order" or i["reason"] == NO_LIQUIDITY):
            continue
        orders = [o for cid in (iid, *children[iid]) for o in orders_by_intent.get(cid, ())]
        filled = sum(o["filled_size"] for o in orders)
        out[iid] = {"intended": i["size"], "filled": filled,
                    "cost": sum(o["filled_size"] * o["avg_price"] for o in orders), "source_price": i["source_price"],
                    "side": 1.0 if i["side"] == "BUY" else -1.0}
    return out


def build_report(store: Store, cfg: Config, since: float | None = None, record: Record | None = None) \
        -> dict[str, Any]:
    """record: the store's record from `since` on, if the caller read it already (`store.record_since`); its
    `since` is the report's."""
    record = record or store.record_since(since or 0.0)
    since = record.since
    fills = record.fills
    intents = {i["intent_id"]: i for i in record.intents}
    orders = record.orders
    orders_by_intent: dict[str, list[dict]] = defaultdict(list)
    for o in orders:
        orders_by_intent[o["intent_id"]].append(o)
    accounts = intent_fills(intents, orders_by_intent)

    refusals: Counter[str] = Counter()
    late_gap_filled = []
    eligible = copied = 0.0
    copy_delay_ms, detection_ms = [], []
    for f in fills:
        detection_ms.append(f["recv_ns"] / 1e6 - f["match_ts"] * 1e3)
        intent = intents.get(f["intent_id"]) if f["intent_id"] else None
        if intent is None:
            continue
        if intent["decision"] != "order":
            refusals[intent["reason"]] += 1
            if f["feed"] == "data_api":
                late_gap_filled.append(f["dedupe_key"])
        account = accounts.get(intent["intent_id"])
        if account is None:
            continue
        eligible += 1
        copied += min(1.0, account["filled"] / account["intended"]) if account["intended"] else 0.0
        answered = [o for o in orders_by_intent.get(intent["intent_id"], ()) if o["status"] in ANSWERED]
        if answered:
            copy_delay_ms.append((answered[0]["submit_ns"] - f["recv_ns"]) / 1e6)
    intended_usd = sum(a["intended"] * a["source_price"] for a in accounts.values())
    filled_usd = sum(min(a["filled"], a["intended"]) * a["source_price"] for a in accounts.values())
    slippage: dict[str, list[float]] = {"BUY": [], "SELL": []}
    for a in accounts.values():
        if a["filled"] > 0 and a["source_price"]:
            avg = a["cost"] / a["filled"]
            slippage["BUY" if a["side"] > 0 else "SELL"].append(a["side"] * (avg - a["source_price"])
                                                                 / a["source_price"] * 1e4)

    newest_recv: dict[str, int] = {}
    for f in fills:
        if f["intent_id"]:
            newest_recv[f["intent_id"]] = max(newest_recv.get(f["intent_id"], 0), f["recv_ns"])
    order_ms = [(o["submit_ns"] - newest_recv[o["intent_id"]]) / 1e6 for o in orders
                if o["submit_ns"] and o["intent_id"] in newest_recv]
    leading_ms = []
    for intent in intents.values():
        if intent["kind"] in ("leading", "single") and intent["decision"] == "order":
            for o in orders_by_intent.get(intent["intent_id"], ()):
                if o["submit_ns"]:
                    leading_ms.append((o["submit_ns"] - intent["first_recv_ns"]) / 1e6)

    statuses = Counter(o["status"] for o in orders)
    sent = [o for o in orders if o["submit_ns"]]
    killed = [o for o in sent if o["status"] in KILLED or (o["status"] in ANSWERED and not o["filled_size"])]
    # An order signed just after `since` may belong to an intent decided just before it: not in `intents`.
    partial = [o for o in sent if o["intent_id"] in intents
               and o["filled_size"] and o["filled_size"] < intents[o["intent_id"]]["size"] - 1e-9]
    n_orders = len(orders)
    rep: dict[str, Any] = {
        "since": since,
        "source_fills": len(fills),
        "eligible_intents": len(accounts),
        "intended_usd": round(intended_usd, 4),
        "filled_usd": round(filled_usd, 4),
        "filled_pct": round(100.0 * filled_usd / intended_usd, 3) if intended_usd else None,
        "no_liquidity_intents": sum(1 for i in intents.values() if i["reason"] == NO_LIQUIDITY),
        "eligible_fills": int(eligible),
        "copied_fills": round(copied, 3),
        "copied_pct": round(100.0 * filled_usd / intended_usd, 3) if intended_usd else None,
        "orders_sent": len(sent),
        "orders_killed": len(killed),
        "orders_partial": len(partial),
        "remainder_orders": sum(1 for i in intents.values() if i["parent_id"]),
        "late_gap_filled_fills": len(late_gap_filled),
        "intents": len(intents),
        "orders": n_orders,
        "orders_per_intent_max": max((len(v) for v in orders_by_intent.values()), default=0),
        "order_status": dict(statuses),
        "success_rate": round(sum(1 for o in sent if o["filled_size"]) / len(sent), 4) if sent else None,
        "failure_rate": (round(sum(1 for o in sent if o["status"] in ("REJECTED", "FAILED", "UNKNOWN")) / len(sent), 4)
                         if sent else None),
        "copy_delay_ms": _dist(copy_delay_ms),
        "leading_copy_delay_ms": _dist(leading_ms),
        "order_delay_ms": _dist(order_ms),
        "slippage_bps": {side: _dist(values) for side, values in slippage.items()},
        "refusals": dict(refusals),
        "decided_on_feed": dict(Counter(f["feed"] for f in fills)),
    }
    rep["detection"] = detection_section(store, since)
    # Match -> first arrival on any feed; the fills table's receive instant of a fill held for confirmation is
    # its confirming sighting, so it serves only for stores without sightings.
    rep["detection_lag_ms"] = rep["detection"]["first_arrival_lag_ms"] if rep["detection"]["fills"] else \
        _dist(detection_ms)
    rep["acceptance"] = judge(rep, fills, intents, orders_by_intent, accounts, cfg)
    rep["pnl"] = pnl_section(store, record)
    return rep


def judge(rep: dict[str, Any], fills: list[dict[str, Any]], intents: dict[str, Any], orders_by_intent: dict[str, Any],
          accounts: dict[str, dict[str, float]], cfg: Config) -> dict[str, Any]:
    """PRD section 10, each criterion with the ids to investigate when it fails. The copy rate is judged on what
    filled, not on what was sent."""
    failures: dict[str, list] = {}
    dup = [i for i, os_ in orders_by_intent.items() if len(os_) > 1]
    if dup:
        failures["duplicate_executions"] = dup
    if rep["filled_pct"] is not None and rep["filled_pct"] < FILLED_TARGET_PCT:
        failures[f"filled_below_{FILLED_TARGET_PCT:g}pct"] = sorted(
            iid for iid, a in accounts.items() if a["filled"] < a["intended"] - 1e-9)
    d = rep["order_delay_ms"]
    if d["p50"] is not None and (d["p50"] > 300 or d["p95"] > 800):
        failures["copy_delay"] = [f"order delay p50={d['p50']:.1f}ms p95={d['p95']:.1f}ms"]
    breaches = risk_breaches(intents, orders_by_intent, cfg)
    if breaches:
        failures["risk_limit_breaches"] = breaches
    bad_bursts = burst_violations(fills, intents, orders_by_intent, cfg)
    if bad_bursts:
        failures["bursts"] = bad_bursts
    return {"passed": not failures, "failures": failures}


def _committed(intent: dict[str, Any], orders: list[dict[str, Any]]) -> float:
    """What a BUY intent committed: its worst case while unresolved, what its fills cost (taker fee included) once
    resolved."""
    if any(o["status"] in UNRESOLVED_STATUSES for o in orders):
        return float(intent["notional"])
    return sum(fill_cost(Side.BUY, o["filled_size"], o["avg_price"], intent["fee_rate"], intent["fee_exponent"])
               for o in orders if o["filled_size"])


def risk_breaches(intents: dict[str, Any], orders_by_intent: dict[str, Any], cfg: Config) -> list[str]:
    """Every cap, checked afresh from the store: the per-order cap (fees included), per market, per UTC day, and the
    window cap on both of its clocks: any 15 minutes of wall time and each market window."""
    s, eps = cfg.sizing, 1e-6
    window = s.max_total_notional_per_15m_window_usd
    per_market: defaultdict[str, float] = defaultdict(float)
    per_market_window: defaultdict[float, float] = defaultdict(float)
    per_day: defaultdict[int, float] = defaultdict(float)
    buys: list[tuple[float, float]] = []
    out = []
    for iid, intent in intents.items():
        if intent["decision"] != "order":
            continue
        if intent["notional"] > s.max_notional_per_order_usd + eps:
            out.append(f"{iid}: order notional {intent['notional']:.4f} > {s.max_notional_per_order_usd}")
        if intent["side"] != "BUY":
            continue
        amount = _committed(intent, orders_by_intent.get(iid, []))
        per_market[intent["condition_id"]] += amount
        per_market_window[intent["market_end_ts"]] += amount
        per_day[bucket(intent["decided_at"], market_day_s(cfg))] += amount       # the exposure book's day
        buys.append((intent["decided_at"], amount))
    buys.sort()
    start, in_window = 0, 0.0
    for at, amount in buys:
        in_window += amount
        while buys[start][0] <= at - cfg.markets.window_seconds:
            in_window -= buys[start][1]
            start += 1
        if in_window > window + eps:
            out.append(f"15 minutes to {at:.0f}: {in_window:.4f} > {window}")
    out += [f"market {k}: {v:.4f} > {s.max_notional_per_market_usd}"
            for k, v in per_market.items() if v > s.max_notional_per_market_usd + eps]
    out += [f"market window ending {k:.0f}: {v:.4f} > {window}" for k, v in per_market_window.items()
            if v > window + eps]
    out += [f"day {k}: {v:.4f} > {cfg.risk.max_daily_notional_usd}"
            for k, v in per_day.items() if v > cfg.risk.max_daily_notional_usd + eps]
    return out


def _sent(orders: list[dict]) -> bool:
    """An order that reached the signing step (a decision abandoned before signing never left the bot)."""
    return any(not o["order_hash"].startswith("none:") for o in orders)


def burst_violations(fills: list[dict[str, Any]], intents: dict[str, Any], orders_by_intent: dict[str, Any],
                     cfg: Config) -> list[str]:
    """PRD §10 bursts: >=5 source fills within 2 s on one (market, outcome) -> <=2 orders, net size within tolerance.

    Orders are counted in time, the way an exchange sees spam: on one (market, outcome) no 2 s span may hold more
    than 2 order decisions while a burst is in it. Counting by fill membership instead would make a pause inside a
    burst (feed jitter) a violation that only a 2 s hold on every trailing order could avoid, at the cost of the
    delay criterion. The size check compares what the burst's orders asked for with the policy's size for the
    burst's net source size; bursts whose orders a cap shrank or refused are capped on purpose and not judged."""
    fills_by_key: dict[tuple, list[dict]] = defaultdict(list)
    for f in fills:
        fills_by_key[(f["condition_id"], f["outcome"])].append(f)
    order_times: dict[tuple, list[float]] = defaultdict(list)
    for iid, intent in intents.items():
        # A remainder order completes its intent's order: the budget counts decisions, as the coalescer keeps it.
        if intent["decision"] == "order" and not intent["parent_id"] and _sent(orders_by_intent.get(iid, [])):
            order_times[(intent["condition_id"], intent["outcome"])].append(intent["decided_at"])
    out = []
    for key, fs in fills_by_key.items():
        fs.sort(key=lambda f: f["recv_ns"])
        times = sorted(order_times.get(key, ()))
        for cluster in _clusters(fs):
            burst = _burst_span(cluster)
            if burst is None:
                continue
            lo, hi = burst[0] - BURST_WINDOW_S, burst[1] + BURST_WINDOW_S
            near = [t for t in times if lo <= t <= hi]
            for i in range(len(near) - BURST_MAX_ORDERS):
                if near[i + BURST_MAX_ORDERS] - near[i] < BURST_WINDOW_S - 1e-6:
                    out.append(f"{key[0]}/{key[1]} burst from {cluster[0]['dedupe_key']}: "
                               f"{BURST_MAX_ORDERS + 1} orders within {BURST_WINDOW_S:g}s")
                    break
            miss = _size_miss(cluster, intents, cfg)
            if miss is not None:
                out.append(f"{key[0]}/{key[1]} burst from {cluster[0]['dedupe_key']}: {miss}")
    return out


def _clusters(fs: list[dict]) -> list[list[dict]]:
    """Runs of fills less than the burst window apart, joined with the next run when a batch spans both (a batch
    the order budget holds takes a fill that arrives 2 s or more after the one before it), so each run owns its
    intents."""
    runs: list[list[dict]] = []
    for f in fs:
        close = runs and f["recv_ns"] - runs[-1][-1]["recv_ns"] < BURST_WINDOW_S * 1e9
        if close or (runs and f["intent_id"] and f["intent_id"] in {g["intent_id"] for g in runs[-1]}):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def _burst_span(run: list[dict]) -> tuple[float, float] | None:
    """(first, last) receive instant, epoch s, of the run's fills if some 2 s of it hold >= 5 fills."""
    start = 0
    for end in range(len(run)):
        while run[end]["recv_ns"] - run[start]["recv_ns"] > BURST_WINDOW_S * 1e9:
            start += 1
        if end - start + 1 >= BURST_FILLS:
            return run[0]["recv_ns"] / 1e9, run[-1]["recv_ns"] / 1e9
    return None


RESIDUAL_SKIPS = {"below_min_notional", "below_min_size", "netted_out"}


def _size_miss(run: list[dict[str, Any]], intents: dict[str, Any], cfg: Config) -> str | None:
    s = cfg.sizing
    if s.mode == "fixed":
        return None                      # a fixed notional per order has no burst-level intended size
    mine = [intents[i] for i in {f["intent_id"] for f in run} if i in intents]
    if any(i["capped_by"] or (i["decision"] == "skip" and i["reason"] not in RESIDUAL_SKIPS) for i in mine):
        return None
    if s.exit_rule == "fraction" and any(i["side"] == "SELL" for i in mine):
        return None                      # an exit sells a fraction of our position, not the source's shares
    intended = s.size_multiplier * sum(_signed(f) for f in run)
    sent = sum(_signed(i) for i in mine if i["decision"] == "order")
    # The burst's last batch, netting below the order minimums, cannot be sent once the burst's orders have left: the
    # orders plus that residual are judged, so it excuses its own size and nothing more. An earlier residual could
    # have joined a later batch, so it is a miss.
    last = max(mine, key=lambda i: i["decided_at"], default=None)
    unsendable = _signed(last) if last is not None and last["decision"] == "skip" else 0.0
    slack = s.size_tolerance * abs(intended) + 0.01 * len(mine)     # plus the venue's 0.01-share size precision
    if abs(sent + unsendable - intended) > slack:
        below = f", {unsendable:g} below the order minimums" if unsendable else ""
        return f"orders net {sent:g} shares{below} vs intended {intended:g} (tolerance {s.size_tolerance:g})"
    return None


def _signed(row: dict[str, Any]) -> float:
    """A fill's or an intent's size, negative for a SELL."""
    return (1 if row["side"] == "BUY" else -1) * row["size"]


# Feeds whose match timestamp never exceeds the match: the mempool's taker order timestamp (ms) and RTDS's whole
# seconds. The best estimate of a fill's match instant is the latest of these; block timestamps are the fallback.
MATCH_LOWER_BOUND_FEEDS = ("chain.mempool", "rtds.trades", "rtds.orders_matched")


def _match_ref(sightings: list[tuple[str, str, int, float, int]]) -> float:
    bounds = [match_ts for _, feed, _, match_ts, _ in sightings if feed in MATCH_LOWER_BOUND_FEEDS]
    return max(bounds) if bounds else min(match_ts for _, _, _, match_ts, _ in sightings)


def detection_section(store: Store, since: float) -> dict[str, Any]:
    """Per feed: fills it delivered first (and their share), fills it only confirmed, match -> arrival lag of its
    earliest sighting of each fill; then reorg removals and retractions from the fill events."""
    by_key: dict[str, list[tuple[str, str, int, float, int]]] = defaultdict(list)
    for arrival in store.arrivals_since(since):
        by_key[arrival[0]].append(arrival)
    per_feed: dict[str, dict] = defaultdict(lambda: {"first": 0, "seen": 0, "lags": []})
    first_lags = []
    for sightings in by_key.values():              # each in receive order
        ref = _match_ref(sightings)
        earliest: dict[str, int] = {}
        first_feed: str | None = None
        for _, feed, recv_ns, _, first in sightings:
            if feed not in earliest:
                earliest[feed] = recv_ns
            if first and first_feed is None:
                first_feed = feed
        per_feed[sightings[0][1] if first_feed is None else first_feed]["first"] += 1
        for feed, recv_ns in earliest.items():
            st = per_feed[feed]
            st["seen"] += 1
            st["lags"].append(recv_ns / 1e6 - ref * 1e3)
        first_lags.append(sightings[0][2] / 1e6 - ref * 1e3)
    n = len(by_key)
    feeds = {feed: {"first": st["first"], "first_share": round(st["first"] / n, 4), "seen": st["seen"],
                    "confirmed_only": st["seen"] - st["first"], "lag_ms": _dist(st["lags"])}
             for feed, st in sorted(per_feed.items())}
    events = list(store.fill_events_since(since))
    kinds = Counter(e["kind"] for e in events)
    retracted = [e for e in events if e["kind"] == "retracted"]
    return {"fills": n, "first_arrival_lag_ms": _dist(first_lags), "feeds": feeds, "removed": kinds["removed"],
            "reincluded": kinds["reincluded"], "reinstated": kinds["reinstated"],
            "retracted": dict(Counter(e["reason"] for e in retracted)),
            "retracted_copied": [{"dedupe_key": e["dedupe_key"], "reason": e["reason"], "intent_id": e["intent_id"]}
                                 for e in retracted if e["copied"]]}


def render_detection(det: dict[str, Any], ms: Callable[[dict[str, Any]], str]) -> list[str]:
    lines = [f"detection           {det['fills']} fills; first arrival lag ms {ms(det['first_arrival_lag_ms'])}",
             "  feed                  first   share    seen  confirmed  lag p50 / p95 ms"]
    for feed, st in det["feeds"].items():
        lag = st["lag_ms"]
        lines.append(f"  {feed:<20} {st['first']:>6} {100 * st['first_share']:>6.1f}% {st['seen']:>7} "
                     f"{st['confirmed_only']:>10}  {lag['p50']:.1f} / {lag['p95']:.1f}")
    lines.append(f"reorgs / retractions removed {det['removed']}, re-included {det['reincluded']}, reinstated "
                 f"{det['reinstated']}, retracted {json.dumps(det['retracted'], sort_keys=True)}")
    lines += [f"  RETRACTED COPIED  {r['dedupe_key']} ({r['reason']}; intent {r['intent_id']})"
              for r in det["retracted_copied"]]
    return lines


def render_text(rep: dict[str, Any]) -> str:
    def ms(d: dict[str, Any]) -> str:
        if not d["n"]:
            return "n=0"
        return f"n={d['n']} p50={d['p50']:.1f} p95={d['p95']:.1f} p99={d['p99']:.1f} max={d['max']:.1f}"

    slip = rep["slippage_bps"]
    lines = [
        f"copied (filled)     {rep['filled_pct']}% of the intended notional  ({rep['filled_usd']:.2f} of "
        f"{rep['intended_usd']:.2f} USD at the source's prices, {rep['eligible_intents']} intents, "
        f"{rep['no_liquidity_intents']} of them refused for no liquidity within the budget)",
        f"orders              {rep['orders_sent']} sent, {rep['orders_killed']} killed with nothing filled, "
        f"{rep['orders_partial']} partly filled, {rep['remainder_orders']} remainder orders",
        f"slippage bps BUY    {ms(slip['BUY'])}   (our average vs the source's, + is worse)",
        f"slippage bps SELL   {ms(slip['SELL'])}",
        f"source fills        {rep['source_fills']}  "
        f"(decided on: {json.dumps(rep['decided_on_feed'], sort_keys=True)}; "
        f"first arrivals under detection)",
        f"eligible fills      {rep['eligible_fills']}, copied {rep['copied_fills']} (each by its intent's filled "
        f"fraction)",
        f"late gap-filled     {rep['late_gap_filled_fills']}",
        f"intents / orders    {rep['intents']} / {rep['orders']}  "
        f"(max orders per intent {rep['orders_per_intent_max']})",
        f"order status        {json.dumps(rep['order_status'], sort_keys=True)}",
        f"filled / failed     {rep['success_rate']} / {rep['failure_rate']}   (of orders sent)",
        f"copy delay ms       {ms(rep['copy_delay_ms'])}   (ingest -> submit, all fills)",
        f"leading delay ms    {ms(rep['leading_copy_delay_ms'])}",
        f"order delay ms      {ms(rep['order_delay_ms'])}   (newest fill ingest -> submit; judged)",
        f"detection lag ms    {ms(rep['detection_lag_ms'])}   (source match -> first arrival on any feed)",
        f"refusals            {json.dumps(rep['refusals'], sort_keys=True)}",
        *render_detection(rep["detection"], ms),
        *render_pnl(rep["pnl"]),
    ]
    acc = rep["acceptance"]
    lines.append(f"acceptance          {'PASS' if acc['passed'] else 'FAIL'}")
    for name, ids in acc["failures"].items():
        lines.append(f"  FAIL {name}: {', '.join(map(str, ids[:20]))}{' …' if len(ids) > 20 else ''}")
    return "\n".join(lines)


def status(store: Store) -> dict[str, Any]:
    halted, reason = store.halted()
    return {"halted": halted, "halt_reason": reason, "heartbeat": store.heartbeat()}
