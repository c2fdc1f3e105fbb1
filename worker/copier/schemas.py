"""Wire payloads -> typed objects, at the edge.

Every parser here returns a typed value or raises MalformedMessage (whose `reason` the feeds count), nothing else:
raw bytes are decoded as strict UTF-8, size and nesting are bounded, NaN and Infinity are refused, and every field is
checked for type and range before it is used. Parsers take the raw bytes or text of a message, or a value the HTTP
client already decoded from JSON (text that did not decode arrives as a str and is parsed, so HTML is refused).

Covered: RTDS `activity` frames, Data API trade pages (v1 camelCase rows, v2 snake_case), Gamma events and markets,
the CLOB market websocket (book, price_change, tick_size_change, best_bid_ask, last_trade_price, market_resolved)
and the CLOB's REST answers (/book, /tick-size, /balance-allowance, POST /order, GET /data/order/{hash}).
Time: `epoch_seconds` reads epoch seconds, milliseconds or ISO-8601 and refuses what no real clock says;
`check_match_ts` refuses a source fill dated outside [now - MATCH_TS_HORIZON_S, now + MATCH_TS_MAX_SKEW_S].
"""
from __future__ import annotations

import json
import math
import re
import sys
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn

from copier.errors import MalformedMessage
from copier.types import (
    BadInput,
    BestBidAsk,
    BookTop,
    Feed,
    Funds,
    GammaAnswer,
    LastTradePrice,
    LevelChange,
    MarketEvent,
    MarketMessage,
    MarketMeta,
    MarketResolved,
    OrderLookup,
    PositionsAnswer,
    PostOrderAnswer,
    PriceChange,
    Refused,
    Side,
    SourceFill,
    TickSizeChange,
    TradesOfOrder,
    TradesPage,
    VenuePosition,
)

MAX_FRAME_BYTES = 64 * 1024                  # an RTDS frame or one REST object
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024         # a market-ws dump (a book per token), a Data API page, a Gamma list
RTDS_TYPES = {"trades": Feed.RTDS_TRADES.value, "orders_matched": Feed.RTDS_MATCHED.value}
KEEPALIVE_TEXTS = ("", "PONG", "pong", "PING", "ping")
TICK_SIZES = (0.1, 0.01, 0.005, 0.0025, 0.001, 0.0001)    # the venue's tick sizes (py-clob-client-v2 TickSize)
JSON_RECURSION_LIMIT = 1000      # nesting a parse may reach: far above any real payload, far below a C stack overflow

# Epoch seconds: 2001-09-09 .. 2099-12-31. Epoch milliseconds passed 1e11 in 1973; epoch seconds reach it in 5138.
EPOCH_MIN_S, EPOCH_MAX_S, MS_ABOVE = 1.0e9, 4.1e9, 1.0e11
MATCH_TS_HORIZON_S = 86_400.0    # as far back as the dedupe memory reaches (runtime seeds one day of keys)
MATCH_TS_MAX_SKEW_S = 10.0       # no venue or chain clock is further ahead; a far-future stamp would poison a cursor

_HEX32 = re.compile(r"^0x[0-9a-f]{64}$")

# A value from a peer before it is checked: raw bytes or text, or what json.loads made of them. Any, because the
# parsers narrow it themselves, field by field.
Untrusted = Any
JsonObject = dict[str, Any]


