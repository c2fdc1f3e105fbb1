"""Every cap holds on every clock: hypothesis histories over many quarter hours, with taker fees, partial fills,
orders still in flight and restarts that rebuild the exposure book from the store."""
import tempfile
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copier.coalescer import Coalescer
from copier.config import Config, CopyConfig, ExecutionConfig, RiskConfig, SizingConfig
from copier.decision import decide
from copier.exposure import DAY_S, ExposureBook, bucket
from copier.fees import taker_fee_per_share
from copier.store import Store
from copier.types import MarketMeta, OrderIntent, OrderStatus, Side, SourceFill

WINDOW = 900
START = 1_800_000_000 - 1_800_000_000 % WINDOW
CFG = Config(copy=CopyConfig(max_signal_age_s=30.0),
             sizing=SizingConfig(max_notional_per_order_usd=25, max_notional_per_market_usd=150,
                                 max_total_notional_per_15m_window_usd=100, min_order_notional_usd=1),
             execution=ExecutionConfig(max_slippage_bps=120, near_expiry_cutoff_seconds=5),
             risk=RiskConfig(max_daily_notional_usd=1500))
EPS = 1e-6


def markets(tick: float, fee_rate: float, exponent: float) -> dict[str, MarketMeta]:
    """Four assets' markets for each of 12 consecutive windows."""
    out = {}
    for w in range(12):
        start = START + w * WINDOW
        for a in range(4):
            cid = f"0x{a:02x}{w:062x}"
            out[cid] = MarketMeta(condition_id=cid, token_ids=(f"{a}-{w}-up", f"{a}-{w}-down"), outcomes=("Up", "Down"),
                                  tick_size=tick, min_size=1.0, neg_risk=False, end_ts=start + WINDOW,
                                  start_ts=start, fee_rate=fee_rate, fee_exponent=exponent, slug=f"a{a}-{start}")
    return out


fills_st = st.lists(st.tuples(
    st.integers(0, 12 * WINDOW - 1),                                   # seconds after START
    st.integers(-60, 60),                                              # ... or this close to a quarter hour
    st.sampled_from([True, True, True, False]),                        # which of the two (mostly the straddle)
    st.integers(0, 3),                                                 # asset
    st.sampled_from([Side.BUY, Side.BUY, Side.BUY, Side.SELL]),
    st.floats(1, 400),                                                 # shares
    st.integers(1, 3),                                                 # which quarter hour, for the straddle
    st.booleans(),                                                     # trade the next window's markets (listed ahead)
    st.sampled_from([0.003, 0.009, 0.05, 0.2, 0.5, 0.73, 0.95, 0.991, 0.998]),
), min_size=25, max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fills=fills_st, tick=st.sampled_from([0.01, 0.001]), fee_rate=st.sampled_from([0.0, 0.07, 0.25]),
       exponent=st.sampled_from([1.0, 2.0]), fill_frac=st.lists(st.floats(0, 1), min_size=1, max_size=9),
       restarts=st.lists(st.integers(0, 69), max_size=4), left_in_flight=st.lists(st.booleans(), min_size=1,
                                                                                   max_size=7))
