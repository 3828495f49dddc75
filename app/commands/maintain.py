"""``coinlake maintain [--no-optimize] [--json]``: OPTIMIZE, then VACUUM, the pipeline's Delta tables."""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "maintain",
        help="OPTIMIZE then VACUUM every pipeline Delta table (opt-in; VACUUM keeps "
        "COINLAKE_DELTA_DELETED_FILE_RETENTION_HOURS of removed files)",
        description=(
            "Compact small files (OPTIMIZE, rows unchanged), then delete files no table version "
            "within the deleted-file retention references (VACUUM). The tables first get the "
            "retention and checkpoint settings (COINLAKE_DELTA_*). VACUUM is safe beside a running "
            "stream; OPTIMIZE can make a concurrent batch fail and re-run on restart, so pass "
            "--no-optimize next to a running stream (it compacts its tables itself)."
        ),
    )
    parser.add_argument("--no-optimize", action="store_true", help="VACUUM only (beside a running stream)")
    parser.add_argument("--json", action="store_true", help="print the per-table report as JSON")
    parser.set_defaults(handler=_maintain)


def _maintain(args: argparse.Namespace) -> int:
    from app.sinks.delta.maintenance import maintain
    from app.tables import TABLE_NAMES, ensure_table

    settings = settings_from_args(args)
    layout = layout_of(settings)
    spark = spark_from_settings(settings, app_name="coinlake-maintain")
    from delta.tables import DeltaTable

    paths = {name: layout.table(name) for name in TABLE_NAMES}
    for name, path in paths.items():
        if DeltaTable.isDeltaTable(spark, path):
            ensure_table(spark, name, path)  # retention and checkpoint interval from the settings
    report = maintain(spark, paths.values(), optimize=not args.no_optimize)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        for path, entry in report.items():
            print(f"maintain: {path}: " + ", ".join(f"{k}={v}" for k, v in entry.items()))
        if not report:
            print(f"maintain: no Delta table under {layout.root}")
    return 1 if any("error" in e for e in report.values()) else 0
