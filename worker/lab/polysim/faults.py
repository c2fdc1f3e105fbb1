"""Fault state shared by the surfaces: one-shot counters (`next N requests fail`) and time windows.

What each kind does is listed in scenario.FAULT_KINDS; the surfaces ask `take(kind)` (consumes one count) or
`window(kind, now)` (active until a time). The schedule runner replays a scenario's fault list on the loop.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from polysim.scenario import FaultStep


class Faults:
    def __init__(self):
        self.counts: dict[str, dict] = {}
        self.windows: dict[str, dict] = {}

    def arm_count(self, kind: str, params: dict) -> None:
        self.counts[kind] = {**params, "count": int(params.get("count", 1))}

    def arm_window(self, kind: str, until: float, params: dict) -> None:
        self.windows[kind] = {**params, "until": until}

    def take(self, kind: str) -> dict | None:
        f = self.counts.get(kind)
        if f and f["count"] > 0:
            f["count"] -= 1
            return f
        return None

    def window(self, kind: str, now: float) -> dict | None:
        f = self.windows.get(kind)
        return f if f and now < f["until"] else None

    def snapshot(self) -> dict:
        return {**{k: dict(v) for k, v in self.counts.items()}, **{k: dict(v) for k, v in self.windows.items()}}


async def run_schedule(steps: tuple[FaultStep, ...], apply: Callable[[str, dict, str], None],
                       started: float, now: Callable[[], float]) -> None:
    """Apply each step at `started + at` (and every `every` seconds after, if set) until cancelled."""
    due = sorted(((started + s.at, i) for i, s in enumerate(steps)))
    while due:
        at, i = due.pop(0)
        await asyncio.sleep(max(0.0, at - now()))
        step = steps[i]
        apply(step.kind, dict(step.params), "scenario")
        if step.every:
            due.append((at + step.every, i))
            due.sort()
