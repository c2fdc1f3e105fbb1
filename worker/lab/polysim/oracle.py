"""Simulated Chainlink spot prices: a seeded log random walk per asset, in market time.

It drives three things like the real one does: the RTDS `crypto_prices_chainlink` topic, each Up/Down market's
resolution (end price >= start price -> Up) and, with the `walk` price model, the fair value background makers
quote around (a binary option on the walk: Phi(ln(S/S0) / (sigma * sqrt(time left)))).
"""
from __future__ import annotations

import math
import random

START = {"btc": 97_000.0, "eth": 3_400.0, "sol": 180.0, "xrp": 2.3}


class Oracle:
    def __init__(self, rng: random.Random, assets, *, window_s: float, sigma_per_window: float = 0.002):
        self.rng = rng
        self.window_s = window_s
        self.sigma = sigma_per_window
        self.spot = {a: START.get(a, 100.0) for a in assets}
        self._starts: dict[tuple[str, float], float] = {}
        self._t: float | None = None

    def step(self, now: float) -> None:
        if self._t is not None and now > self._t:
            scale = self.sigma * math.sqrt((now - self._t) / self.window_s)
            for a in self.spot:
                self.spot[a] *= math.exp(self.rng.gauss(0.0, scale))
        self._t = now

    def mark_start(self, asset: str, window_start: float) -> float:
        """The window's price to beat, taken the first time the window is seen trading."""
        return self._starts.setdefault((asset, window_start), self.spot[asset])

    def forget(self, asset: str, window_start: float) -> None:
        self._starts.pop((asset, window_start), None)

    def up_wins(self, asset: str, window_start: float) -> bool:
        return self.spot[asset] >= self.mark_start(asset, window_start)

    def fair_up(self, asset: str, window_start: float, now: float) -> float:
        left = max(1e-6, (window_start + self.window_s - now) / self.window_s)
        z = math.log(self.spot[asset] / self.mark_start(asset, window_start)) / (self.sigma * math.sqrt(left))
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
