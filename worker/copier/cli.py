"""`copier run | check-config | status | halt | resume | report | positions | replay`.

Exit codes: 0 ok, 1 acceptance/verdict failure or runtime error, 2 bad configuration or usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from copier.config import Config, load_config, load_secrets, warnings
from copier.errors import ConfigError

if TYPE_CHECKING:
    from copier.store import Store

DEFAULT_CONFIG = "/etc/copier/copier.yaml"


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help="copier YAML (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    from copier.replay import add_replay_args

    parser = argparse.ArgumentParser(prog="copier", description="Polymarket copy-trading bot")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the bot (watch, coalesce, decide, execute)")
    _config_arg(p)
    p.add_argument("--env-file", default=None, help="KEY=VALUE secrets file (must be mode 0600)")

    p = sub.add_parser("check-config", help="validate the config and environment, then exit")
    _config_arg(p)
    p.add_argument("--env-file", default=None)

    p = sub.add_parser("status", help="halt state, last heartbeat and counts from the store")
    _config_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("halt", help="persist HALTED: no new orders, tracking continues (survives restarts)")
    _config_arg(p)
    p.add_argument("--reason", required=True)

    p = sub.add_parser("resume", help="clear HALTED")
    _config_arg(p)

    p = sub.add_parser("report", help="copy rate, delays, outcomes and refusals from the store")
    _config_arg(p)
    p.add_argument("--since", default=None, help="epoch seconds or ISO-8601 instant")
    p.add_argument("--json", action="store_true")
    p.add_argument("--acceptance", action="store_true",
                   help="also judge the PRD acceptance criteria; exit 1 on failure")

    p = sub.add_parser("positions", help="positions held: size, cost, mark, unrealised PnL, redeemable")
    _config_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("replay", help="run the real coalescer/decision/risk on a recorded history")
    add_replay_args(p)
    return parser


def _open_store(cfg: Config) -> Store:
    from copier.store import Store

    return Store.open(cfg.store.path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "replay":
        from copier.replay import main_replay

        return main_replay(args)

    cfg = load_config(args.config)
    if args.command == "check-config":
        load_secrets(cfg, env_file=args.env_file)
        for line in warnings(cfg):
            print(f"warning: {line}", file=sys.stderr)
        print(f"config ok: {args.config}")
        return 0
    if args.command == "run":
        from copier.runtime import run

        return run(cfg, load_secrets(cfg, env_file=args.env_file))

    store = _open_store(cfg)
    try:
        if args.command == "halt":
            from copier.clock import LiveClock

            store.halt(args.reason, LiveClock().now())
            print(f"halted: {args.reason}")
            return 0
        if args.command == "resume":
            store.resume()
            print("resumed")
            return 0
        if args.command == "status":
            from copier.report import status

            info = status(store)
            print(json.dumps(info, indent=None if args.json else 2, sort_keys=True))
            return 0
        if args.command == "report":
            from copier.report import build_report, parse_since, render_text

            rep = build_report(store, cfg, since=parse_since(args.since))
            print(json.dumps(rep, sort_keys=True) if args.json else render_text(rep))
            return 1 if args.acceptance and not rep["acceptance"]["passed"] else 0
        if args.command == "positions":
            from copier.pnl_report import positions_table, render_positions

            rows = positions_table(store)
            print(json.dumps(rows, sort_keys=True) if args.json else render_positions(rows))
            return 0
    finally:
        store.close()
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices
