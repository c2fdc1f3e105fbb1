"""Polygon state for the wallets we account for: what `eth_call` reads and what a mined transaction changes.

One source of truth: pUSD balances and outcome tokens are the exchange's wallets (exchange.py; trades move them at
match time), read here as ERC20 / ERC1155 balances in 6-decimal units. This module adds what only the chain has:
POL balances (wei), account nonces, CTF operator approvals, pUSD allowances and deposit wallets (owner, batch nonce).

A call runs in a `Frame`: every change is applied at once with its inverse recorded, so a revert rolls the frame back
(a deposit wallet's batch is atomic), `eth_call` / `eth_estimateGas` run and roll back, and a mined transaction keeps
its frame to be undone if its block is orphaned. The collateral adapters behave as ctf-exchange-v2's
`CtfCollateralAdapter` (see contracts.py): redeem pulls both outcome balances and pays the winning ones, merge
pulls `amount` of each and pays `amount`; both need the CTF approval of the adapter by the holder, and revert with
`OnlyUnpaused()` while the `adapter_paused` fault is on.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from eth_abi import decode, encode
from eth_abi.exceptions import DecodingError, EncodingError

from polysim import contracts as c
from polysim import crypto
from polysim.events import WALLET_CREATED, Hub, SimMarket
from polysim.exchange import EPS, Exchange, Settled, Wallet
from polysim.faults import Faults
from polysim.truth import GroundTruth

WEI = 10**18
UNIT = 10**6
EXCHANGES = {a.lower() for a in (crypto.EXCHANGE_V2, crypto.NEG_RISK_EXCHANGE_V2, crypto.EXCHANGE_V3)}
CONTRACTS = {c.PUSD, c.USDCE, c.CTF, *c.ADAPTERS, c.DEPOSIT_WALLET_FACTORY, c.AUTO_REDEEM_OPERATOR,
             c.PROTOCOL_V2_ROUTER, *EXCHANGES}
STUB_CODE = "0x6080604052348015600f57600080fd5b50"   # non-empty code: the address is a contract


def units(x: float) -> int:
    return int(round(x * UNIT))


def pol_wei(x: float) -> int:
    return int(round(x * WEI))


@dataclass
class DepositWallet:
    owner: str
    nonce: int = 0


@dataclass
class Frame:
    """One transaction's execution: its logs, gas, ground-truth records and the undo of every change."""
    gas: int = 0
    logs: list[c.Log] = field(default_factory=list)
    records: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    undos: list[Callable[[], None]] = field(default_factory=list)

    def change(self, apply: Callable[[], None], undo: Callable[[], None]) -> None:
        apply()
        self.undos.append(undo)

    def rollback(self) -> None:
        while self.undos:
            self.undos.pop()()


