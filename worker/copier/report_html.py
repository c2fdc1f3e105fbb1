"""`copier report --html FILE`: the report a person looks at, as one self-contained HTML file.

Figures (inline SVG, drawn by matplotlib): the copy-delay histogram (ingest -> submit, every copied fill), copy-delay
p50/p95/p99 per UTC day, the copy rate per day (filled / intended notional at the source's prices, as the text
report counts it), orders per burst (bursts as the acceptance defines them), refusals by reason, PnL over time (a
`PnlSource`: `copier report` passes the store's, pnl_report.StorePnl: realised PnL from the positions ledger, marked
with the unrealised PnL of the running copier's snapshots where the store has them) and, when the caller has them,
growth curves (a soak passes its samples). The tables beside the figures hold the same numbers.

matplotlib is the optional `report` extra (`pip install 'polycopier[report]'`), for the operator's machine: nothing
the copier runs imports this module, and the CLI checks for the extra before it reads the store.
"""
from __future__ import annotations

import html
import importlib.util
import io
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from copier.pnl_report import PnlPoint
from copier.report import (
    ANSWERED,
    BURST_WINDOW_S,
    _burst_span,
    _clusters,
    _sent,
    intent_fills,
    percentile,
)

if TYPE_CHECKING:
    from copier.store import Record, Store

EXTRA = "report"
MISSING_EXTRA = (f"copier report --html needs the plotting extra on this machine: pip install 'polycopier[{EXTRA}]' "
                 "(matplotlib)")
HIST_CAP_MS = 5_000.0           # the histogram's last bin holds everything slower
PNL_NOTE = ("Realised: every PnL the positions ledger realised since the store's first order, fees included (a SELL "
            "against the average cost of what it sold, a resolved market at its resolution value, redeemed or not), "
            "at the last change in each UTC hour. ")
PNL_MARKED = ("Marked adds the unrealised PnL of each open position's latest snapshot by then (the running copier "
              "marks on the book's mid).")
PNL_UNMARKED = ("This store holds no PnL snapshots (the running copier writes them): realised PnL only, no unrealised "
                "PnL.")


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


class PnlSource(Protocol):
    """PnL over time from `since` on: realised so far and, where known, unrealised, oldest first."""
    def pnl_points(self, since: float) -> Sequence[PnlPoint]: ...


@dataclass(frozen=True)
class Growth:
    """Samples a long run took of itself (a soak's hourly samples, the week store's daily rows): one curve per
    name, values at the given instants (epoch s)."""
    at: Sequence[float]
    curves: dict[str, Sequence[float]]
    unit: dict[str, str] = field(default_factory=dict)
    axis: str = ""                      # when set, `at` are plain numbers on this axis (e.g. a simulated hour)


@dataclass(frozen=True)
class DayStats:
    day: str
    delays: int
    p50: float | None
    p95: float | None
    p99: float | None
    intended_usd: float
    filled_usd: float

    @property
    def copy_rate_pct(self) -> float | None:
        return 100.0 * self.filled_usd / self.intended_usd if self.intended_usd else None


@dataclass(frozen=True)
class HtmlData:
    since: float
    copy_delays_ms: list[float]
    days: list[DayStats]
    orders_per_burst: Counter[int]      # orders sent for the whole burst -> bursts
    burst_peak_2s: Counter[int]         # the most of them in any 2 s (what the PRD bounds at 2) -> bursts
    refusals: Counter[str]
    pnl: list[PnlPoint] | None          # None: no PnL source given
    period: str = "UTC day"             # what a row of `days` spans


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def html_data(store: Store, since: float, pnl: PnlSource | None = None, record: Record | None = None,
              period: tuple[str, Callable[[float], str]] = ("UTC day", _day)) -> HtmlData:
    """The figures' numbers, from the store's record (fills, intents, orders), counted as the text report counts.
    record: `store.record_since(since)` if the caller read it already. `period` names the rows of the per-day
    figures and labels an instant with its row (a soak at accelerated market time passes its simulated days)."""
    _, day_of = period
    record = record or store.record_since(since)
    fills = record.fills
    intents = {i["intent_id"]: i for i in record.intents}
    orders_by_intent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in record.orders:
        orders_by_intent[o["intent_id"]].append(o)
    accounts = intent_fills(intents, orders_by_intent)

    delays: list[float] = []
    delays_by_day: dict[str, list[float]] = defaultdict(list)
    refusals: Counter[str] = Counter()
    for f in fills:
        intent = intents.get(f["intent_id"]) if f["intent_id"] else None
        if intent is None:
            continue
        if intent["decision"] != "order":
            refusals[intent["reason"]] += 1
        answered = [o for o in orders_by_intent.get(intent["intent_id"], ()) if o["status"] in ANSWERED]
        if intent["intent_id"] in accounts and answered:
            ms = (answered[0]["submit_ns"] - f["recv_ns"]) / 1e6
            delays.append(ms)
            delays_by_day[day_of(f["recv_ns"] / 1e9)].append(ms)

    usd: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for iid, a in accounts.items():
        day = day_of(intents[iid]["decided_at"])
        usd[day][0] += a["intended"] * a["source_price"]
        usd[day][1] += min(a["filled"], a["intended"]) * a["source_price"]
    days = [DayStats(day, len(delays_by_day.get(day, [])), percentile(delays_by_day.get(day, []), 50),
                     percentile(delays_by_day.get(day, []), 95), percentile(delays_by_day.get(day, []), 99),
                     usd[day][0], usd[day][1])
            for day in sorted(set(delays_by_day) | set(usd))]
    total, peak = orders_per_burst(fills, intents, orders_by_intent)
    return HtmlData(since=since, copy_delays_ms=delays, days=days, orders_per_burst=total, burst_peak_2s=peak,
                    refusals=refusals,
                    pnl=list(pnl.pnl_points(since)) if pnl is not None else None, period=period[0])


