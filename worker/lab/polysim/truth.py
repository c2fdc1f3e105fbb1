"""The ground-truth log: JSON lines written as things happen, independent of any client's bookkeeping.

Kinds (stable; readers such as the copier's soak and bench depend on them; new fields may be added, none removed):
  source_fill  every fill of the source wallet: tx_hash, token_id, side, price, size, role, condition_id,
               match_time, slug, outcome, order_hash, window_end
  order        every order POST we received: order_hash, owner, http, status, error, filled_size, side,
               token_id, received_at, price, size, order_type, post_only, batch
  fault        every fault applied: fault, params, source (control | scenario)
  market       market lifecycle: slug, condition_id, state (closed | resolved), winner; once resolved also
               start_price and end_price (the oracle's TWAPs the winner comes from) and forced (resolved by control)
  trade        final status of a trade with an API owner: trade_id, tx_hash, status (CONFIRMED | FAILED)

The money of the wallets we account for (API wallets), enough to recompute every balance independently:
  fund         pUSD and POL a wallet received: wallet, pusd (decimal), pol_wei (string), reason (initial: a new API
               wallet's scenario balances | control: POST /_sim/wallets/fund, with owner and approved)
  fill         every fill of an API wallet: trade_id, tx_hash, wallet, role, side, token_id, condition_id, slug,
               outcome, price, size, notional, fee, cash (exactly what its pUSD balance moved: BUY -(notional +
               fee), SELL notional - fee), order_hash, match_time, will_fail. A trade whose `trade` line says FAILED
               was reverted: its fills count for nothing.
  chain_tx     every mined transaction of a wallet, the relayer or the auto-redeem operator: tx_hash,
               block_number, block_hash, block_time, sender, to, nonce, status (1 | 0: reverted, gas still paid),
               gas_used, effective_gas_price, gas_paid_wei (string), gas_paid_pol, method (selector), revert,
               via (eoa | relayer | auto), relayer_id, wallet (the deposit wallet of a relayer batch)
  redemption   every redemption (adapter or auto-redeem operator): wallet, condition_id, slug, winner, operator,
               burned ({token_id: 6-decimal units}), payout_units, payout (pUSD), the block fields above, via,
               relayer_id, gas_paid_wei / gas_paid_pol (what the wallet paid: 0 through the relayer or operator)
  merge        every merge of full sets: wallet, condition_id, slug, amount_units, amount, payout, the block fields,
               via, relayer_id, gas_paid_wei / gas_paid_pol
  chain_reorg  blocks a reorg orphaned: block_hashes, tx_hashes. Drop every chain_tx / redemption / merge line of
               those blocks: their transactions were undone and are mined again (new lines, new block hash).
  relayer      the relayer's view: event (accepted | resent | refused | invalid), relayer_id, wallet, owner,
               nonce, deadline, calls, state, error
So: final pUSD = sum(fund.pusd) + sum(fill.cash of trades not FAILED) + sum(redemption.payout) + sum(merge.payout);
final POL (wei) = sum(fund.pol_wei) - sum(chain_tx.gas_paid_wei where sender is the wallet).
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