class Ledger:
    def __init__(self, hub: Hub, ex: Exchange, *, truth: GroundTruth, faults: Faults, now: Callable[[], float],
                 initial_pol: float = 0.0):
        self.ex = ex
        self.truth = truth
        self.faults = faults
        self.now = now
        self.initial_pol = pol_wei(initial_pol)
        self.pol: dict[str, int] = {}
        self.nonces: dict[str, int] = {}
        self.operators: dict[str, set[str]] = {}             # CTF setApprovalForAll: owner -> operators
        self.allowances: dict[tuple[str, str], int] = {}     # pUSD approve: (owner, spender) -> amount
        self.deposit_wallets: dict[str, DepositWallet] = {}
        hub.subscribe(WALLET_CREATED, self._on_api_wallet)

    # ---- accounts ----------------------------------------------------------------------------------------
    def _on_api_wallet(self, w: Wallet) -> None:
        """A new API wallet: it starts with the scenario's pUSD and POL (ground truth `fund`, reason initial)."""
        self.pol[w.address] = self.pol.get(w.address, 0) + self.initial_pol
        self.truth.record("fund", wallet=w.address, pusd=round(w.balance, 6), pol_wei=str(self.initial_pol),
                          reason="initial")

    def fund(self, address: str, pusd: float = 0.0, pol: float = 0.0, owner: str | None = None,
             approve: tuple[str, ...] = ()) -> None:
        """Control: add pUSD / POL, register a deposit wallet's owner, approve CTF operators (ground truth `fund`)."""
        a = address.lower()
        if pusd or owner is not None:        # POL or approvals alone leave a future API wallet its initial pUSD
            self.ex.fund(a, pusd)
        self.pol[a] = self.pol.get(a, 0) + pol_wei(pol)
        if owner is not None:
            self.deposit_wallets.setdefault(a, DepositWallet(owner.lower())).owner = owner.lower()
        for operator in approve:
            self.operators.setdefault(a, set()).add(operator.lower())
        self.truth.record("fund", wallet=a, pusd=round(pusd, 6), pol_wei=str(pol_wei(pol)), reason="control",
                          owner=owner.lower() if owner else None, approved=[x.lower() for x in approve])

    def balance(self, address: str) -> int:
        return self.pol.get(address.lower(), 0)

    def nonce(self, address: str) -> int:
        return self.nonces.get(address.lower(), 0)

    def pusd_units(self, address: str) -> int:
        w = self.ex.wallets.get(address.lower())
        return units(w.balance) if w is not None and w.tracked else 0

    def token_units(self, address: str, token_id: int) -> int:
        w = self.ex.wallets.get(address.lower())
        return units(w.held(str(token_id))) if w is not None and w.tracked else 0

    def is_contract(self, address: str) -> bool:
        a = address.lower()
        return a in CONTRACTS or a in self.deposit_wallets

    def approved(self, owner: str, operator: str) -> bool:
        return operator.lower() in self.operators.get(owner.lower(), ())

    # ---- changes (each with its inverse) -------------------------------------------------------------------
    def move_pol(self, frame: Frame, src: str, dst: str, amount: int) -> None:
        def apply() -> None:
            self.pol[src] = self.pol.get(src, 0) - amount
            self.pol[dst] = self.pol.get(dst, 0) + amount

        def undo() -> None:
            self.pol[src] += amount
            self.pol[dst] -= amount
        frame.change(apply, undo)

    def charge_gas(self, frame: Frame, payer: str, amount: int) -> None:
        def apply() -> None:
            self.pol[payer] = self.pol.get(payer, 0) - amount

        def undo() -> None:
            self.pol[payer] += amount
        frame.change(apply, undo)

    def bump_nonce(self, frame: Frame, address: str) -> None:
        def apply() -> None:
            self.nonces[address] = self.nonces.get(address, 0) + 1

        def undo() -> None:
            self.nonces[address] -= 1
        frame.change(apply, undo)

    def bump_wallet_nonce(self, frame: Frame, dw: DepositWallet) -> None:
        def apply() -> None:
            dw.nonce += 1

        def undo() -> None:
            dw.nonce -= 1
        frame.change(apply, undo)

    # ---- calls ---------------------------------------------------------------------------------------------
    def call(self, frame: Frame, sender: str, to: str, data: bytes, value: int) -> bytes:
        """Run one call (a transaction's, a batch's, or eth_call's) in `frame`. Raises c.Revert; the caller rolls
        the frame back."""
        sender, to = sender.lower(), to.lower()
        if value:
            if self.is_contract(to):
                raise c.Revert()                                  # no simulated contract is payable
            if self.balance(sender) < value:
                raise c.Revert("insufficient balance for transfer")
            self.move_pol(frame, sender, to, value)
        if not self.is_contract(to):
            return b""                                            # an EOA: a plain transfer
        sel, args = data[:4].hex(), data[4:]
        try:
            out = self._dispatch(frame, sender, to, sel, args)
        except (ValueError, TypeError, OverflowError, DecodingError, EncodingError) as exc:   # the ABI decoder reverts
            raise c.Revert(f"polysim: bad calldata ({type(exc).__name__})") from None
        if out is None:
            raise c.Revert(f"polysim: {to} function 0x{sel} is not simulated")
        return out

    def _dispatch(self, frame: Frame, sender: str, to: str, sel: str, args: bytes) -> bytes | None:
        if to == c.PUSD:
            return self._pusd(frame, sender, sel, args)
        if to == c.CTF:
            return self._ctf(frame, sender, sel, args)
        if to in c.ADAPTERS:
            return self._adapter(frame, sender, to, sel, args)
        if to in self.deposit_wallets:
            dw = self.deposit_wallets[to]
            if sel == c.OWNER:
                frame.gas += c.EXEC_VIEW
                return encode(["address"], [dw.owner])
            if sel == c.NONCE:
                frame.gas += c.EXEC_VIEW
                return encode(["uint256"], [dw.nonce])
        return None

    def _pusd(self, frame: Frame, sender: str, sel: str, args: bytes) -> bytes | None:
        frame.gas += c.EXEC_VIEW
        if sel == c.BALANCE_OF:
            (owner,) = decode(["address"], args)
            return encode(["uint256"], [self.pusd_units(owner)])
        if sel == c.DECIMALS:
            return encode(["uint8"], [6])
        if sel == c.ALLOWANCE:
            owner, spender = decode(["address", "address"], args)
            return encode(["uint256"], [self.allowances.get((owner.lower(), spender.lower()), 0)])
        if sel == c.APPROVE:
            spender, amount = decode(["address", "uint256"], args)
            key = (sender, spender.lower())
            before = self.allowances.get(key)

            def apply() -> None:
                self.allowances[key] = amount

            def undo() -> None:
                if before is None:
                    self.allowances.pop(key, None)
                else:
                    self.allowances[key] = before
            frame.change(apply, undo)
            frame.gas += c.EXEC_APPROVE
            frame.logs.append(c.erc20_approval(c.PUSD, sender, spender, amount))
            return encode(["bool"], [True])
        return None

    def _ctf(self, frame: Frame, sender: str, sel: str, args: bytes) -> bytes | None:
        frame.gas += c.EXEC_VIEW
        if sel == c.BALANCE_OF_1155:
            owner, token = decode(["address", "uint256"], args)
            return encode(["uint256"], [self.token_units(owner, token)])
        if sel == c.BALANCE_OF_BATCH:
            owners, tokens = decode(["address[]", "uint256[]"], args)
            if len(owners) != len(tokens):
                raise c.Revert("ERC1155: owners and IDs must have same lengths")
            return encode(["uint256[]"], [[self.token_units(o, t) for o, t in zip(owners, tokens, strict=True)]])
        if sel == c.IS_APPROVED_FOR_ALL:
            owner, operator = decode(["address", "address"], args)
            return encode(["bool"], [self.approved(owner, operator)])
        if sel in (c.PAYOUT_DENOMINATOR, c.PAYOUT_NUMERATORS, c.OUTCOME_SLOT_COUNT):
            cid = decode(["bytes32"], args[:32])[0]
            m = self.ex.by_condition.get("0x" + cid.hex())
            if sel == c.OUTCOME_SLOT_COUNT:
                return encode(["uint256"], [2 if m else 0])
            if sel == c.PAYOUT_DENOMINATOR:
                return encode(["uint256"], [1 if m and m.winner is not None else 0])
            _, index = decode(["bytes32", "uint256"], args)
            return encode(["uint256"], [1 if m and m.winner == index else 0])
        if sel == c.SET_APPROVAL_FOR_ALL:
            operator, ok = decode(["address", "bool"], args)
            operator = operator.lower()
            had = self.approved(sender, operator)

            def apply() -> None:
                (self.operators.setdefault(sender, set()).add if ok else
                 self.operators.setdefault(sender, set()).discard)(operator)

            def undo() -> None:
                (self.operators[sender].add if had else self.operators[sender].discard)(operator)
            frame.change(apply, undo)
            frame.gas += c.EXEC_APPROVE
            frame.logs.append(c.approval_for_all(sender, operator, ok))
            return b""
        if sel == c.REDEEM_POSITIONS:
            collateral, _, cid, _ = decode(["address", "bytes32", "bytes32", "uint256[]"], args)
            return self._ctf_redeem(frame, sender, collateral.lower(), cid)
        return None

    def _ctf_redeem(self, frame: Frame, sender: str, collateral: str, cid: bytes) -> bytes:
        """The CTF itself, called directly. With any collateral but USDC.e its position ids are ones nobody holds:
        it burns nothing, pays nothing and succeeds (the trap of redeeming V2 tokens with pUSD as collateral)."""
        m = self.ex.by_condition.get("0x" + cid.hex())
        if m is None or m.winner is None:
            raise c.Revert(c.ERR_NOT_RESOLVED)
        if collateral == c.USDCE:
            raise c.Revert("polysim: USDC.e payouts are not simulated; redeem through the collateral adapter")
        frame.gas += c.EXEC_APPROVE
        frame.logs.append(c.payout_redemption(sender, collateral, cid, 0))
        return b""

    def _adapter(self, frame: Frame, sender: str, adapter: str, sel: str, args: bytes) -> bytes | None:
        if sel == c.PAUSED:
            frame.gas += c.EXEC_VIEW
            return encode(["bool"], [self.paused()])
        if sel not in (c.REDEEM_POSITIONS, c.MERGE_POSITIONS):
            return None
        if self.paused():
            frame.gas += c.EXEC_REVERT
            raise c.Revert(data="0x" + c.ONLY_UNPAUSED)
        if sel == c.REDEEM_POSITIONS:
            _, _, cid, _ = decode(["address", "bytes32", "bytes32", "uint256[]"], args)
            self.redeem(frame, sender, cid, operator=adapter, via_adapter=adapter)
        else:
            _, _, cid, _, amount = decode(["address", "bytes32", "bytes32", "uint256[]", "uint256"], args)
            self.merge(frame, sender, adapter, cid, amount)
        return b""

    def paused(self) -> bool:
        return self.faults.window("adapter_paused", self.now()) is not None

    def _market_for(self, adapter: str | None, cid: bytes) -> SimMarket | None:
        """The market whose tokens this adapter's position ids name: the standard adapter's ids are those of
        standard markets, the neg-risk adapter's those of neg-risk ones; any other pairing names tokens nobody
        holds."""
        m = self.ex.by_condition.get("0x" + cid.hex())
        if m is not None and adapter is not None and c.ADAPTERS[adapter] != m.neg_risk:
            return None
        return m

    def redeem(self, frame: Frame, holder: str, cid: bytes, *, operator: str, via_adapter: str | None) -> None:
        """The adapter's (or the auto-redeem operator's) redemption for `holder`: pull both balances (needs the
        holder's CTF approval of the operator), redeem on the CTF (needs the payout reported), pay pUSD."""
        m = self._market_for(via_adapter, cid)
        resolved = self.ex.by_condition.get("0x" + cid.hex())
        ids = [int(t) for t in resolved.token_ids] if resolved else [0, 0]
        amounts = [self.token_units(holder, t) for t in ids] if m else [0, 0]
        if not self.approved(holder, operator):
            frame.gas += c.EXEC_REVERT
            raise c.Revert(c.ERR_NOT_APPROVED)
        if resolved is None or resolved.winner is None:
            frame.gas += c.EXEC_REVERT
            raise c.Revert(c.ERR_NOT_RESOLVED)
        done = Settled()
        if m is not None and any(amounts):
            done = self.ex.redeem(holder, m)
            frame.undos.append(lambda: self.ex.undo(holder, m, done))
        payout = units(done.payout)
        frame.gas += c.EXEC_REDEEM
        frame.logs.append(c.transfer_batch(operator, holder, operator, ids, amounts))
        for token, amount in zip(ids, amounts, strict=True):
            if amount:
                frame.logs.append(c.transfer_single(operator, operator, c.ZERO_ADDRESS, token, amount))
        if payout:
            frame.logs.append(c.erc20_transfer(c.USDCE, c.CTF, operator, payout))
        frame.logs += [c.payout_redemption(operator, c.USDCE, cid, payout),
                       c.erc20_transfer(c.USDCE, operator, c.PUSD, payout),
                       c.erc20_transfer(c.PUSD, c.ZERO_ADDRESS, holder, payout),
                       c.wrapped(operator, c.USDCE, holder, payout)]
        frame.records.append(("redemption", {
            "wallet": holder, "condition_id": "0x" + cid.hex(), "slug": resolved.slug,
            "winner": resolved.outcomes[resolved.winner], "operator": operator,
            "burned": {str(t): a for t, a in zip(ids, amounts, strict=True) if a}, "payout_units": payout,
            "payout": round(payout / UNIT, 6)}))

    def merge(self, frame: Frame, holder: str, adapter: str, cid: bytes, amount: int) -> None:
        m = self._market_for(adapter, cid)
        known = self.ex.by_condition.get("0x" + cid.hex())
        ids = [int(t) for t in known.token_ids] if known else [0, 0]
        if not self.approved(holder, adapter):
            frame.gas += c.EXEC_REVERT
            raise c.Revert(c.ERR_NOT_APPROVED)
        held = [self.token_units(holder, t) if m else 0 for t in ids]
        if amount and min(held) < amount:
            frame.gas += c.EXEC_REVERT
            raise c.Revert(c.ERR_INSUFFICIENT)
        if known is None:
            frame.gas += c.EXEC_REVERT
            raise c.Revert(c.ERR_NOT_PREPARED)
        if m is not None and amount:
            done = self.ex.merge(holder, m, amount / UNIT)
            frame.undos.append(lambda: self.ex.undo(holder, m, done))
        frame.gas += c.EXEC_MERGE
        frame.logs += [c.transfer_batch(adapter, holder, adapter, ids, [amount, amount]),
                       c.transfer_batch(adapter, adapter, c.ZERO_ADDRESS, ids, [amount, amount]),
                       c.erc20_transfer(c.USDCE, c.CTF, adapter, amount),
                       c.positions_merge(adapter, c.USDCE, cid, amount),
                       c.erc20_transfer(c.USDCE, adapter, c.PUSD, amount),
                       c.erc20_transfer(c.PUSD, c.ZERO_ADDRESS, holder, amount),
                       c.wrapped(adapter, c.USDCE, holder, amount)]
        frame.records.append(("merge", {
            "wallet": holder, "condition_id": "0x" + cid.hex(), "slug": known.slug,
            "amount_units": amount, "amount": round(amount / UNIT, 6), "payout": round(amount / UNIT, 6)}))

    def holders_to_auto_redeem(self, m: SimMarket) -> list[str]:
        """Wallets that approved the venue's auto-redeem operator and still hold a winning token of `m`."""
        assert m.winner is not None
        win = m.token_ids[m.winner]
        return sorted(a for a, ops in self.operators.items()
                      if c.AUTO_REDEEM_OPERATOR in ops and self.ex.wallets.get(a) is not None
                      and self.ex.wallets[a].held(win) > EPS)
