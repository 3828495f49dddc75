"""``coinlake stream --trigger available-now|interval [--every 30s]``: the bronze -> silver query."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "stream",
        help="run the bronze -> silver streaming query",
        description=(
            "Run the bronze -> silver streaming query (checkpoint checkpoints/bronze_to_silver). Bronze is "
            "read as COINLAKE_BRONZE_SOURCE says: listing (default; a trigger lists the folders from "
            "the admission window's day on, COINLAKE_BRONZE_LATE_MINUTES, and an older folder only "
            "when a file landed in it since: late files are read, never skipped) or files (Spark's "
            "file source). A checkpoint written by the file source is moved over to the listing "
            "source on the first start, unless its last batch is uncommitted: then the start says "
            "how to finish it first (README, 'Reading bronze')."
        ),
    )
    parser.add_argument(
        "--trigger",
        choices=("available-now", "interval"),
        default="available-now",
        help="available-now: process every bronze file present, then exit; interval: run until SIGTERM",
    )
    parser.add_argument("--every", default="30s", help="interval of the interval trigger (30s, 2m, 500ms)")
    parser.set_defaults(handler=_stream)


def _stream(args: argparse.Namespace) -> int:
    from app.stream import parse_duration, run_stream

    settings = settings_from_args(args)
    parse_duration(args.every)  # fail fast on a bad value, before Spark starts
    spark = spark_from_settings(settings, app_name="coinlake-stream")
    result = run_stream(spark, settings, layout_of(settings), trigger=args.trigger, every=args.every)
    print(summary_line(result))
    return 0


def summary_line(result: Any) -> str:
    """One line summing up a stream run (from its totals: a long run keeps only its latest batches)."""
    t = result.totals
    if t is None:
        from app.batch.handler import BatchTotals

        t = BatchTotals()
        for meta in result.batches:
            t.add(meta)
    return (
        f"stream: {t.batches} batches, {t.files} files, {t.records_read} records, "
        f"{t.new_versions} new versions, {t.unchanged} unchanged, "
        f"{t.duplicates} duplicates, {t.quarantined} quarantined"
    )
