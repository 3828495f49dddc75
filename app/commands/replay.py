"""``coinlake replay``: re-process bronze, from scratch or from a day, with a new checkpoint.

* ``--from-scratch`` drops the derived tables and the stream checkpoint and rebuilds from all of
  bronze.
* ``--from DATE`` deletes nothing: it re-reads the ``dt=`` folders from that UTC day on over the
  existing tables with a checkpoint of its own (the order-independent SCD2 makes feeding records
  again idempotent), then reconciles the derived tables from that day on (``verify --from DATE
  --repair``). The stream's own checkpoint is left as it is (README, "Replaying").
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings
from app.errors import ConfigError
from app.tables import DERIVED_TABLE_NAMES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.config import Settings
    from app.paths import Layout

# Checkpoint folders of replays from a day: ``<root>/checkpoints/replay_from_<DATE>_<UTC stamp>``.
REPLAY_CHECKPOINT_PREFIX = "replay_from_"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "replay",
        help="re-process bronze with a new checkpoint: --from-scratch, or --from DATE over the tables",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--from-scratch",
        action="store_true",
        help="delete silver, anomalies, gold, quarantine and the stream checkpoint first",
    )
    mode.add_argument(
        "--from",
        dest="from_date",
        metavar="DATE",
        help="re-process the bronze folders from this UTC day (YYYY-MM-DD) on over the existing "
        "tables, deleting nothing, then reconcile the derived tables from that day (verify --repair)",
    )
    parser.set_defaults(handler=_replay)


def drop_derived_state(spark: SparkSession, layout: Layout) -> list[str]:
    """Delete the derived tables and the stream checkpoint (through Hadoop, so ``dbfs:/`` works); returns what was deleted."""
    from app.paths import STREAM_QUERY_NAME

    jvm: Any = spark.sparkContext._jvm  # py4j view: Optional in the stubs, set on a live session
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[attr-defined]
    deleted = []
    # Not pipeline_metadata: it is the run history (ingest cycles too), so a replay keeps it.
    for target in [layout.table(t) for t in DERIVED_TABLE_NAMES] + [layout.checkpoint(STREAM_QUERY_NAME)]:
        path = jvm.org.apache.hadoop.fs.Path(target)
        fs = path.getFileSystem(conf)
        if fs.exists(path):
            fs.delete(path, True)
            deleted.append(target)
    return deleted


def _replay(args: argparse.Namespace) -> int:
    from_scratch = getattr(args, "from_scratch", False)
    from_date = getattr(args, "from_date", None)
    if from_scratch and from_date is not None:
        raise ConfigError("replay: --from-scratch and --from are mutually exclusive; pass one")
    if from_date is not None:
        return _replay_from(args, _parse_from(from_date))
    if not from_scratch:
        raise ConfigError(
            "replay: pass --from-scratch to confirm dropping the derived tables and the checkpoint, "
            "or --from DATE to re-process bronze from that day over the existing tables"
        )
    from app.commands.stream import summary_line
    from app.stream import run_stream

    settings = replay_settings(settings_from_args(args))
    layout = layout_of(settings)
    spark = spark_from_settings(settings, app_name="coinlake-replay")
    for path in drop_derived_state(spark, layout):
        print(f"replay: deleted {path}")
    print(summary_line(run_stream(spark, settings, layout, trigger="available-now")))
    return 0


def _parse_from(value: str) -> date:
    from app.commands.verify import parse_day

    day = parse_day(value, command="replay")
    assert day is not None
    if day > datetime.now(UTC).date():
        raise ConfigError(
            f"replay: --from {value} is in the future (today is {datetime.now(UTC).date()} UTC)"
        )
    return day


def replay_checkpoint(layout: Layout, from_day: date, *, now: datetime) -> str:
    """A new checkpoint folder for a replay from ``from_day`` started at ``now`` (never the stream's)."""
    return layout.checkpoint(f"{REPLAY_CHECKPOINT_PREFIX}{from_day.isoformat()}_{now:%Y%m%dT%H%M%S%fZ}")


def _replay_from(args: argparse.Namespace, from_day: date) -> int:
    """Re-process bronze from ``from_day`` over the tables, then reconcile the derived tables."""
    from app.batch.verify import verify_lake
    from app.commands.stream import summary_line
    from app.commands.verify import format_reports
    from app.sources.bronze import bronze_days_from
    from app.stream import run_stream

    settings = replay_settings(settings_from_args(args))
    layout = layout_of(settings)
    spark = spark_from_settings(settings, app_name="coinlake-replay")
    days = bronze_days_from(spark, layout.bronze_root, from_day)
    if not days:
        raise ConfigError(
            f"replay: no bronze folder dt=YYYY-MM-DD on or after {from_day} under {layout.bronze_root}"
        )
    checkpoint = replay_checkpoint(layout, from_day, now=datetime.now(UTC))
    print(f"replay: reading {len(days)} bronze folder(s) dt={days[0]} .. dt={days[-1]}")
    print(f"replay: new checkpoint {checkpoint} (the stream's own checkpoint is not touched)")
    result = run_stream(
        spark, settings, layout, trigger="available-now", checkpoint=checkpoint, bronze_days=days
    )
    print(summary_line(result))
    reports = verify_lake(
        spark,
        layout,
        from_date=from_day,
        window=settings.zscore_window,
        min_periods=settings.zscore_min_periods,
        threshold=settings.zscore_threshold,
        repair=True,
    )
    print(format_reports(reports, from_date=from_day, repair=True))
    return 0


def replay_settings(settings: Settings) -> Settings:
    """The settings of a replay: every bronze date folder is listed, whatever the lookback.

    ``COINLAKE_BRONZE_LOOKBACK_DAYS`` bounds what a long-running stream lists; a replay that
    honoured it would rebuild only the last days, so older history would vanish from Delta while
    staying in the warehouse.
    """
    if settings.bronze_lookback_days:
        print(
            f"replay: reading all of bronze (COINLAKE_BRONZE_LOOKBACK_DAYS="
            f"{settings.bronze_lookback_days} applies to the stream, not to a replay)"
        )
    return settings.model_copy(update={"bronze_lookback_days": 0})
