"""Wire payloads -> typed objects, at the edge. Anything malformed raises MalformedMessage with one clear line.

RTDS `activity` frames (`trades`, `orders_matched`), Data API trade rows (v1 camelCase, v2 snake_case), CLOB
book snapshots (REST /book and the market websocket's `book`) and the account's balance and allowances.
"""
from __future__ import annotations

import json
import math

from copier.errors import MalformedMessage
from copier.types import BookTop, Feed, Funds, Side, SourceFill

MAX_FRAME_BYTES = 64 * 1024
RTDS_TYPES = {"trades": Feed.RTDS_TRADES.value, "orders_matched": Feed.RTDS_MATCHED.value}


def _str(d: dict, *names: str, required: bool = True) -> str:
    for n in names:
        v = d.get(n)
        if isinstance(v, str) and v:
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
    if required:
        raise MalformedMessage(f"missing or non-string field {names[0]}")
    return ""


def _num(d: dict, name: str, *alts: str, positive: bool = True) -> float:
    for n in (name, *alts):
        if n in d:
            v = d[n]
            if isinstance(v, bool):
                break
            try:
                x = float(v)
            except (TypeError, ValueError):
                break
            if not math.isfinite(x) or (positive and x <= 0):
                break
            return x
    raise MalformedMessage(f"missing or invalid number {name}")


def _side(d: dict) -> Side:
    v = d.get("side")
    if v == "BUY":
        return Side.BUY
    if v == "SELL":
        return Side.SELL
    raise MalformedMessage(f"invalid side {v!r}")


def _fill(p: dict, recv_ns: int, feed: str, camel: bool) -> SourceFill:
    price = _num(p, "price")
    if price >= 1.0 + 1e-9:
        raise MalformedMessage(f"price {price} outside (0, 1)")
    ts = _num(p, "timestamp")
    if ts > 1e12:                         # some rows carry milliseconds
        ts /= 1000.0
    idx = p.get("outcomeIndex" if camel else "outcome_index", 999)
    return SourceFill(
        tx_hash=_str(p, "transactionHash" if camel else "transaction_hash").lower(),
        asset=_str(p, "asset" if camel else "token_id"),
        condition_id=_str(p, "conditionId" if camel else "condition_id").lower(),
        outcome=_str(p, "outcome", required=False),
        outcome_index=idx if isinstance(idx, int) and not isinstance(idx, bool) else 999,
        side=_side(p), price=price, size=_num(p, "size"), match_ts=ts, recv_ns=recv_ns, feed=feed,
        wallet=_str(p, "proxyWallet" if camel else "proxy_wallet", required=False).lower(),
        event_slug=_str(p, "eventSlug" if camel else "event_slug", required=False),
        slug=_str(p, "slug", required=False))


def parse_rtds_frame(text: str | bytes, source_wallet: str, recv_ns: int) -> tuple[list[SourceFill], str]:
    """One RTDS frame -> (fills of the source wallet, frame id). Non-activity frames and PONGs give no fills."""
    if isinstance(text, bytes):
        if len(text) > MAX_FRAME_BYTES:
            raise MalformedMessage(f"frame of {len(text)} bytes exceeds {MAX_FRAME_BYTES}")
        text = text.decode("utf-8", "replace")
    if len(text) > MAX_FRAME_BYTES:
        raise MalformedMessage(f"frame of {len(text)} chars exceeds {MAX_FRAME_BYTES}")
    stripped = text.strip()
    if stripped in ("", "PONG", "pong", "PING", "ping"):
        return [], ""
    try:
        msg = json.loads(stripped)
    except ValueError:
        raise MalformedMessage("frame is not JSON") from None
    if not isinstance(msg, dict):
        raise MalformedMessage(f"frame is a JSON {type(msg).__name__}, not an object")
    if msg.get("topic") != "activity":
        return [], ""
    feed = RTDS_TYPES.get(msg.get("type"))
    if feed is None:
        return [], ""
    payload = msg.get("payload")
    if not isinstance(payload, dict):
        raise MalformedMessage("activity frame without an object payload")
    wallet = payload.get("proxyWallet")
    if not isinstance(wallet, str):
        raise MalformedMessage("activity payload without proxyWallet")
    if wallet.lower() != source_wallet.lower():
        return [], ""
    fill = _fill(payload, recv_ns, feed, camel=True)
    # The payload is the fill; the envelope (its send timestamp, the connection id) is not: a payload sent again in
    # a new envelope is the same frame.
    frame_id = str(hash(json.dumps(payload, sort_keys=True)))
    return [fill], frame_id


