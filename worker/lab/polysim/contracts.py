"""The Polygon contracts a wallet touches after trading, as their ABIs and events describe them (pure data).

Addresses are Polymarket's production ones (the unified SDK's environment, docs "Contracts"). Amounts on chain are
integers of 6 decimals for pUSD and outcome tokens, wei (18 decimals) for POL. What the simulator does with a call
is in ledger.py; this module only names and encodes.

Collateral adapter (ctf-exchange-v2 `CtfCollateralAdapter`): `redeemPositions(address, bytes32, bytes32 conditionId,
uint256[])` and `mergePositions(address, bytes32, bytes32 conditionId, uint256[], uint256 amount)` keep the CTF's
signatures but read only `conditionId` (and `amount`); redeem pulls the caller's whole balance of both outcomes.
The events of one adapter redemption, in order: CTF `TransferBatch` (wallet -> adapter), CTF `TransferSingle` burn
per outcome held, USDC.e `Transfer` (CTF -> adapter, the payout), CTF `PayoutRedemption` (redeemer = the adapter),
USDC.e `Transfer` (adapter -> pUSD), pUSD `Transfer` (mint to the wallet), pUSD `Wrapped`. A merge has CTF
`TransferBatch` (wallet -> adapter), `TransferBatch` (burn), USDC.e `Transfer`, `PositionsMerge`, then the same
wrapping events. (The wrap's USDC.e transfer into pUSD's vault is not emitted: the vault address is not known.)
"""
from __future__ import annotations

from dataclasses import dataclass

from eth_abi import encode
from eth_utils import keccak

# Polygon production addresses (lowercase: every comparison is on lowercase hex).
PUSD = "0xc011a7e12a19f7b1f670d46f03b03f3342e82dfb"
USDCE = "0x2791bca1f2de4661ed88a30c99a7a9449aa84174"
CTF = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"
CTF_ADAPTER = "0xada100db00ca00073811820692005400218fce1f"
NEG_RISK_CTF_ADAPTER = "0xada2005600dec949baf300f4c6120000bdb6eaab"
ADAPTERS = {CTF_ADAPTER: False, NEG_RISK_CTF_ADAPTER: True}        # adapter -> serves neg-risk markets
DEPOSIT_WALLET_FACTORY = "0x00000000000fb5c9adea0298d729a0cb3823cc07"
AUTO_REDEEM_OPERATOR = "0xa1200000d0002264c9a1698e001292d00e1b00af"
PROTOCOL_V2_ROUTER = "0x12121212006e4cd160d18e3f00711da5c3372600"
ZERO_ADDRESS = "0x" + "00" * 20
ZERO32 = b"\x00" * 32
BINARY_SETS = [1, 2]


def selector(signature: str) -> str:
    return keccak(text=signature)[:4].hex()


def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


# Functions (selector hex without 0x).
BALANCE_OF = selector("balanceOf(address)")
DECIMALS = selector("decimals()")
ALLOWANCE = selector("allowance(address,address)")
APPROVE = selector("approve(address,uint256)")
BALANCE_OF_1155 = selector("balanceOf(address,uint256)")
BALANCE_OF_BATCH = selector("balanceOfBatch(address[],uint256[])")
IS_APPROVED_FOR_ALL = selector("isApprovedForAll(address,address)")
SET_APPROVAL_FOR_ALL = selector("setApprovalForAll(address,bool)")
PAYOUT_DENOMINATOR = selector("payoutDenominator(bytes32)")
PAYOUT_NUMERATORS = selector("payoutNumerators(bytes32,uint256)")
OUTCOME_SLOT_COUNT = selector("getOutcomeSlotCount(bytes32)")
REDEEM_POSITIONS = selector("redeemPositions(address,bytes32,bytes32,uint256[])")
MERGE_POSITIONS = selector("mergePositions(address,bytes32,bytes32,uint256[],uint256)")
PAUSED = selector("paused(address)")
OWNER = selector("owner()")
NONCE = selector("nonce()")
# The operator's and the relayer's own transactions: their calldata is not published; these are polysim's.
AUTO_REDEEM = selector("redeemFor(address,bytes32)")
EXECUTE_BATCH = selector("executeBatch(address,uint256,uint256,(address,uint256,bytes)[],bytes)")

# Events.
TRANSFER = topic("Transfer(address,address,uint256)")
APPROVAL = topic("Approval(address,address,uint256)")
TRANSFER_SINGLE = topic("TransferSingle(address,address,address,uint256,uint256)")
TRANSFER_BATCH = topic("TransferBatch(address,address,address,uint256[],uint256[])")
APPROVAL_FOR_ALL = topic("ApprovalForAll(address,address,bool)")
PAYOUT_REDEMPTION = topic("PayoutRedemption(address,address,bytes32,bytes32,uint256[],uint256)")
POSITIONS_MERGE = topic("PositionsMerge(address,address,bytes32,bytes32,uint256[],uint256)")
WRAPPED = topic("Wrapped(address,address,address,uint256)")

# Reverts, as the contracts raise them.
ERR_NOT_RESOLVED = "result for condition not received yet"               # Gnosis CTF redeemPositions
ERR_NOT_PREPARED = "condition not prepared yet"                          # Gnosis CTF mergePositions
ERR_NOT_APPROVED = "ERC1155: need operator approval for 3rd party transfers."
ERR_INSUFFICIENT = "SafeMath: subtraction overflow"                      # ERC1155 balance below the amount
ONLY_UNPAUSED = selector("OnlyUnpaused()")                               # the adapters' Pausable custom error

# Execution gas beyond the intrinsic 21,000 + calldata (simulator figures: the order of magnitude of these calls on
# Polygon, not measured): what eth_estimateGas adds and what a mined call uses.
EXEC_APPROVE = 25_000
EXEC_REDEEM = 160_000
EXEC_MERGE = 140_000
EXEC_REVERT = 15_000               # a call that reverts in its checks, before the transfers
EXEC_BATCH = 25_000                # a deposit wallet's batch: signature check, nonce, the loop
EXEC_VIEW = 3_000


class Revert(Exception):
    """A call reverts. `data` is the revert data the node returns (Error(string) or a custom error)."""

    def __init__(self, reason: str = "", data: str | None = None):
        super().__init__(reason or "execution reverted")
        self.reason = reason
        self.data = data if data is not None else error_data(reason) if reason else "0x"

    @property
    def message(self) -> str:
        return f"execution reverted: {self.reason}" if self.reason else "execution reverted"


def error_data(reason: str) -> str:
    """Solidity's Error(string) revert data."""
    return "0x08c379a0" + encode(["string"], [reason]).hex()


def word_address(address: str) -> str:
    return "0x" + address.lower()[2:].rjust(64, "0")


def word_bytes32(value: bytes) -> str:
    return "0x" + value.rjust(32, b"\x00").hex()


@dataclass(frozen=True)
class Log:
    """An event without its block fields."""
    address: str
    topics: tuple[str, ...]
    data: str

    def json(self) -> dict[str, object]:
        return {"address": self.address, "topics": list(self.topics), "data": self.data}


def erc20_transfer(token: str, src: str, dst: str, amount: int) -> Log:
    return Log(token, (TRANSFER, word_address(src), word_address(dst)), "0x" + encode(["uint256"], [amount]).hex())


def erc20_approval(token: str, owner: str, spender: str, amount: int) -> Log:
    return Log(token, (APPROVAL, word_address(owner), word_address(spender)),
               "0x" + encode(["uint256"], [amount]).hex())


def transfer_single(operator: str, src: str, dst: str, token_id: int, amount: int) -> Log:
    return Log(CTF, (TRANSFER_SINGLE, word_address(operator), word_address(src), word_address(dst)),
               "0x" + encode(["uint256", "uint256"], [token_id, amount]).hex())


def transfer_batch(operator: str, src: str, dst: str, ids: list[int], amounts: list[int]) -> Log:
    return Log(CTF, (TRANSFER_BATCH, word_address(operator), word_address(src), word_address(dst)),
               "0x" + encode(["uint256[]", "uint256[]"], [ids, amounts]).hex())


def approval_for_all(owner: str, operator: str, approved: bool) -> Log:
    return Log(CTF, (APPROVAL_FOR_ALL, word_address(owner), word_address(operator)),
               "0x" + encode(["bool"], [approved]).hex())


def payout_redemption(redeemer: str, collateral: str, condition_id: bytes, payout: int) -> Log:
    return Log(CTF, (PAYOUT_REDEMPTION, word_address(redeemer), word_address(collateral), word_bytes32(ZERO32)),
               "0x" + encode(["bytes32", "uint256[]", "uint256"], [condition_id, BINARY_SETS, payout]).hex())


def positions_merge(stakeholder: str, collateral: str, condition_id: bytes, amount: int) -> Log:
    return Log(CTF, (POSITIONS_MERGE, word_address(stakeholder), word_bytes32(ZERO32), word_bytes32(condition_id)),
               "0x" + encode(["address", "uint256[]", "uint256"], [collateral, BINARY_SETS, amount]).hex())


def wrapped(caller: str, asset: str, to: str, amount: int) -> Log:
    return Log(PUSD, (WRAPPED, word_address(caller), word_address(asset), word_address(to)),
               "0x" + encode(["uint256"], [amount]).hex())
