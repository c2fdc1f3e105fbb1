"""The ground-truth log: JSON lines written as things happen, independent of any client's bookkeeping.

Kinds (stable; readers such as the copier's soak and bench depend on them):
  source_fill  every fill of the source wallet: tx_hash, token_id, side, price, size, role, condition_id,
               match_time, slug, outcome, order_hash, window_end
  order        every order POST we received: order_hash, owner, http, status, error, filled_size, side,
               token_id, received_at, price, size, order_type, post_only, batch
  fault        every fault applied: fault, params, source (control | scenario)
  market       market lifecycle: slug, condition_id, state, winner
  trade        final status of a trade with an API owner: trade_id, tx_hash, status (CONFIRMED | FAILED)
Every line also has `kind` and `ts` (epoch seconds when written).
"""
from __future__ import annotations

import json
from collections.abc import Callable


class GroundTruth:
    def __init__(self, path: str | None, now: Callable[[], float]):
        self._now = now
        self._file = open(path, "a", buffering=1) if path else None

    def record(self, kind: str, **data) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"kind": kind, "ts": round(self._now(), 3), **data}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
