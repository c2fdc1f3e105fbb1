"""`copier run | check-config | status | halt | resume | report | positions | replay | probe`.

Exit codes: 0 ok, 1 acceptance/verdict failure, runtime error or an unreachable endpoint (probe), 2 bad
configuration or usage, 3 the venue's geoblock endpoint refuses this host or could not be asked (a live `run`
does not start; `probe` reports it).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from copier.config import Config, load_config, load_secrets, warnings
from copier.errors import ConfigError

if TYPE_CHECKING:
    from copier.store import Store

DEFAULT_CONFIG = "/etc/copier/copier.yaml"


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help="copier YAML (default %(default)s)")


def _replay_args(p: argparse.ArgumentParser) -> None:
    """Here and not in copier.replay: every command builds the parser, and importing the pipeline for it would add
    about half a second to `copier report` and `copier status`."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--fills", help="Data API /trades rows (v1 or v2), JSON array or JSON lines")
    source.add_argument("--recorded", help="a copier store (sqlite): replay the arrivals it recorded")
    p.add_argument("--markets", required=True, help="Gamma market/event JSON (object, array or JSON lines)")
    p.add_argument("--config", default=None, help="copier YAML (default: built-in defaults)")


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--since", default=None, help="epoch seconds, an ISO-8601 instant or a span back from now (7d, 12h)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--acceptance", action="store_true",
                   help="also judge the PRD acceptance criteria; exit 1 on failure")
    p.add_argument("--html", metavar="FILE", default=None,
                   help="also write the figures (delays, copy rate per day, orders per burst, refusals) as one HTML "
                        "file; needs the `report` extra (pip install 'polycopier[report]')")

    p = sub.add_parser("positions", help="positions held: size, cost, mark, unrealised PnL, redeemable")
    _config_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("replay", help="run the real coalescer/decision/risk on a recorded history")
    _replay_args(p)

    p = sub.add_parser("probe", help="DNS/connect/TLS/first-byte medians to every endpoint, and the geoblock verdict")
    _config_arg(p)
    p.add_argument("--samples", type=int, default=5, help="fresh connections per endpoint (default %(default)s)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per step (default %(default)s)")
    p.add_argument("--json", action="store_true")
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
        secrets = load_secrets(cfg, env_file=args.env_file)
        if not cfg.execution.dry_run:
            from copier.clock import LiveClock
            from copier.probe import EXIT_BLOCKED, geoblock_refusal

            refusal = geoblock_refusal(cfg.endpoints.geoblock, sleep=LiveClock().sleep)
            if refusal:
                print(f"copier: refusing to trade live: {refusal}", file=sys.stderr)
                return EXIT_BLOCKED
        from copier.runtime import run

        return run(cfg, secrets)
    if args.command == "probe":
        from copier.clock import LiveClock
        from copier.probe import run_probe

        if not 1 <= args.samples <= 100 or not 0 < args.timeout <= 60:
            print("copier probe: --samples must be in [1, 100] and --timeout in (0, 60]", file=sys.stderr)
            return 2
        text, code = run_probe(cfg, samples=args.samples, timeout_s=args.timeout, clock=LiveClock(), as_json=args.json)
        print(text)
        return code

    if args.command == "report" and args.html:
        from copier.report_html import MISSING_EXTRA, plotting_available

        if not plotting_available():
            print(MISSING_EXTRA, file=sys.stderr)
            return 2
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
            from copier.clock import LiveClock
            from copier.report import build_report, parse_since, render_text

            store.map_for_reading()
            # Some 200k row dicts, none in a cycle: the collector's passes over them were a third of the run.
            gc.disable()
            record = store.record_since(parse_since(args.since, LiveClock().now()) or 0.0)
            rep = build_report(store, cfg, record=record)
            print(json.dumps(rep, sort_keys=True) if args.json else render_text(rep))
            if args.html:
                from copier.pnl_report import StorePnl
                from copier.report_html import html_data, render_html

                data = html_data(store, record.since, pnl=StorePnl(store, record), record=record)
                page = render_html(rep, data, title=f"copier report: {cfg.store.path}")
                try:
                    Path(args.html).write_text(page)
                except OSError as exc:
                    print(f"copier report: cannot write {args.html}: {exc.strerror}", file=sys.stderr)
                    return 2
                print(f"html report: {args.html}", file=sys.stderr)
            return 1 if args.acceptance and not rep["acceptance"]["passed"] else 0
        if args.command == "positions":
            from copier.pnl_report import positions_table, render_positions

            rows = positions_table(store)
            print(json.dumps(rows, sort_keys=True) if args.json else render_positions(rows))
            return 0
    finally:
        store.close()
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices
