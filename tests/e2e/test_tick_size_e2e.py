"""The market catalog's tick follows the venue: the simulator's market channel announces a tick_size_change and the
catalog (through the book cache's callback) prices on the new tick; with the channel gone, fresh_tick() re-reads the
CLOB's /tick-size and the catalog follows that too. Real websocket, real HTTP, the catalog and book cache in-process."""
import time

import gevent
import httpx
from gevent.event import Event

from copier.books import BookCache
from copier.clock import LiveClock
from copier.config import parse_config
from copier.markets import MarketCatalog
from copier.metrics import NullMetrics
from polylab.harness import copier_config, eventually


def test_tick_size_change_and_the_clob_tick_reach_the_catalog(sim, tmp_path):
    # Arrange: a catalog warmed from the simulator's Gamma and a book cache on its market channel
    cfg = parse_config(copier_config(sim.urls, tmp_path / "copier.sqlite", speed=900 / sim.window_s))
    clock, metrics, stopping = LiveClock(), NullMetrics(), Event()
    catalog = MarketCatalog(cfg, clock=clock, metrics=metrics)
    sim.fresh_window(10)                    # the window must not turn between the warm-up and the tick change
    assert catalog.warm() >= 2
    books = BookCache(cfg, clock=clock, metrics=metrics, on_tick_size=catalog.on_tick_size_change)
    books.watch(catalog.assets())
    runner = gevent.spawn(books.run, stopping)
    start = int(time.time() // sim.window_s * sim.window_s)
    slug = f"btc-updown-15m-{start}"
    token = next(a for a in catalog.assets() if catalog.by_asset(a).slug == slug)
    other = next(t for t in catalog.by_asset(token).token_ids if t != token)
    try:
        eventually(lambda: books.connected and books.top(token) is not None, 20, 0.1, "the book subscription")
        before = catalog.by_asset(token).tick_size
        new = 0.001 if before != 0.001 else 0.01
        # Act: the venue changes the market's tick
        r = httpx.post(f"{sim.urls['control']}/tick-size", json={"slug": slug, "tick_size": new}, timeout=5)
        r.raise_for_status()
        # Assert: both outcomes price on it
        eventually(lambda: catalog.by_asset(token).tick_size == new, 15, 0.1, "the new tick in the catalog")
        assert catalog.by_asset(other).tick_size == new
    finally:
        stopping.set()
        books.close()
        runner.join(5)
    # With the channel gone, a change reaches the catalog only through /tick-size.
    back = httpx.post(f"{sim.urls['control']}/tick-size", json={"slug": slug, "tick_size": before}, timeout=5)
    back.raise_for_status()
    assert catalog.by_asset(token).tick_size == new
    assert catalog.fresh_tick(other) == before and catalog.by_asset(token).tick_size == before
    assert catalog.edge.refusals == 0 and books.edge.refusals == 0 and books.edge.errors == 0
