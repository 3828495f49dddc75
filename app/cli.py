"""The ``coinlake`` command line.

Each command group lives in its own module under ``app/commands/`` and exposes
``register(subparsers)``; a group is listed in ``--help`` only when its module exists, so no
command pretends to work before it does. Exit status: 0 on success, non-zero with a one-line
reason on failure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from app.errors import PipelineError

# Order of appearance in --help.
COMMAND_MODULES = (
    "ingest",
    "simulate",
    "stream",
    "run",
    "replay",
    "quarantine_file",
    "verify",
    "maintain",
    "status",
    "report",
    "demo",
    "snowflake",
    "sql",
    "config",
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available command group registered."""
    parser = argparse.ArgumentParser(
        prog="coinlake",
        description=(
            "CoinGecko market data -> bronze files -> Spark Structured Streaming -> Delta Lake "
            "(SCD2 silver, anomalies, gold) -> Snowflake, exactly once. Settings come from "
            "COINLAKE_* / SNOWFLAKE_* environment variables, a .env file, or the TOML file named "
            "by COINLAKE_SETTINGS_FILE; see 'coinlake config show'."
        ),
    )
    parser.add_argument("--data-dir", help="data root (overrides COINLAKE_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module_name = f"app.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coinlake`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except PipelineError as exc:
        print(f"coinlake: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("coinlake: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