def test_no_window_of_wall_time_no_market_window_and_no_order_exceeds_its_cap(fills, tick, fee_rate, exponent,
                                                                             fill_frac, restarts, left_in_flight):
    by_cid = markets(tick, fee_rate, exponent)
    by_asset = {t: m for m in by_cid.values() for t in m.token_ids}
    history = []
    for n, (t, near, use_near, a, side, size, quarter, ahead, price) in enumerate(fills):
        at = START + (quarter * WINDOW + near if use_near else t)
        at = min(max(at, START), START + 11 * WINDOW - 1)
        w = int((at - START) // WINDOW) + ahead
        m = by_cid[f"0x{a:02x}{w:062x}"]
        history.append(SourceFill(tx_hash=f"0x{n:064x}", asset=m.token_ids[0], condition_id=m.condition_id,
                                  outcome="Up", outcome_index=0, side=side, price=price, size=round(size, 2),
                                  match_ts=float(at), recv_ns=int(at * 1e9), feed="rtds.trades"))
    history.sort(key=lambda f: f.match_ts)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(str(Path(tmp) / "c.sqlite"))
        try:
            orders = _run(history, by_asset, store, fill_frac, set(restarts), left_in_flight)
        finally:
            store.close()
    _check(orders, history, by_cid)


def _run(history, by_asset, store, fill_frac, restarts, left_in_flight) -> dict[str, dict]:
    coalescer, book = Coalescer(CFG.copy), ExposureBook(WINDOW)
    orders: dict[str, dict] = {}
    n_settle = 0

    def act(batch):
        nonlocal n_settle
        d = decide(book, batch, by_asset.get(batch.asset), batch.released_at, CFG)
        if not isinstance(d, OrderIntent):
            return
        book.reserve(d)
        store.record_decision(list(batch.fills), d, int(d.decided_at * 1e9))
        store.record_signed(d.intent_id, "0x" + d.intent_id, "{}", int(d.decided_at * 1e9))
        orders[d.intent_id] = {"intent": d, "cost": d.notional, "market_end": by_asset[d.asset].end_ts}
        n_settle += 1
        if left_in_flight[n_settle % len(left_in_flight)] and d.side is Side.BUY:
            store.update_order(d.intent_id, 1, status=OrderStatus.UNKNOWN)      # still reserved, even after restarts
            return
        frac = fill_frac[n_settle % len(fill_frac)]
        filled = round(d.size * frac, 2)
        # a BUY fills at or inside its cap, a SELL at or above its floor
        avg = round(d.price_cap * (1 - 0.3 * frac), 6) if d.side is Side.BUY else d.price_cap
        book.settle(d.intent_id, filled, avg)
        store.update_order(d.intent_id, 1, status=OrderStatus.MATCHED if filled else OrderStatus.KILLED,
                           filled_size=filled, avg_price=avg if filled else 0.0)
        fee = taker_fee_per_share(avg, d.fee_rate, d.fee_exponent)
        orders[d.intent_id]["cost"] = filled * (avg + fee) if d.side is Side.BUY else -filled * (avg - fee)

    for i, f in enumerate(history):
        if i in restarts:
            # A restart: the pipeline's memory is gone, the book comes back from the store.
            coalescer, book = Coalescer(CFG.copy), ExposureBook(WINDOW)
            book.restore(store.exposure_rows(f.match_ts - DAY_S))
        for b in coalescer.add(f, f.match_ts):
            act(b)
    for b in coalescer.flush(history[-1].match_ts + 5):
        act(b)
    return orders


def _check(orders: dict[str, dict], history, by_cid) -> None:
    s = CFG.sizing
    budget = CFG.execution.max_slippage_bps / 10_000
    buys = sorted((o for o in orders.values() if o["intent"].side is Side.BUY), key=lambda o: o["intent"].decided_at)
    for o in buys:
        d = o["intent"]
        m = by_cid[d.condition_id]
        worst = d.size * (d.price_cap + taker_fee_per_share(min(d.price_cap, 0.5), m.fee_rate, m.fee_exponent))
        assert worst <= d.notional + EPS <= s.max_notional_per_order_usd + 2 * EPS, "per-order cap, fee included"
        assert o["cost"] <= d.notional + EPS, "a fill never costs more than its reservation"
        assert d.price_cap <= d.source_price * (1 + budget) + EPS, "a BUY cap within the budget of the source"
    for o in orders.values():
        d = o["intent"]
        if d.side is Side.SELL:
            assert d.price_cap >= d.source_price * (1 - budget) - EPS
            assert d.size * d.price_cap <= s.max_notional_per_order_usd + EPS
    cap = s.max_total_notional_per_15m_window_usd
    for i, o in enumerate(buys):
        t = o["intent"].decided_at
        in_window = sum(x["cost"] for x in buys[i:] if x["intent"].decided_at < t + WINDOW)
        assert in_window <= cap + EPS, f"{in_window:.2f} in the 15 minutes from {t}"
    per_market_window, per_day = defaultdict(float), defaultdict(float)
    for o in buys:
        per_market_window[o["market_end"]] += o["cost"]
        per_day[bucket(o["intent"].decided_at, DAY_S)] += o["cost"]
    assert max(per_market_window.values(), default=0) <= cap + EPS
    assert max(per_day.values(), default=0) <= CFG.risk.max_daily_notional_usd + EPS
    # per market: what is in it (bought, less what sells brought back) never passes the cap
    net = defaultdict(float)
    for o in sorted(orders.values(), key=lambda o: o["intent"].decided_at):
        net[o["intent"].condition_id] += o["cost"]
        assert net[o["intent"].condition_id] <= s.max_notional_per_market_usd + EPS