def parse_data_api_trade(row: dict, recv_ns: int) -> SourceFill:
    """A Data API trade row, v1 (camelCase) or v2 (snake_case)."""
    if not isinstance(row, dict):
        raise MalformedMessage(f"trade row is a {type(row).__name__}, not an object")
    camel = "transactionHash" in row or "conditionId" in row
    return _fill(row, recv_ns, Feed.DATA_API.value, camel=camel)


def _levels(raw, name: str, reverse: bool) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list):
        raise MalformedMessage(f"book {name} is not a list")
    out = []
    for lvl in raw:
        if not isinstance(lvl, dict):
            raise MalformedMessage(f"book {name} level is not an object")
        out.append((_num(lvl, "price"), _num(lvl, "size", positive=False)))
    return tuple(sorted((lv for lv in out if lv[1] > 0), key=lambda lv: lv[0], reverse=reverse))


def parse_book(msg: dict) -> BookTop:
    """REST /book or market-ws `book` -> BookTop with the best level first on both sides."""
    if not isinstance(msg, dict):
        raise MalformedMessage("book is not an object")
    asset = _str(msg, "asset_id")
    ts = msg.get("timestamp")
    try:
        t = float(ts) / (1000.0 if ts and float(ts) > 1e12 else 1.0) if ts is not None else 0.0
    except (TypeError, ValueError):
        t = 0.0
    return BookTop(asset=asset, bids=_levels(msg.get("bids", []), "bids", True),
                   asks=_levels(msg.get("asks", []), "asks", False), ts=t)


def _usd(raw, name: str) -> float:
    """A 6-decimal integer amount (a decimal string on the wire) in dollars; MAX_UINT256 stays huge but finite."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise MalformedMessage(f"{name} is not an amount: {raw!r}")
    try:
        units = int(raw)
    except ValueError:
        raise MalformedMessage(f"{name} is not an integer amount: {raw!r}") from None
    if units < 0:
        raise MalformedMessage(f"{name} is negative")
    return units / 1e6


def parse_funds(body) -> Funds:
    """GET /balance-allowance?asset_type=COLLATERAL: `{"balance", "allowances": {exchange: amount}}` (V2), or the
    older single `"allowance"`."""
    if not isinstance(body, dict):
        raise MalformedMessage("balance-allowance answer is not an object")
    balance = _usd(body.get("balance"), "balance")
    raw = body.get("allowances")
    if isinstance(raw, dict):
        allowances = tuple(sorted((str(k), _usd(v, f"allowance of {k}")) for k, v in raw.items()))
    elif raw is None and "allowance" in body:
        allowances = (("exchange", _usd(body["allowance"], "allowance")),)
    elif raw is None:
        allowances = ()
    else:
        raise MalformedMessage("allowances is not an object")
    return Funds(balance, allowances)


def apply_price_change(book: BookTop, change: dict) -> BookTop:
    """Apply one `price_change` entry (size 0 removes the level)."""
    price, size = _num(change, "price"), _num(change, "size", positive=False)
    side = change.get("side")
    if side not in ("BUY", "SELL"):
        raise MalformedMessage(f"price_change side {side!r}")
    levels = dict(book.bids if side == "BUY" else book.asks)
    if size > 0:
        levels[price] = size
    else:
        levels.pop(price, None)
    ordered = tuple(sorted(levels.items(), key=lambda lv: lv[0], reverse=side == "BUY"))
    if side == "BUY":
        return BookTop(book.asset, ordered, book.asks, book.ts)
    return BookTop(book.asset, book.bids, ordered, book.ts)
