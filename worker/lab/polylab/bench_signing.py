"""Signing one V2 order: the copier's path (copier.signing, py-clob-client-v2's builder + one digest + coincurve)
against the unified official SDK (polymarket-client). `make bench-signing` runs both; each prints one JSON line.

    python -m polylab.bench_signing --path current                 (the project's venv: the copier's dependencies)
    python -P worker/lab/polylab/bench_signing.py --path unified \\
        --polysim-python .venv/bin/python                          (the conformance venv: polymarket-client)

The same order every time: BUY 10 shares capped at 0.55 on a 0.01-tick CTF Exchange V2 market, EOA signer. The
unified SDK is measured twice: `create_limit_order` (what a caller of the SDK does; its market metadata cache warm)
and its signing step alone (unsigned order -> typed data -> eth-account signature -> signed order), so the cost of
its order preparation is visible separately. Run as a file, this module imports nothing from the copier package
(whose import patches the stdlib with gevent); -P keeps the copier directory (its types.py) off sys.path.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

KEY = "0x" + "42" * 32
PRICE, SIZE = 0.55, 10.0


def _measure(fn: Callable[[], object], n: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    samples.sort()
    return {"n": n, "median_ms": round(statistics.median(samples), 4),
            "p90_ms": round(samples[int(0.9 * (n - 1))], 4), "min_ms": round(samples[0], 4)}


def bench_current(n: int, warmup: int) -> dict:
    from copier.signing import OrderSigner
    from copier.types import MarketMeta, OrderIntent, Side

    token = str(int.from_bytes(bytes.fromhex("ab" * 30), "big"))
    market = MarketMeta(condition_id="0x" + "cd" * 32, token_ids=(token, token + "1"), outcomes=("Up", "Down"),
                        tick_size=0.01, min_size=5.0, neg_risk=False, end_ts=time.time() + 900)
    intent = OrderIntent(intent_id="bench", condition_id=market.condition_id, asset=token, outcome="Up",
                         side=Side.BUY, size=SIZE, price_cap=PRICE, notional=SIZE * PRICE, source_price=PRICE,
                         fill_keys=("k",), kind="leading", decided_at=time.time(), opening=True)
    signer = OrderSigner(KEY, 137, 0, "", "bench-api-key")
    return {"path": "current (copier.signing: py-clob-client-v2 builder + coincurve)",
            "sign_and_serialize": _measure(lambda: signer.sign(intent, market), n, warmup)}


def bench_unified(n: int, warmup: int, polysim_python: str) -> dict:
    import dataclasses

    import httpx
    from eth_account import Account
    from polymarket import SecureClient
    from polymarket._internal.environment import PRODUCTION_CONFIG, create_environment

    proc = subprocess.Popen([polysim_python, "-m", "polysim.cli", "serve", "--speed", "1", "--seed", "3",
                             "--no-background"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None     # stdout=PIPE
    try:
        urls = json.loads(proc.stdout.readline())
        env = create_environment(name="polysim", config=dataclasses.replace(
            PRODUCTION_CONFIG, clob_url=urls["clob"], gamma_url=urls["gamma"], data_url=urls["data_api"]))
        client = SecureClient.create(private_key=KEY, wallet=Account.from_key(KEY).address, environment=env)
        market = httpx.get(f"{urls['gamma']}/markets", params={"closed": "false"}, timeout=5).json()[0]
        token = json.loads(market["clobTokenIds"])[0]

        def full():
            return client.create_limit_order(asset_id=token, price=str(PRICE), size=str(SIZE), side="BUY")

        full()                                      # fills the SDK's market metadata cache (tick, neg risk, fees)
        from polymarket._internal.actions.orders.limit import (
            prepare_limit_order_draft_sync,
            validate_limit_order_params,
        )
        draft = prepare_limit_order_draft_sync(client._ctx, validate_limit_order_params(
            asset_id=token, token_id=None, price=str(PRICE), size=str(SIZE), side="BUY", post_only=False,
            expiration=None, builder_code=None))
        result = {"path": "unified (polymarket-client)",
                  "create_limit_order": _measure(full, n, warmup),
                  "sign_step_only": _measure(lambda: client._sign_order(draft, post_only=False), n, warmup)}
        client.close()
        return result
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_signing")
    p.add_argument("--path", choices=("current", "unified"), required=True)
    p.add_argument("-n", type=int, default=2000, help="timed signatures")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--polysim-python", default=sys.executable, help="the interpreter that runs polysim (unified)")
    args = p.parse_args(argv)
    out = bench_current(args.n, args.warmup) if args.path == "current" else \
        bench_unified(args.n, args.warmup, args.polysim_python)
    import platform
    print(json.dumps({**out, "python": platform.python_version(), "machine": platform.machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
