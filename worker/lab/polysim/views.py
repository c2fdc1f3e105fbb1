"""JSON shapes several surfaces share: order books (REST /book and the market websocket) and public profiles."""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

from polysim.book import UNIT
from polysim.exchange import Exchange, fmt

_ADJ = ("Rowdy", "Grateful", "Silent", "Brisk", "Lucky", "Mellow", "Nimble", "Quiet", "Rapid", "Sunny", "Tidy",
        "Witty", "Bold", "Calm", "Eager", "Fuzzy")
_NOUN = ("Tenement", "Wick", "Harbor", "Lantern", "Meadow", "Orchard", "Pylon", "Quarry", "Ridge", "Summit",
         "Thicket", "Valley", "Willow", "Anchor", "Beacon", "Canyon")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def profile(wallet: str) -> dict:
    """Deterministic public profile fields for a wallet (name, pseudonym), like the feeds attach."""
    h = hashlib.sha256(wallet.lower().encode()).digest()
    return {"name": f"{int.from_bytes(h[:4], 'big') % 10**10}", "pseudonym": f"{_ADJ[h[4] % 16]}-{_NOUN[h[5] % 16]}"}


def owner_id(wallet: str) -> str:
    """A stable API-key-like UUID for traders that are not our API users (maker_orders[].owner)."""
    return str(uuid.UUID(bytes=hashlib.sha256(b"owner:" + wallet.lower().encode()).digest()[:16], version=4))


def book_doc(ex: Exchange, token: str, now: float) -> dict:
    """REST /book: both sides worst-first (the best price is the last element, as the live API lists them) and
    `hash` = sha1 of the compact JSON with an empty hash, the way the SDK recomputes it."""
    m = ex.by_token[token]
    idx = m.token_ids.index(token)
    book = ex.books[m.condition_id]
    doc = {"market": m.condition_id, "asset_id": token, "timestamp": str(int(now * 1000)), "hash": "",
           "bids": [{"price": fmt(p / UNIT), "size": fmt(s)} for p, s in reversed(book.levels(idx, "BUY"))],
           "asks": [{"price": fmt(p / UNIT), "size": fmt(s)} for p, s in reversed(book.levels(idx, "SELL"))],
           "min_order_size": fmt(m.min_size), "tick_size": fmt(m.tick_size), "neg_risk": m.neg_risk,
           "last_trade_price": fmt(book.last_trade_price[idx])}
    doc["hash"] = hashlib.sha1(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()
    return doc


def best_prices(ex: Exchange, token: str) -> tuple[str, str]:
    """(best bid, best ask) strings; an empty side reads "0" / "1" like the market websocket."""
    m = ex.by_token[token]
    b, a = ex.books[m.condition_id].best(m.token_ids.index(token))
    return (fmt(b / UNIT) if b is not None else "0"), (fmt(a / UNIT) if a is not None else "1")