# ---- the parse boundary ----------------------------------------------------------------------------------------
def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads(data: Untrusted, what: str, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Raw bytes or text from a peer -> a JSON value. Strict UTF-8, bounded size and nesting, no NaN/Infinity."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if len(data) > max_bytes:
            raise MalformedMessage(f"{what} of {len(data)} bytes exceeds {max_bytes}", BadInput.TOO_LARGE)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage(f"{what} is not valid UTF-8", BadInput.NOT_UTF8) from None
    elif isinstance(data, str):
        if len(data) > max_bytes:
            raise MalformedMessage(f"{what} of {len(data)} characters exceeds {max_bytes}", BadInput.TOO_LARGE)
        text = data
    else:
        raise MalformedMessage(f"{what} is {type(data).__name__}, not text", BadInput.MALFORMED)
    try:
        return _json_under_limit(text)
    except RecursionError:
        raise MalformedMessage(f"{what} nests too deep", BadInput.TOO_DEEP) from None
    except ValueError:          # not JSON, NaN/Infinity, an integer of more than 4300 digits
        raise MalformedMessage(f"{what} is not JSON", BadInput.NOT_JSON) from None


def _json_under_limit(text: str) -> Any:
    """json.loads under a recursion limit the C stack can take. py_ecc (imported with eth-account) raises the
    interpreter's limit to 100000, and the C scanner recurses on the C stack once per nesting level: a frame of
    "[" * 60000 would overflow the stack (a segfault, not an exception). Nothing else runs meanwhile: json.loads
    never yields to another greenlet."""
    saved = sys.getrecursionlimit()
    if saved <= JSON_RECURSION_LIMIT or text.count("[") + text.count("{") < JSON_RECURSION_LIMIT // 2:
        return json.loads(text, parse_constant=_refuse_constant)     # too few brackets to nest deep
    depth = 0
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    sys.setrecursionlimit(max(JSON_RECURSION_LIMIT, depth + 100))
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    finally:
        sys.setrecursionlimit(saved)


def _document(data: Untrusted, what: str, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Raw text or bytes are parsed here; anything else is a value the HTTP client already decoded from JSON."""
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        return loads(data, what, max_bytes)
    return data


def json_object(value: Untrusted, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise MalformedMessage(f"{what} is a JSON {_kind(value)}, not an object")
    return value


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


# ---- fields ----------------------------------------------------------------------------------------------------
def _text(value: Untrusted, what: str, max_len: int = 400) -> str:
    """A string we may log, store and compare: bounded, and encodable (JSON can carry lone surrogates)."""
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} is not a string")
    if len(value) > max_len:
        raise MalformedMessage(f"{what} is longer than {max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedMessage(f"{what} is not valid Unicode") from None
    return value


def _ident(value: Untrusted, what: str) -> str:
    """A token id, order id or similar key: 1-100 printable ASCII characters without spaces (integers accepted)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 80:
        return str(value)
    if not isinstance(value, str) or not 0 < len(value) <= 100 or not value.isascii() or not value.isprintable() \
            or " " in value:
        raise MalformedMessage(f"{what} is not an identifier")
    return value


def _hex32(value: Untrusted, what: str) -> str:
    if not isinstance(value, str) or not _HEX32.match(value.lower()):
        raise MalformedMessage(f"{what} is not a 32-byte hex string")
    return value.lower()


def _optional_text(d: JsonObject, name: str) -> str:
    """A descriptive field (outcome, slug, wallet): "" when absent or unusable, never a reason to lose a fill."""
    try:
        return _text(d.get(name), name)
    except MalformedMessage:
        return ""


def _number(value: Untrusted, what: str, *, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> float:
    """A finite number (or a decimal string) in [lo, hi], or (lo, hi] with lo_open."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MalformedMessage(f"{what} is not a number")
    if isinstance(value, str) and len(value) > 64:
        raise MalformedMessage(f"{what} is not a number")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        raise MalformedMessage(f"{what} is not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(x) or x < lo or x > hi or (lo_open and x <= lo):
        raise MalformedMessage(f"{what} {x!r} is out of range")
    return x


def _field(d: JsonObject, *names: str) -> Untrusted:
    for n in names:
        if n in d:
            return d[n]
    raise MalformedMessage(f"missing field {names[0]}")


def _side(value: Untrusted, what: str = "side") -> Side:
    if value == "BUY":
        return Side.BUY
    if value == "SELL":
        return Side.SELL
    raise MalformedMessage(f"{what} is neither BUY nor SELL")


def _tick(value: Untrusted, what: str) -> float:
    x = _number(value, what, lo_open=True, hi=1.0)
    for tick in TICK_SIZES:
        if abs(x - tick) < 1e-12:
            return tick
    raise MalformedMessage(f"{what} {x!r} is not a tick size of the venue")


def _units(value: Untrusted, what: str) -> int:
    """A 6-decimal integer amount, as the venue writes it (a decimal string, or an integer)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedMessage(f"{what} is not an amount")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 80:
            raise MalformedMessage(f"{what} is not an integer amount")
        value = int(value)
    if value < 0 or value >= 2 ** 256:
        raise MalformedMessage(f"{what} is out of range")
    return value


# ---- time ------------------------------------------------------------------------------------------------------
def epoch_seconds(value: Untrusted, what: str) -> float:
    """Epoch seconds from a number or numeric string in seconds or milliseconds, or an ISO-8601 date (UTC when it
    names no zone). Raises MalformedMessage for anything outside 2001..2099, e.g. microseconds."""
    if isinstance(value, str) and value.strip() and not _looks_numeric(value):
        text = _text(value, what, 64).strip()
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise MalformedMessage(f"{what} is not a date: {text[:40]!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            ts = when.timestamp()
        except (OverflowError, ValueError, OSError):
            raise MalformedMessage(f"{what} is not a usable date") from None
    else:
        ts = _number(value, what)
        if ts > MS_ABOVE:
            ts /= 1000.0
    if ts < EPOCH_MIN_S:
        raise MalformedMessage(f"{what} {ts!r} is before 2001", BadInput.OLD_TIMESTAMP)
    if ts > EPOCH_MAX_S:
        raise MalformedMessage(f"{what} {ts!r} is after 2099", BadInput.FUTURE_TIMESTAMP)
    return ts


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_match_ts(match_ts: float, now: float) -> None:
    """Refuse a source fill dated in the future or beyond the horizon: copied, it would pass the staleness check
    with a negative age; as a cursor, it would hide every later fill."""
    if match_ts > now + MATCH_TS_MAX_SKEW_S:
        raise MalformedMessage(f"fill dated {match_ts - now:.0f}s in the future", BadInput.FUTURE_TIMESTAMP)
    if match_ts < now - MATCH_TS_HORIZON_S:
        raise MalformedMessage(f"fill dated {now - match_ts:.0f}s ago, past the horizon", BadInput.OLD_TIMESTAMP)


# ---- source fills: RTDS and the Data API -----------------------------------------------------------------------
def _fill(p: JsonObject, recv_ns: int, feed: str, camel: bool) -> SourceFill:
    def name(c: str, s: str) -> str:
        return c if camel else s

    idx = p.get(name("outcomeIndex", "outcome_index"), 999)
    return SourceFill(
        tx_hash=_hex32(_field(p, name("transactionHash", "transaction_hash")), "transactionHash"),
        asset=_ident(_field(p, name("asset", "token_id")), "asset"),
        condition_id=_hex32(_field(p, name("conditionId", "condition_id")), "conditionId"),
        outcome=_optional_text(p, "outcome"),
        outcome_index=idx if isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx <= 999 else 999,
        side=_side(p.get("side")),
        price=_number(_field(p, "price"), "price", lo_open=True, hi=1.0),
        size=_number(_field(p, "size"), "size", lo_open=True, hi=1e12),
        match_ts=epoch_seconds(_field(p, "timestamp"), "timestamp"), recv_ns=recv_ns, feed=feed,
        wallet=_optional_text(p, name("proxyWallet", "proxy_wallet")).lower(),
        event_slug=_optional_text(p, name("eventSlug", "event_slug")),
        slug=_optional_text(p, "slug"))


def parse_rtds_frame(data: Untrusted, source_wallet: str, recv_ns: int) -> tuple[list[SourceFill], str]:
    """One RTDS frame -> (fills of the source wallet, frame id). Non-activity frames and PONGs give no fills."""
    if isinstance(data, (bytes, bytearray)) and bytes(data).strip() in (b"", b"PONG", b"pong", b"PING", b"ping"):
        return [], ""
    if isinstance(data, str) and data.strip() in KEEPALIVE_TEXTS:
        return [], ""
    msg = json_object(loads(data, "RTDS frame"), "RTDS frame")
    if msg.get("topic") != "activity":
        return [], ""
    kind = msg.get("type")
    feed = RTDS_TYPES.get(kind) if isinstance(kind, str) else None
    if feed is None:
        return [], ""
    payload = json_object(msg.get("payload"), "activity payload")
    wallet = payload.get("proxyWallet")
    if not isinstance(wallet, str):
        raise MalformedMessage("activity payload without proxyWallet")
    if wallet.lower() != source_wallet.lower():
        return [], ""
    fill = _fill(payload, recv_ns, feed, camel=True)
    # The payload is the fill; the envelope (its send timestamp, the connection id) is not: a payload sent again in
    # a new envelope is the same frame. Its fields are flat scalars (hashed as they are, ~2 us); anything nested
    # is hashed through its canonical JSON.
    try:
        frame_id = hash(tuple(sorted(payload.items())))
    except TypeError:
        frame_id = hash(json.dumps(payload, sort_keys=True))
    return [fill], str(frame_id)


def parse_data_api_trade(row: Untrusted, recv_ns: int) -> SourceFill:
    """A Data API trade row, v1 (camelCase) or v2 (snake_case)."""
    row = json_object(row, "trade row")
    camel = "transactionHash" in row or "conditionId" in row
    return _fill(row, recv_ns, Feed.DATA_API.value, camel=camel)


def parse_trades_page(data: Untrusted, recv_ns: int) -> TradesPage:
    """GET /v2/trades -> its rows (a bad row is refused on its own) and the pagination."""
    doc = json_object(_document(data, "v2/trades answer", MAX_DOCUMENT_BYTES), "v2/trades answer")
    rows = doc.get("data")
    if not isinstance(rows, list):
        raise MalformedMessage("v2/trades answer without a data list")
    fills, refused = [], []
    for row in rows:
        try:
            fills.append(parse_data_api_trade(row, recv_ns))
        except MalformedMessage as exc:
            refused.append(Refused(exc.reason, str(exc)))
    pag = doc.get("pagination", {})
    pag = pag if isinstance(pag, dict) else {}
    cursor = pag.get("next_cursor")
    has_more = pag.get("has_more") is True
    return TradesPage(tuple(fills), tuple(refused), has_more,
                      _text(cursor, "next_cursor", 512) if isinstance(cursor, str) else "")


# ---- Gamma -----------------------------------------------------------------------------------------------------
def _json_list(value: Untrusted, name: str) -> list[Any]:
    if isinstance(value, str):
        value = loads(value, f"gamma market {name}")
    if not isinstance(value, list):
        raise MalformedMessage(f"gamma market: {name} is not a list")
    return value


def parse_gamma_market(m: Untrusted, event: JsonObject | None = None) -> MarketMeta:
    """A Gamma market object (optionally with its event) -> MarketMeta."""
    m = json_object(m, "gamma market")
    event = event or {}
    version = m.get("version") or "v1"
    if version not in ("v1", "v2"):
        raise MalformedMessage(f"gamma market: unknown version {str(version)[:20]!r}")
    ids = m.get("positionIds") if version == "v2" and m.get("positionIds") else m.get("clobTokenIds")
    token_ids = tuple(_ident(t, "token id") for t in _json_list(ids, "clobTokenIds"))
    outcomes = tuple(_text(o, "outcome", 100) for o in _json_list(m.get("outcomes"), "outcomes"))
    if len(token_ids) != len(outcomes) or not token_ids:
        raise MalformedMessage("gamma market: clobTokenIds and outcomes differ in length")
    fee = m.get("feeSchedule")
    if fee is None:
        fee = {}
    fee = json_object(fee, "gamma market feeSchedule")
    end = m.get("endDate") or event.get("endDate")
    start = m.get("eventStartTime") or event.get("startTime")
    # Open only when Gamma says so plainly: a null or a string here is not a reason to send orders.
    accepting = m.get("acceptingOrders", True) is True and m.get("closed", False) is False
    return MarketMeta(
        condition_id=_hex32(m.get("conditionId"), "gamma market conditionId"), token_ids=token_ids,
        outcomes=outcomes, tick_size=_tick(m.get("orderPriceMinTickSize") or 0.01, "orderPriceMinTickSize"),
        min_size=_number(m.get("orderMinSize") or 0, "orderMinSize", hi=1e9),
        neg_risk=m.get("negRisk", False) is True,
        end_ts=epoch_seconds(end, "endDate") if end else 0.0,
        start_ts=epoch_seconds(start, "eventStartTime") if start else 0.0,
        exchange_version=3 if version == "v2" else 2, slug=_optional_text(m, "slug"),
        event_slug=_optional_text(event, "slug"),
        fee_rate=_number(fee.get("rate") or 0.0, "feeSchedule.rate", hi=1.0),
        fee_exponent=_number(fee.get("exponent") or 1.0, "feeSchedule.exponent", hi=10.0),
        accepting_orders=accepting)


def parse_gamma(data: Untrusted) -> GammaAnswer:
    """Any Gamma document (event, market, or a list of either) -> its markets; a bad market is refused alone."""
    doc = _document(data, "gamma answer", MAX_DOCUMENT_BYTES)
    items = doc if isinstance(doc, list) else [doc]
    markets, refused = [], []
    for item in items:
        pairs: list[tuple[object, dict | None]]
        if isinstance(item, dict) and isinstance(item.get("markets"), list):
            pairs = [(m, item) for m in item["markets"]]
        else:
            pairs = [(item, None)]
        for m, event in pairs:
            try:
                markets.append(parse_gamma_market(m, event))
            except MalformedMessage as exc:
                refused.append(Refused(exc.reason, str(exc)))
    return GammaAnswer(tuple(markets), tuple(refused))


# ---- the CLOB: books and the market websocket ------------------------------------------------------------------
def _levels(raw: Untrusted, name: str, reverse: bool) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list):
        raise MalformedMessage(f"book {name} is not a list")
    out = []
    for lvl in raw:
        lvl = json_object(lvl, f"book {name} level")
        out.append((_number(lvl.get("price"), "level price", lo_open=True, hi=1.0),
                    _number(lvl.get("size"), "level size", hi=1e12)))
    return tuple(sorted((lv for lv in out if lv[1] > 0), key=lambda lv: lv[0], reverse=reverse))


def _event_ts(m: JsonObject) -> float:
    """The event's own timestamp where it carries a usable one, else 0 (informational: never a cursor)."""
    try:
        return epoch_seconds(m["timestamp"], "timestamp") if "timestamp" in m else 0.0
    except MalformedMessage:
        return 0.0


def parse_book(data: Untrusted) -> BookTop:
    """REST /book or market-ws `book` -> BookTop with the best level first on both sides (the venue's order is not
    reliable: it is sorted here)."""
    msg = json_object(_document(data, "book"), "book")
    return BookTop(asset=_ident(msg.get("asset_id"), "asset_id"),
                   bids=_levels(msg.get("bids", []), "bids", True),
                   asks=_levels(msg.get("asks", []), "asks", False), ts=_event_ts(msg))


def _price_change(m: JsonObject) -> PriceChange:
    raw = m.get("price_changes")
    if not isinstance(raw, list):
        raise MalformedMessage("price_change without a price_changes list")
    changes = []
    for ch in raw:
        ch = json_object(ch, "price_change entry")
        changes.append(LevelChange(asset=_ident(ch.get("asset_id"), "asset_id"), side=_side(ch.get("side")),
                                   price=_number(ch.get("price"), "price", lo_open=True, hi=1.0),
                                   size=_number(ch.get("size"), "size", hi=1e12)))
    return PriceChange(market=_optional_text(m, "market"), changes=tuple(changes), ts=_event_ts(m))


def _market_event(m: Untrusted) -> MarketEvent | None:
    m = json_object(m, "market-ws message")
    kind = m.get("event_type")
    if kind == "book":
        return parse_book(m)
    if kind == "price_change":
        return _price_change(m)
    if kind == "tick_size_change":
        return TickSizeChange(asset=_ident(m.get("asset_id"), "asset_id"), market=_optional_text(m, "market"),
                              old_tick=_tick(m.get("old_tick_size"), "old_tick_size"),
                              new_tick=_tick(m.get("new_tick_size"), "new_tick_size"), ts=_event_ts(m))
    if kind == "best_bid_ask":
        return BestBidAsk(asset=_ident(m.get("asset_id"), "asset_id"), market=_optional_text(m, "market"),
                          best_bid=_number(m.get("best_bid"), "best_bid", hi=1.0),
                          best_ask=_number(m.get("best_ask"), "best_ask", hi=1.0), ts=_event_ts(m))
    if kind == "last_trade_price":
        tx = m.get("transaction_hash")
        return LastTradePrice(asset=_ident(m.get("asset_id"), "asset_id"), market=_optional_text(m, "market"),
                              side=_side(m.get("side")), price=_number(m.get("price"), "price", lo_open=True, hi=1.0),
                              size=_number(m.get("size"), "size", hi=1e12), ts=_event_ts(m),
                              tx_hash=_hex32(tx, "transaction_hash") if tx else "")
    if kind == "market_resolved":
        assets = m.get("assets_ids")
        if not isinstance(assets, list):
            raise MalformedMessage("market_resolved without assets_ids")
        return MarketResolved(market=_hex32(m.get("market"), "market"),
                              assets=tuple(_ident(a, "asset id") for a in assets),
                              winning_asset=_ident(m.get("winning_asset_id"), "winning_asset_id"), ts=_event_ts(m))
    return None                 # new_market and anything newer: not used


def parse_market_message(data: Untrusted) -> MarketMessage:
    """One market-websocket message (an event, or a list of them as in the initial dump) -> typed events; a bad
    event in a list is refused alone, keepalive answers and unused event types give nothing."""
    if isinstance(data, (bytes, bytearray)) and bytes(data).strip() in (b"", b"PONG", b"pong"):
        return MarketMessage(())
    if isinstance(data, str) and data.strip() in KEEPALIVE_TEXTS:
        return MarketMessage(())
    msg = _document(data, "market-ws message", MAX_DOCUMENT_BYTES)
    if not isinstance(msg, list):
        event = _market_event(msg)
        return MarketMessage((event,) if event is not None else ())
    events, refused = [], []
    for m in msg:
        try:
            event = _market_event(m)
        except MalformedMessage as exc:
            refused.append(Refused(exc.reason, str(exc)))
            continue
        if event is not None:
            events.append(event)
    return MarketMessage(tuple(events), tuple(refused))


def apply_price_change(book: BookTop, change: LevelChange) -> BookTop:
    """Apply one `price_change` entry (size 0 removes the level)."""
    levels = dict(book.bids if change.side is Side.BUY else book.asks)
    if change.size > 0:
        levels[change.price] = change.size
    else:
        levels.pop(change.price, None)
    ordered = tuple(sorted(levels.items(), key=lambda lv: lv[0], reverse=change.side is Side.BUY))
    if change.side is Side.BUY:
        return BookTop(book.asset, ordered, book.asks, book.ts)
    return BookTop(book.asset, book.bids, ordered, book.ts)


def parse_tick_size(data: Untrusted) -> float:
    """GET /tick-size?token_id= -> `{"minimum_tick_size": 0.01}`."""
    body = json_object(_document(data, "tick-size answer"), "tick-size answer")
    return _tick(body.get("minimum_tick_size"), "minimum_tick_size")


# ---- the CLOB: account and orders ------------------------------------------------------------------------------
def _usd(raw: Untrusted, name: str) -> float:
    """A 6-decimal integer amount in dollars; MAX_UINT256 stays huge but finite."""
    return _units(raw, name) / 1e6


def parse_funds(data: Untrusted) -> Funds:
    """GET /balance-allowance?asset_type=COLLATERAL: `{"balance", "allowances": {exchange: amount}}` (V2), or the
    older single `"allowance"`."""
    body = json_object(_document(data, "balance-allowance answer"), "balance-allowance answer")
    balance = _usd(body.get("balance"), "balance")
    raw = body.get("allowances")
    if isinstance(raw, dict):
        allowances = tuple(sorted((_ident(k, "exchange"), _usd(v, f"allowance of {k[:42]}")) for k, v in raw.items()))
    elif raw is None and "allowance" in body:
        allowances = (("exchange", _usd(body["allowance"], "allowance")),)
    elif raw is None:
        allowances = ()
    else:
        raise MalformedMessage("allowances is not an object")
    return Funds(balance, allowances)


POST_STATUSES = {"live": "LIVE", "matched": "MATCHED", "delayed": "DELAYED", "unmatched": "UNMATCHED"}


def _strings(value: Untrusted, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedMessage(f"{what} is not a list")
    return tuple(_text(v, what, 200) for v in value)


def _amount(value: Untrusted, what: str) -> float:
    """makingAmount / takingAmount: 6-decimal units; an empty string means none (a resting order's answer)."""
    return 0.0 if value in (None, "") else _units(value, what) / 1e6


def parse_post_order_answer(data: Untrusted, side: Side) -> PostOrderAnswer:
    """A POST /order answer -> what the venue did with the order. A BUY makes pUSD and takes shares, a SELL the
    reverse; a fill that implies a price outside (0, 1] is not an answer the venue gives, so it is refused."""
    body = json_object(_document(data, "POST /order answer"), "POST /order answer")
    success = body.get("success")
    if success is not None and not isinstance(success, bool):
        raise MalformedMessage("success is not a boolean")
    raw_status = body.get("status")
    if raw_status is not None and not isinstance(raw_status, str):
        raise MalformedMessage("status is not a string")
    status = POST_STATUSES.get((raw_status or "").lower(), "")
    making = _amount(body.get("makingAmount"), "makingAmount")
    taking = _amount(body.get("takingAmount"), "takingAmount")
    shares, usd = (taking, making) if side is Side.BUY else (making, taking)
    price = usd / shares if shares > 0 else 0.0
    if shares > 0 and not 0 < price <= 1.0 + 1e-9:
        raise MalformedMessage(f"filled amounts imply a price of {price:.6g}")
    error = body.get("errorMsg") or body.get("error") or ""
    order_id = body.get("orderID") or ""
    accepted = success is True and bool(status)
    return PostOrderAnswer(
        accepted=accepted, status=status if accepted else "", order_id=_text(order_id, "orderID", 200),
        filled_size=shares if accepted else 0.0, avg_price=price if accepted else 0.0,
        trade_ids=_strings(body.get("tradeIDs"), "tradeIDs"),
        tx_hashes=_strings(body.get("transactionsHashes"), "transactionsHashes"),
        error=_text(error, "errorMsg", 2000) if isinstance(error, str) else _text(json.dumps(error)[:500], "error"))


def parse_order_lookup(data: Untrusted) -> OrderLookup | None:
    """GET /data/order/{hash} -> the venue's record of the order, or None when it answers JSON null (it does not
    know the hash). Anything else that is not an order object is malformed: no evidence either way."""
    body = _document(data, "order lookup answer")
    if body is None:
        return None
    body = json_object(body, "order lookup answer")
    status = body.get("status")
    if not isinstance(status, str) or not status.strip():
        raise MalformedMessage("order lookup answer without a status")
    return OrderLookup(order_id=_ident(body.get("id"), "id"),
                       status=_text(status, "status", 64).strip().upper().removeprefix("ORDER_STATUS_"),
                       matched_size=_number(body.get("size_matched") or 0, "size_matched", hi=1e12),
                       price=_number(body.get("price") or 0, "price", hi=1.0),
                       original_size=_number(body.get("original_size") or 0, "original_size", hi=1e12))


def parse_trades_of_order(data: Untrusted, order_hash: str) -> TradesOfOrder:
    """A GET /data/trades page -> what our order `order_hash` executed in it, as the taker or as a maker, and the
    next page's cursor. A trade whose settlement failed does not count."""
    body = json_object(_document(data, "trade history answer"), "trade history answer")
    rows = body.get("data")
    if not isinstance(rows, list):
        raise MalformedMessage("trade history answer without a data list")
    shares = cost = 0.0
    for row in rows:
        row = json_object(row, "trade")
        if "FAILED" in str(row.get("status", "")).upper():
            continue
        if row.get("taker_order_id") == order_hash:
            size, price = row.get("size"), row.get("price")
        else:
            makers = row.get("maker_orders") or []
            if not isinstance(makers, list):
                raise MalformedMessage("maker_orders is not a list")
            mine = [m for m in makers if isinstance(m, dict) and m.get("order_id") == order_hash]
            if not mine:
                continue
            size, price = mine[0].get("matched_amount"), mine[0].get("price")
        size, price = _number(size, "trade size", hi=1e12), _number(price, "trade price", hi=1.0)
        shares, cost = shares + size, cost + size * price
    cursor = body.get("next_cursor")
    return TradesOfOrder(shares, cost / shares if shares else 0.0, cursor if isinstance(cursor, str) else "")


# ---- the Data API positions endpoint, and a resolution on Gamma -------------------------------------------------
MAX_SHARES = 1e12                # far above any position anyone holds; a larger number is a broken answer


def parse_venue_position(row: Untrusted) -> VenuePosition:
    """One row of GET /positions (camelCase, as the docs' OpenAPI names the fields)."""
    r = json_object(row, "position")
    redeemable = r.get("redeemable", False)
    if not isinstance(redeemable, bool):
        raise MalformedMessage("position redeemable is not a boolean")
    index = r.get("outcomeIndex", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1000:
        raise MalformedMessage("position outcomeIndex is not a small integer")
    return VenuePosition(
        asset=_ident(_field(r, "asset"), "position asset"),
        condition_id=_hex32(_field(r, "conditionId"), "position conditionId"),
        size=_number(_field(r, "size"), "position size", hi=MAX_SHARES),
        avg_price=_number(r.get("avgPrice", 0), "position avgPrice", hi=1.0),
        cur_price=_number(r.get("curPrice", 0), "position curPrice", hi=1.0),
        redeemable=redeemable, outcome=_optional_text(r, "outcome"), outcome_index=index)


def parse_positions(data: Untrusted) -> PositionsAnswer:
    """A GET /positions answer (a JSON array of rows) -> the rows that parsed and the ones refused."""
    doc = _document(data, "positions answer", MAX_DOCUMENT_BYTES)
    if not isinstance(doc, list):
        raise MalformedMessage(f"positions answer is a JSON {_kind(doc)}, not an array")
    positions, refused = [], []
    for row in doc:
        try:
            positions.append(parse_venue_position(row))
        except MalformedMessage as exc:
            refused.append(Refused(exc.reason, str(exc)))
    return PositionsAnswer(tuple(positions), tuple(refused))


def parse_gamma_winner(m: Untrusted) -> tuple[str, str] | None:
    """(condition id, winning token) of a resolved Gamma market, or None while it is not resolved: `closed` and
    `outcomePrices` of exactly one "1" and otherwise "0" (a market in dispute keeps fractional prices)."""
    m = json_object(m, "gamma market")
    if m.get("closed") is not True:
        return None
    cid = _hex32(m.get("conditionId"), "gamma market conditionId")
    ids = m.get("positionIds") if m.get("version") == "v2" and m.get("positionIds") else m.get("clobTokenIds")
    token_ids = [_ident(t, "token id") for t in _json_list(ids, "clobTokenIds")]
    prices = [_number(p, "outcomePrices", hi=1.0) for p in _json_list(m.get("outcomePrices"), "outcomePrices")]
    if len(prices) != len(token_ids) or sorted(prices) != [0.0] * (len(prices) - 1) + [1.0]:
        return None
    return cid, token_ids[prices.index(1.0)]
