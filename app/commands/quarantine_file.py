"""``coinlake quarantine-file PATH --reason TEXT``: set a bronze file aside so the stream skips it.

The file is recorded whole in ``bronze_quarantine`` (rule ``quarantined_by_operator``, record index
-1, the reason as its message); the stream reads that list when it starts and leaves the file out of
every batch. Bronze itself is never deleted or changed. Use it when a batch fails again and again
on a file (the stream's error names the batch's files and this command).
"""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings
from app.errors import ConfigError
from app.tables import QUARANTINE


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "quarantine-file",
        help="record a bronze file whole in bronze_quarantine so the stream skips it (bronze unchanged)",
    )
    parser.add_argument("path", metavar="PATH", help="the bronze file (a path or URI)")
    parser.add_argument("--reason", required=True, help="why the file is set aside (stored with it)")
    parser.set_defaults(handler=_quarantine_file)


def _quarantine_file(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise ConfigError("quarantine-file: --reason must not be blank")
    from app.sinks.delta.quarantine import quarantine_file
    from app.tables import ensure_table

    settings = settings_from_args(args)
    layout = layout_of(settings)
    spark = spark_from_settings(settings, app_name="coinlake-quarantine-file")
    table = layout.table(QUARANTINE)
    ensure_table(spark, QUARANTINE, table)
    source = quarantine_file(spark, table, args.path, reason=args.reason.strip())
    print(f"quarantine-file: {source} recorded in bronze_quarantine; the stream skips it from its next start")
    return 0