def orders_per_burst(fills: list[dict[str, Any]], intents: dict[str, Any],
                     orders_by_intent: dict[str, list[dict[str, Any]]]) -> tuple[Counter[int], Counter[int]]:
    """Per burst (>= 5 fills within 2 s on one market and outcome, as the acceptance finds them): the order
    decisions sent from its first fill to 2 s after its last, and the most of them in any 2 s (a burst longer than
    2 s may take more than 2 orders in all, never more than 2 in 2 s). Remainder orders complete their parent's and
    are not counted, as the order budget does not count them."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in fills:
        by_key[(f["condition_id"], f["outcome"])].append(f)
    decided: dict[tuple[str, str], list[float]] = defaultdict(list)
    for iid, i in intents.items():
        if i["decision"] == "order" and not i["parent_id"] and _sent(orders_by_intent.get(iid, [])):
            decided[(i["condition_id"], i["outcome"])].append(i["decided_at"])
    total: Counter[int] = Counter()
    peak: Counter[int] = Counter()
    for key, fs in by_key.items():
        fs.sort(key=lambda f: f["recv_ns"])
        for run in _clusters(fs):
            span = _burst_span(run)
            if span is None:
                continue
            times = sorted(t for t in decided.get(key, ()) if span[0] <= t <= span[1] + BURST_WINDOW_S)
            total[len(times)] += 1
            peak[max((sum(1 for u in times[i:] if u - t < BURST_WINDOW_S) for i, t in enumerate(times)),
                     default=0)] += 1
    return total, peak


# ---- rendering ---------------------------------------------------------------------------------------------------
def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]            # drop the XML prologue and DOCTYPE: the SVG is inline


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def render_html(rep: dict[str, Any], data: HtmlData, growth: Growth | None = None, title: str = "copier report") \
        -> str:
    """One HTML page: the text report's headline, then each figure with its numbers in a table beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "figure.dpi": 100})
    sections: list[str] = []

    def figure(heading: str, draw: Any, table: str, note: str = "") -> None:
        fig, ax = plt.subplots(figsize=(7.0, 3.0))
        draw(ax)
        ax.grid(alpha=0.3)
        sections.append(f"<section><h2>{html.escape(heading)}</h2><div class='row'><div class='fig'>{_svg(fig)}"
                        f"</div><div class='tbl'>{table}</div></div>"
                        + (f"<p class='note'>{html.escape(note)}</p>" if note else "") + "</section>")
        plt.close(fig)

    delays = data.copy_delays_ms

    def hist(ax: Any) -> None:
        clipped = [min(d, HIST_CAP_MS) for d in delays]
        ax.hist(clipped, bins=60, color="#3a6ea5")
        ax.set_xlabel("copy delay, ms (ingest -> submit; the last bin holds all slower)")
        ax.set_ylabel("fills")
        if delays:
            ax.set_yscale("log")

    figure("Copy delay, every copied fill", hist, _table(
        ["n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [[str(len(delays)), _fmt(percentile(delays, 50)), _fmt(percentile(delays, 95)), _fmt(percentile(delays, 99)),
          _fmt(max(delays) if delays else None)]]),
        "A trailing fill waits for its burst to go quiet (coalesce_ms) by design; the leading order does not.")

    days = data.days
    labels = [d.day[5:] if data.period == "UTC day" else d.day for d in days]

    def per_day(ax: Any) -> None:
        for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            ax.plot(labels, [getattr(d, q) for d in days], style, label=q)
        ax.set_ylabel("copy delay, ms")
        ax.legend(loc="upper left")

    figure(f"Copy delay per {data.period}", per_day, _table(
        ["day", "fills", "p50 ms", "p95 ms", "p99 ms"],
        [[d.day, str(d.delays), _fmt(d.p50), _fmt(d.p95), _fmt(d.p99)] for d in days]))

    def rate(ax: Any) -> None:
        ax.bar(labels, [d.copy_rate_pct or 0.0 for d in days], color="#4f9a5b")
        ax.axhline(90.0, color="#b33", linestyle="--", linewidth=1, label="acceptance 90%")
        ax.set_ylim(0, 100)
        ax.set_ylabel("filled / intended notional, %")
        ax.legend(loc="lower left")

    figure(f"Copy rate per {data.period}", rate, _table(
        ["day", "intended USD", "filled USD", "copied %"],
        [[d.day, f"{d.intended_usd:.2f}", f"{d.filled_usd:.2f}", _fmt(d.copy_rate_pct, ".2f")] for d in days]))

    opb = data.orders_per_burst
    counts = sorted(opb)

    def bursts(ax: Any) -> None:
        ax.bar([str(c) for c in counts], [opb[c] for c in counts], color="#3a6ea5")
        ax.set_xlabel("orders sent for the burst")
        ax.set_ylabel("bursts")

    peak = data.burst_peak_2s
    rows = sorted(set(opb) | set(peak))
    figure("Orders per burst", bursts, _table(["orders", "bursts (all orders)", "bursts (most in 2 s)"],
                                              [[str(c), str(opb[c]), str(peak[c])] for c in rows]),
           "A burst: >= 5 source fills within 2 s on one market and outcome. The bars count every order sent for "
           "it; the PRD bounds the orders in any 2 s at 2 (the last column), so a burst longer than 2 s may take "
           "more in all.")

    reasons = data.refusals.most_common()

    def refused(ax: Any) -> None:
        ax.barh([r for r, _ in reversed(reasons)], [n for _, n in reversed(reasons)], color="#a5713a")
        ax.set_xlabel("source fills refused")

    figure("Refusals by reason (source fills)", refused, _table(["reason", "fills"],
                                                                 [[r, str(n)] for r, n in reasons]))

    points = data.pnl
    if points is None:
        sections.append("<section><h2>PnL over time</h2><p class='note'>No PnL source was given: nothing to "
                        "draw.</p></section>")
    elif not points:
        sections.append("<section><h2>PnL over time</h2><p class='note'>No PnL yet: nothing realised and no PnL "
                        "snapshot in this store.</p></section>")
    else:
        marked = [p for p in points if p.marked is not None]

        def pnl_curve(ax: Any) -> None:
            ax.plot([datetime.fromtimestamp(p.at, UTC) for p in points], [p.realized for p in points],
                    drawstyle="steps-post", color="#333", label="realised")
            if marked:
                ax.plot([datetime.fromtimestamp(p.at, UTC) for p in marked], [p.marked for p in marked],
                        drawstyle="steps-post", color="#3a6ea5", label="marked (realised + unrealised)")
            ax.axhline(0.0, color="#999", linewidth=0.8)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
            ax.set_ylabel("PnL, USD")
            ax.legend(loc="best")

        last_of_day = {_day(p.at): p for p in points}         # each UTC day's last point
        figure("PnL over time", pnl_curve, _table(
            ["last point of the day", "realised USD", "unrealised USD", "marked USD"],
            [[datetime.fromtimestamp(p.at, UTC).strftime("%Y-%m-%d %H:%M"), f"{p.realized:.2f}",
              _fmt(p.unrealized, ".2f"), _fmt(p.marked, ".2f")] for p in last_of_day.values()]),
            PNL_NOTE + (PNL_MARKED if marked else PNL_UNMARKED))

    if growth is not None:
        for name, values in growth.curves.items():
            unit = growth.unit.get(name, "")

            def curve(ax: Any, values: Sequence[float] = values, name: str = name, unit: str = unit) -> None:
                if growth.axis:
                    ax.plot(list(growth.at), list(values), "o-", markersize=2)
                else:
                    ax.plot([datetime.fromtimestamp(t, UTC) for t in growth.at], list(values), "o-")
                    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
                ax.set_ylabel(f"{name} {unit}".strip())
                if growth.axis:
                    ax.set_xlabel(growth.axis)

            def at(t: float) -> str:
                return f"{t:g}" if growth.axis else datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")

            step = max(1, len(growth.at) // 24)         # the table: at most ~24 rows, the last always
            sampled = [[at(t), f"{v:,.1f}"] for i, (t, v) in enumerate(zip(growth.at, values, strict=True))
                       if i % step == 0 or i == len(growth.at) - 1]
            figure(f"Growth: {name}", curve, _table([growth.axis or "at", f"{name} {unit}".strip()], sampled))

    head = (f"copied (filled) {rep['filled_pct']}% of the intended notional; {rep['source_fills']} source fills, "
            f"{rep['orders_sent']} orders sent, max orders per intent {rep['orders_per_intent_max']}; "
            f"acceptance {'PASS' if rep['acceptance']['passed'] else 'FAIL'}"
            + (f" ({', '.join(sorted(rep['acceptance']['failures']))})" if rep['acceptance']['failures'] else ""))
    since = datetime.fromtimestamp(data.since, UTC).strftime("%Y-%m-%d %H:%M UTC") if data.since else "the start"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p class='sub'>since {since}</p>"
            f"<p class='head'>{html.escape(head)}</p>{''.join(sections)}</body></html>")


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


_CSS = ("body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1200px}h1{margin-bottom:0}"
        ".sub{color:#666;margin-top:.2em}.head{background:#f3f3f3;padding:.6em}"
        "section{margin:1.2em 0;border-top:1px solid #ddd}.row{display:flex;gap:1.5em;align-items:flex-start}"
        ".fig svg{width:640px;height:auto}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.note{color:#555;font-size:12px}")
