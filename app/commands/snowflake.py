"""``coinlake snowflake init|check``: warehouse DDL (idempotent) and health."""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.commands.common import layout_of, settings_from_args
from app.errors import ConfigError
from app.sinks.warehouse.connector import WarehouseConnector, connector_from_settings


def register(sub: Any) -> None:
    parser = sub.add_parser("snowflake", help="warehouse DDL and health (Snowflake or the emulator)")
    inner = parser.add_subparsers(dest="snowflake_command", metavar="ACTION")
    inner.required = True
    init = inner.add_parser("init", help="create the warehouse tables if missing (idempotent)")
    init.set_defaults(handler=_init)
    check = inner.add_parser("check", help="connect; report existing and missing tables and the ledger")
    check.add_argument("--json", action="store_true", help="print a JSON object")
    check.set_defaults(handler=_check)


def _connector(args: argparse.Namespace) -> WarehouseConnector:
    settings = settings_from_args(args)
    connector = connector_from_settings(settings, layout_of(settings))
    if connector is None:
        raise ConfigError("COINLAKE_WAREHOUSE=none: no warehouse is configured")
    return connector


def _init(args: argparse.Namespace) -> int:
    connector = _connector(args)
    tables = connector.loader().init_schema()
    print(f"{connector.kind}: {len(tables)} tables ready: {', '.join(tables)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    connector = _connector(args)
    report = {"warehouse": connector.kind, **connector.loader().check()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"warehouse: {connector.kind} (connected)")
        print(f"existing:  {', '.join(report['existing']) or '-'}")
        print(f"missing:   {', '.join(report['missing']) or '-'}")
        for row in report["ledger"]:
            print(
                f"ledger:    app_id={row['app_id']} last_batch_id={row['last_batch_id']} "
                f"batches={row['batches']} loaded_at={row['loaded_at']}"
            )
        if not report["ledger"]:
            print("ledger:    empty")
        if report["missing"]:
            print("hint:      run 'coinlake snowflake init'")
    return 1 if report["missing"] else 0
