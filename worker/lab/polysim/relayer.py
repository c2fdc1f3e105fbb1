"""Polymarket's relayer (`https://relayer-v2.polymarket.com`) for deposit wallets (signature type 3): gas-free
batches of calls signed by the wallet's owner, executed on chain by the relayer's own account.

Routes (docs relayer OpenAPI; the unified SDK's relayer actions; NautilusTrader's relayer client):
  POST /submit                              {type: "WALLET", from: owner, to: factory, nonce, signature, metadata,
                                             depositWalletParams: {depositWallet, deadline, calls: [{target, value,
                                             data}]}} -> {transactionID, state: "STATE_NEW"}
  GET  /transaction?id=                     [{transactionID, transactionHash, from, to, proxyAddress, data, nonce,
                                              value, signature, state, type, owner, metadata, createdAt, updatedAt}]
  GET  /v1/account/transactions/{id}        {transaction_id, transaction_hash, state, error_msg, ...}
  GET  /transactions                        the caller's transactions (auth), newest first
  GET  /v1/account/transactions/params, /relay-payload   ?address=&type= -> {address: relayer, nonce}
  GET  /nonce?address=&type=                {nonce}
  GET  /deployed?address=&type=             {deployed}
Auth (submit, /transactions): `RELAYER_API_KEY` + `RELAYER_API_KEY_ADDRESS`, or the `POLY_BUILDER_*` headers; keys
themselves are not checked (they are created with Gamma auth, not simulated).

The batch is EIP-712 `Batch(address wallet,uint256 nonce,uint256 deadline,Call[] calls)` /
`Call(address target,uint256 value,bytes data)` in the domain {name "DepositWallet", version "1", chainId, the
wallet}, signed by the wallet's owner (65-byte signature; session signers are not simulated). Checks, in order:
the same signed request again -> the same transactionID and its state (never applied twice); the wallet is deployed;
the signature recovers its owner; the deadline has not passed and is at least `relayer_min_deadline_s` away
(`deadline too soon`); no other batch of the wallet is in flight (`wallet has in-flight action`); the nonce is the
wallet's (`batch nonce N does not match on-chain nonce M`). Errors are HTTP 400 `{"error": "..."}`.

States: STATE_NEW (accepted) -> STATE_EXECUTED (broadcast `relayer_delay_s` later: the transaction hash appears) ->
STATE_MINED (in a block) -> STATE_CONFIRMED (`relayer_confirmations` blocks deep), or STATE_FAILED (the batch
reverted on chain: the whole batch is undone, the relayer pays the gas) or STATE_INVALID (the deadline passed before
the relayer could broadcast). The wallet pays no gas.
"""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data

from polysim import contracts as c
from polysim import crypto
from polysim.events import Hub
from polysim.faults import Faults
from polysim.ledger import DepositWallet, Frame, Ledger
from polysim.node import RELAYER_EOA, Node, UserTx
from polysim.truth import GroundTruth

NEW, EXECUTED, MINED, CONFIRMED, INVALID, FAILED = ("STATE_NEW", "STATE_EXECUTED", "STATE_MINED", "STATE_CONFIRMED",
                                                    "STATE_INVALID", "STATE_FAILED")
TERMINAL = (CONFIRMED, INVALID, FAILED)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BATCH_GAS = 2_000_000
_BATCH_TYPES = {
    "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                     {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
    "Batch": [{"name": "wallet", "type": "address"}, {"name": "nonce", "type": "uint256"},
              {"name": "deadline", "type": "uint256"}, {"name": "calls", "type": "Call[]"}],
    "Call": [{"name": "target", "type": "address"}, {"name": "value", "type": "uint256"},
             {"name": "data", "type": "bytes"}],
}


