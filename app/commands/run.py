"""``coinlake run``: one ingest cycle, then the stream available-now (the scheduled-job shape)."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings
from app.errors import SourceTerminalError


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="one ingest cycle, then process bronze available-now")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from app.commands.stream import summary_line
    from app.sources.ingester import run_cycle
    from app.stream import run_stream

    settings = settings_from_args(args)
    layout = layout_of(settings)
    cycle = run_cycle(settings, layout)
    print(
        f"ingest: {cycle.status}, {cycle.pages_ok} pages, {cycle.records} records, "
        f"{len(cycle.pages_failed)} pages failed"
    )
    # process whatever bronze holds even after a failed cycle, then report the failure
    spark = spark_from_settings(settings, app_name="coinlake-run")
    print(summary_line(run_stream(spark, settings, layout, trigger="available-now")))
    if cycle.status == "failed":
        raise SourceTerminalError(f"ingest cycle failed: {cycle.error or 'no page landed'}")
    return 0
