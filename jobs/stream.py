"""Databricks / spark-submit entry point: the bronze -> silver streaming query.

    python jobs/stream.py [--data-dir ROOT] [--trigger interval|available-now] [--every 30s]

Streaming progress is recorded into ``pipeline_metadata`` (``kind='progress'``) while it runs.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the stream job."""
    parser = argparse.ArgumentParser(
        prog="jobs/stream.py",
        description="Run the bronze -> silver -> anomalies/gold -> warehouse streaming query.",
    )
    parser.add_argument("--data-dir", help="data root (overrides COINLAKE_DATA_DIR)")
    parser.add_argument(
        "--trigger",
        choices=("interval", "available-now"),
        default="interval",
        help="interval: run until stopped (default); available-now: process what is there and exit",
    )
    parser.add_argument("--every", default="30s", help="interval of the interval trigger (30s, 2m)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load settings, build the session, run the query with progress recording."""
    args = build_parser().parse_args(argv)
    from app.config import load_settings
    from app.logs import configure_logging
    from app.paths import Layout
    from app.spark import build_spark
    from app.stream import run_stream

    settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    configure_logging(settings.log_format, settings.log_level)
    layout = Layout.from_root(settings.data_dir)
    spark = build_spark(
        app_name="coinlake-stream",
        master=settings.spark_master,
        shuffle_partitions=settings.shuffle_partitions,
        ui=settings.spark_ui,
        driver_memory=settings.driver_memory,
        ivy_dir=settings.ivy_dir,
    )
    run_id = uuid.uuid4().hex
    run_stream(spark, settings, layout, trigger=args.trigger, every=args.every, run_id=run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