class Refused(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(eq=False)
class Batch:
    id: str
    owner: str
    wallet: str
    nonce: int
    deadline: int
    calls: list[tuple[str, int, bytes]]
    signature: str
    metadata: str
    api_key: str
    created: float
    updated: float
    tx: UserTx | None = None
    invalid: str = ""
    calldata: bytes = field(default=b"", repr=False)


def batch_signer(wallet: str, nonce: int, deadline: int, calls: list[tuple[str, int, bytes]], signature: str) -> str:
    """The address whose key signed this deposit-wallet batch (lowercase)."""
    typed = {"domain": {"name": "DepositWallet", "version": "1", "chainId": crypto.CHAIN_ID,
                        "verifyingContract": wallet},
             "types": _BATCH_TYPES, "primaryType": "Batch",
             "message": {"wallet": wallet, "nonce": nonce, "deadline": deadline,
                         "calls": [{"target": t, "value": v, "data": d} for t, v, d in calls]}}
    return str(Account.recover_message(encode_typed_data(full_message=typed), signature=signature)).lower()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Relayer:
    def __init__(self, node: Node, ledger: Ledger, *, head: Callable[[], int], now: Callable[[], float],
                 faults: Faults, truth: GroundTruth, delay_s: float = 1.0, confirmations: int = 2,
                 min_deadline_s: float = 60.0):
        self.node = node
        self.ledger = ledger
        self.head = head
        self.now = now
        self.faults = faults
        self.truth = truth
        self.delay_s = delay_s
        self.confirmations = confirmations
        self.min_deadline_s = min_deadline_s
        self.batches: dict[str, Batch] = {}
        self.by_signature: dict[str, Batch] = {}
        self.counters = {"submitted": 0, "resent": 0, "refused": 0, "faults": 0}

    # ---- state ---------------------------------------------------------------------------------------------
    def state(self, b: Batch) -> str:
        if b.invalid:
            return INVALID
        if b.tx is None:
            return NEW
        if b.tx.status is None:
            return EXECUTED
        if b.tx.status == 0:
            return FAILED
        depth = self.head() - (b.tx.block_number or 0) + 1
        return CONFIRMED if depth >= self.confirmations else MINED

    def error(self, b: Batch) -> str:
        return b.invalid or (b.tx.revert if b.tx is not None and b.tx.status == 0 else "")

    def in_flight(self, wallet: str) -> Batch | None:
        return next((b for b in self.batches.values() if b.wallet == wallet and self.state(b) not in TERMINAL
                     and self.state(b) != MINED), None)

    def wallet_of(self, owner: str) -> tuple[str, DepositWallet] | None:
        """The deposit wallet an owner signs for (the first registered)."""
        return next(((a, dw) for a, dw in self.ledger.deposit_wallets.items() if dw.owner == owner.lower()), None)

    # ---- submit --------------------------------------------------------------------------------------------
    def submit(self, doc: object, api_key: str) -> tuple[Batch, bool]:
        """Check and accept a signed batch -> (batch, already known). Raises Refused."""
        if not isinstance(doc, dict):
            raise Refused("invalid request body")
        kind = doc.get("type")
        if kind != "WALLET":
            raise Refused(f"transaction type {kind!r} is not supported here: only WALLET batches are simulated")
        sig = doc.get("signature")
        if not isinstance(sig, str) or not sig.startswith("0x"):
            raise Refused("invalid signature")
        known = self.by_signature.get(sig.lower())
        if known is not None:
            self.counters["resent"] += 1
            self.truth.record("relayer", event="resent", relayer_id=known.id, wallet=known.wallet,
                              nonce=known.nonce, state=self.state(known))
            return known, True
        params = doc.get("depositWalletParams")
        try:
            if not isinstance(params, dict):
                raise TypeError
            owner = str(doc["from"]).lower()
            wallet = str(params["depositWallet"]).lower()
            nonce, deadline = int(str(doc["nonce"])), int(str(params["deadline"]))
            calls = [(str(x["target"]).lower(), int(str(x.get("value") or "0")), bytes.fromhex(str(x["data"])[2:]))
                     for x in params["calls"]]
            if not calls or any(len(t) != 42 for t, _, _ in calls) or nonce < 0 or deadline < 0:
                raise ValueError
        except (KeyError, TypeError, ValueError, AttributeError):
            raise Refused("invalid depositWalletParams: depositWallet, deadline and a non-empty calls list of "
                          "{target, value, data} are required") from None
        dw = self.ledger.deposit_wallets.get(wallet)
        if dw is None:
            raise Refused(f"deposit wallet {wallet} is not deployed")
        signer = ""
        if len(sig) == 132:                      # 65 bytes: the owner's own signature
            try:
                signer = batch_signer(wallet, nonce, deadline, calls, sig)
            except Exception:  # eth-account raises assorted errors for a malformed signature
                signer = ""
        if signer != dw.owner or owner != dw.owner:
            raise Refused("invalid signature")
        now = self.now()
        if deadline <= now:
            raise Refused(f"deadline expired: {deadline}")
        if deadline < now + self.min_deadline_s:
            raise Refused(f"deadline too soon: {deadline}")
        if self.in_flight(wallet) is not None:
            raise Refused("wallet has in-flight action")
        if nonce != dw.nonce:
            raise Refused(f"batch nonce {nonce} does not match on-chain nonce {dw.nonce}")
        b = Batch(str(uuid.uuid4()), owner, wallet, nonce, deadline, calls, sig, str(doc.get("metadata") or ""),
                  api_key, now, now)
        b.calldata = bytes.fromhex(c.EXECUTE_BATCH) + encode(
            ["address", "uint256", "uint256", "(address,uint256,bytes)[]", "bytes"],
            [wallet, nonce, deadline, calls, bytes.fromhex(sig[2:])])
        self.batches[b.id] = b
        self.by_signature[sig.lower()] = b
        self.counters["submitted"] += 1
        stall = self.faults.take("relayer_stall")
        delay = float(stall.get("seconds", 30)) if stall is not None else self.delay_s
        Hub.later(delay, lambda: self._broadcast(b))
        self.truth.record("relayer", event="accepted", relayer_id=b.id, wallet=wallet, owner=owner, nonce=nonce,
                          deadline=deadline, calls=[{"target": t, "method": "0x" + d[:4].hex()} for t, _, d in calls])
        return b, False

    def _broadcast(self, b: Batch) -> None:
        """Send the batch on chain from the relayer's account (it pays the gas)."""
        b.updated = self.now()
        if b.deadline <= self.now():
            b.invalid = "deadline expired before the relayer could send the batch"
            self.truth.record("relayer", event="invalid", relayer_id=b.id, wallet=b.wallet, error=b.invalid)
            return
        b.tx = self.node.system_tx(RELAYER_EOA, c.DEPOSIT_WALLET_FACTORY, b.calldata, BATCH_GAS,
                                   lambda frame: self._execute(frame, b),
                                   tag={"via": "relayer", "relayer_id": b.id, "wallet": b.wallet},
                                   on_mined=lambda tx: setattr(b, "updated", self.now()))

    def _execute(self, frame: Frame, b: Batch) -> None:
        """The deposit wallet runs its batch: all calls or none, its nonce used once."""
        dw = self.ledger.deposit_wallets[b.wallet]
        frame.gas += c.EXEC_BATCH
        if self.now() > b.deadline:
            raise c.Revert("DepositWallet: expired")
        if dw.nonce != b.nonce:
            raise c.Revert("DepositWallet: invalid nonce")
        self.ledger.bump_wallet_nonce(frame, dw)
        for target, value, data in b.calls:
            self.ledger.call(frame, b.wallet, target, data, value)

    # ---- views ---------------------------------------------------------------------------------------------
    def json(self, b: Batch) -> dict[str, Any]:
        """GET /transaction's row (docs example)."""
        tx_hash = b.tx.tx_hash if b.tx is not None else ""
        return {"transactionID": b.id, "transactionHash": tx_hash, "from": b.owner, "to": c.DEPOSIT_WALLET_FACTORY,
                "proxyAddress": b.wallet, "data": "0x" + b.calldata.hex(), "nonce": str(b.nonce), "value": "",
                "signature": b.signature, "state": self.state(b), "type": "WALLET", "owner": b.owner,
                "metadata": b.metadata, "createdAt": _iso(b.created), "updatedAt": _iso(b.updated)}

    def json_v1(self, b: Batch) -> dict[str, Any]:
        """GET /v1/account/transactions/{id} (the unified SDK's GaslessTransaction: snake_case)."""
        return {"transaction_id": b.id, "transaction_hash": b.tx.tx_hash if b.tx is not None else None,
                "state": self.state(b), "error_msg": self.error(b) or None, "type": "WALLET", "from": b.owner,
                "to": c.DEPOSIT_WALLET_FACTORY, "proxy_address": b.wallet, "nonce": str(b.nonce),
                "created_at": _iso(b.created), "updated_at": _iso(b.updated)}

    def nonce_for(self, q: Mapping[str, str]) -> str:
        address, kind = q.get("address", ""), q.get("type", "")
        if len(address) != 42 or not address.startswith("0x"):
            raise Refused("address is required")
        if kind not in ("WALLET", "PROXY", "SAFE"):
            raise Refused("type must be one of WALLET, PROXY, SAFE")
        found = self.wallet_of(address) if kind == "WALLET" else None
        return str(found[1].nonce if found else 0)

    # ---- HTTP ----------------------------------------------------------------------------------------------
    @staticmethod
    def _auth(request: web.Request) -> str | None:
        h = request.headers
        if h.get("RELAYER_API_KEY") and h.get("RELAYER_API_KEY_ADDRESS"):
            return f"relayer:{h['RELAYER_API_KEY']}:{h['RELAYER_API_KEY_ADDRESS'].lower()}"
        if all(h.get(k) for k in ("POLY_BUILDER_API_KEY", "POLY_BUILDER_PASSPHRASE", "POLY_BUILDER_SIGNATURE",
                                  "POLY_BUILDER_TIMESTAMP")):
            return f"builder:{h['POLY_BUILDER_API_KEY']}"
        return None

    @web.middleware
    async def edge(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.faults.take("relayer_5xx") is not None:
            self.counters["faults"] += 1
            return web.Response(status=503, content_type="text/html",
                                text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>")
        try:
            return await handler(request)
        except Refused as r:
            self.counters["refused"] += 1
            return web.json_response({"error": r.message}, status=r.status)

    async def post_submit(self, request: web.Request) -> web.Response:
        key = self._auth(request)
        if key is None:
            raise Refused("invalid authorization: RELAYER_API_KEY and RELAYER_API_KEY_ADDRESS (or builder "
                          "headers) are required", 401)
        try:
            doc = await request.json()
        except (ValueError, RecursionError):
            raise Refused("invalid request body: not JSON") from None
        try:
            b, _ = self.submit(doc, key)
        except Refused as r:
            self.truth.record("relayer", event="refused", error=r.message,
                              wallet=str((doc.get("depositWalletParams") or {}).get("depositWallet", "")).lower()
                              if isinstance(doc, dict) and isinstance(doc.get("depositWalletParams"), dict) else "")
            raise
        if self.faults.take("relayer_lost_answer") is not None:
            self.counters["faults"] += 1
            return web.Response(status=502, content_type="text/html",
                                text="<html><body><h1>502 Bad Gateway</h1></body></html>")
        doc_out = {"transactionID": b.id, "state": self.state(b)}
        if b.tx is not None:
            doc_out["transactionHash"] = b.tx.tx_hash
        return web.json_response(doc_out)

    async def get_transaction(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.query.get("id", ""))
        return web.json_response([self.json(b)] if b is not None else [])

    async def get_transaction_v1(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            raise Refused("transaction not found", 404)
        return web.json_response(self.json_v1(b))

    async def get_transactions(self, request: web.Request) -> web.Response:
        key = self._auth(request)
        if key is None:
            raise Refused("invalid authorization", 401)
        mine = [b for b in self.batches.values() if b.api_key == key]
        return web.json_response([self.json(b) for b in sorted(mine, key=lambda b: b.created, reverse=True)])

    async def get_params(self, request: web.Request) -> web.Response:
        return web.json_response({"address": RELAYER_EOA, "nonce": self.nonce_for(request.query)})

    async def get_nonce(self, request: web.Request) -> web.Response:
        return web.json_response({"nonce": self.nonce_for(request.query)})

    async def get_deployed(self, request: web.Request) -> web.Response:
        address = request.query.get("address", "").lower()
        if len(address) != 42:
            raise Refused("address is required")
        return web.json_response({"deployed": address in self.ledger.deposit_wallets})


def relayer_app(relayer: Relayer) -> web.Application:
    app = web.Application(middlewares=[relayer.edge], client_max_size=1 << 20)
    app.router.add_post("/submit", relayer.post_submit)
    app.router.add_get("/transaction", relayer.get_transaction)
    app.router.add_get("/transactions", relayer.get_transactions)
    app.router.add_get("/v1/account/transactions/params", relayer.get_params)
    app.router.add_get("/v1/account/transactions/{id}", relayer.get_transaction_v1)
    app.router.add_get("/relay-payload", relayer.get_params)
    app.router.add_get("/nonce", relayer.get_nonce)
    app.router.add_get("/deployed", relayer.get_deployed)
    return app
