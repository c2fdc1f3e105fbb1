"""`copier replay`: the live coalescer, decision and risk code on a recorded source history, with a virtual clock.

The clock is driven by the fills' own timestamps: each fill arrives at its match time, trailing batches are decided
at their deadline. Data API timestamps are whole seconds, so a quiet gap shorter than a second cannot be seen in
them: for such history the coalescer's quiet window is widened to the data's resolution. Orders are assumed filled in full at their price cap (the worst case the caps allow for), so
positions and caps evolve as they would live.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from copier.coalescer import Coalescer
from copier.config import Config, load_config
from copier.decision import decide
from copier.dedupe import Deduper
from copier.errors import ConfigError, MalformedMessage
from copier.exposure import ExposureBook
from copier.markets import markets_from_gamma
from copier.schemas import parse_data_api_trade
from copier.types import Feed, MarketMeta, OrderIntent, SourceFill


def add_replay_args(p) -> None:
    p.add_argument("--fills", required=True, help="Data API /trades rows (v1 or v2), JSON array or JSON lines")
    p.add_argument("--markets", required=True, help="Gamma market/event JSON (object, array or JSON lines)")
    p.add_argument("--config", default=None, help="copier YAML (default: built-in defaults)")


def _load_json_docs(path: str) -> list:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, list) else [doc]
    except ValueError:
        pass
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                docs.append(json.loads(line))
            except ValueError:
                raise ConfigError(f"{path} line {n}: not JSON") from None
    return docs


def load_fills(path: str) -> list[SourceFill]:
    rows = _load_json_docs(path)
    if len(rows) == 1 and isinstance(rows[0], dict) and isinstance(rows[0].get("data"), list):
        rows = rows[0]["data"]          # a whole /v2/trades page
    fills = []
    for n, row in enumerate(rows, 1):
        try:
            ts = float(row.get("timestamp", 0)) if isinstance(row, dict) else 0.0
            if ts > 1e12:               # milliseconds
                row = {**row, "timestamp": ts / 1000.0}
            fill = parse_data_api_trade(row, recv_ns=0)
        except MalformedMessage as exc:
            raise ConfigError(f"{path} row {n}: {exc}") from None
        fills.append(fill)
    return fills


def load_markets(path: str) -> list[MarketMeta]:
    out = []
    for doc in _load_json_docs(path):
        try:
            out += markets_from_gamma(doc)
        except MalformedMessage as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return out


def replay(fills: list[SourceFill], markets: list[MarketMeta], cfg: Config) -> list[dict]:
    """Deterministic: the same history and config always give the same decisions."""
    by_asset = {t: m for m in markets for t in m.token_ids}
    whole_seconds = all(float(f.match_ts).is_integer() for f in fills)
    coalescer = Coalescer(cfg.copy, time_resolution_s=1.0 if whole_seconds else 0.0)
    exposure, deduper = ExposureBook(cfg.markets.window_seconds), Deduper()
    wallet = cfg.copy.source_wallet.lower()
    out: list[dict] = []

    def emit(batches) -> None:
        for batch in batches:
            now = batch.released_at
            d = decide(exposure, batch, by_asset.get(batch.asset), now, cfg)
            if isinstance(d, OrderIntent):
                exposure.reserve(d)
                exposure.settle(d.intent_id, d.size, d.price_cap)
            out.append(_line(d, now))

    ordered = sorted(enumerate(fills), key=lambda p: (p[1].match_ts, p[0]))
    for _, fill in ordered:
        if fill.wallet and fill.wallet != wallet:
            continue
        t = fill.match_ts
        fill = deduper.admit(_at(fill, t), "replay")
        if fill is None:
            continue
        emit(coalescer.due(t))
        emit(coalescer.add(fill, t))
    while (deadline := coalescer.next_deadline()) is not None:
        emit(coalescer.due(deadline))
    return out


def _at(fill: SourceFill, t: float) -> SourceFill:
    from dataclasses import replace
    return replace(fill, recv_ns=int(t * 1e9), feed=Feed.REPLAY.value)


def _line(d, t: float) -> dict:
    is_order = isinstance(d, OrderIntent)
    return {"t": round(t, 3), "action": "order" if is_order else "skip", "market": d.condition_id,
            "asset": d.asset, "side": d.side.value, "size": d.size, "notional_usd": round(d.notional, 6),
            "price_cap": d.price_cap if is_order else None, "fills": list(d.fill_keys),
            "reason": d.capped_by if is_order else f"{d.reason}: {d.detail}"}


def main_replay(args) -> int:
    cfg = load_config(args.config) if args.config else Config()
    for line in replay(load_fills(args.fills), load_markets(args.markets), cfg):
        sys.stdout.write(json.dumps(line) + "\n")
    return 0
