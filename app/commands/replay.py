"""``coinlake replay --from-scratch``: drop the derived tables and the checkpoint, rebuild from bronze."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings
from app.errors import ConfigError
from app.tables import DERIVED_TABLE_NAMES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.config import Settings
    from app.paths import Layout


def register(sub: Any) -> None:
    parser = sub.add_parser("replay", help="rebuild every derived table from bronze with a new checkpoint")
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="required: delete silver, anomalies, gold, quarantine and the stream checkpoint first",
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
    if not args.from_scratch:
        raise ConfigError(
            "replay: pass --from-scratch to confirm dropping the derived tables and the checkpoint"
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
