"""Simulated Chainlink spot prices: a seeded log random walk per asset, in market time.

It drives three things like the real one does: the RTDS `crypto_prices_chainlink` topic, each Up/Down market's
resolution and, with the `walk` price model, the fair value background makers quote around (a binary option on the
walk: Phi(ln(S/S0) / (sigma * sqrt(time left)))).

Resolution follows the venue's rule since 2026-08-07: the price to beat and the settlement price are both Chainlink
TWAPs with a 60-second lookback (market time, so 60/speed wall seconds), taken at the window's start and end; Up wins
when the end TWAP is at or above the start TWAP.
"""
from __future__ import annotations

import math
import random
from collections import deque

START = {"btc": 97_000.0, "eth": 3_400.0, "sol": 180.0, "xrp": 2.3}
TWAP_LOOKBACK_MARKET_S = 60.0


class Oracle:
    def __init__(self, rng: random.Random, assets, *, window_s: float, sigma_per_window: float = 0.002):
        self.rng = rng
        self.window_s = window_s
        self.sigma = sigma_per_window
        self.lookback = TWAP_LOOKBACK_MARKET_S * window_s / 900.0
        self.spot = {a: START.get(a, 100.0) for a in assets}
        self._history: dict[str, deque[tuple[float, float]]] = {a: deque() for a in self.spot}
        self._starts: dict[tuple[str, float], float] = {}
        self._t: float | None = None

    def step(self, now: float) -> None:
        if self._t is not None and now > self._t:
            scale = self.sigma * math.sqrt((now - self._t) / self.window_s)
            for a in self.spot:
                self.spot[a] *= math.exp(self.rng.gauss(0.0, scale))
        if self._t is None or now > self._t:
            for a, price in self.spot.items():
                hist = self._history[a]
                hist.append((now, price))
                while len(hist) > 2 and hist[1][0] <= now - 2 * self.lookback:
                    hist.popleft()
            self._t = now

    def twap(self, asset: str, at: float) -> float:
        """Time-weighted average of the spot over [at - lookback, at] (the spot is a step function of the samples);
        the current spot when no sample is that old yet."""
        lo = at - self.lookback
        points = [(t, p) for t, p in self._history.get(asset, ()) if t <= at]
        if not points or self.lookback <= 0:
            return self.spot[asset]
        area, covered = 0.0, 0.0
        for (t0, p0), (t1, _) in zip(points, points[1:] + [(at, 0.0)], strict=True):
            a, b = max(t0, lo), min(t1, at)
            if b > a:
                area += p0 * (b - a)
                covered += b - a
        return area / covered if covered > 0 else points[-1][1]

    def mark_start(self, asset: str, window_start: float) -> float:
        """The window's price to beat: the TWAP ending at the window start, taken once."""
        key = (asset, window_start)
        if key not in self._starts:
            if self._t is not None and window_start > self._t:
                return self.twap(asset, window_start)          # not started yet: an estimate, not kept
            self._starts[key] = self.twap(asset, window_start)
        return self._starts[key]

    def forget(self, asset: str, window_start: float) -> None:
        self._starts.pop((asset, window_start), None)

    def fair_up(self, asset: str, window_start: float, now: float) -> float:
        left = max(1e-6, (window_start + self.window_s - now) / self.window_s)
        z = math.log(self.spot[asset] / self.mark_start(asset, window_start)) / (self.sigma * math.sqrt(left))
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
