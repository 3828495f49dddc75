"""One working set per batch: silver read ONCE, before and after the batch, for every later stage.

A batch changes the silver versions of the keys it touches from ``from_ts`` on (the version just
before its earliest observation). Every derived table is a function of silver versions near that
range, so the handler reads silver once, at the version before the batch, bounded by literal
predicates that Delta's file skipping can use:

``vs_currency IN (<batch currencies>) AND (valid_to IS NULL OR valid_to >= <bound>)``

where ``bound`` is the start of the batch's earliest day minus ``working_set_lookback_hours``. That
holds, per touched key, every version the batch can change, the versions of every touched day
(candles and daily metrics), and usually the ``W + 1`` versions before the first touched day that
the z-scores need; and for the other keys of the currency the versions of the touched days (daily
metrics count every coin). Two cases need more, and are read once the SCD2 plan has told the
batch's first touched day (extra Spark jobs, never a different result):

* that day starts before ``bound`` (a key's version before the batch began on an earlier day):
  the versions ending between its start and ``bound`` are added;
* a key has fewer than ``W + 1`` versions before its first touched day while its history goes
  further back: its newest older versions are added (:func:`read_missing_history`).

The *before-image* is that read; the *after-image* replaces the rows the SCD2 plan inserts, updates or
deletes (:func:`with_after_image`). The anomaly and gold stages compute their rows from both
images and write only the difference, so no stage reads its own table to find what changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from app.sinks.delta.touched import TS_FORMAT, sql_str, sql_ts
from app.tables import SILVER_KEYS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_PY_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True)
class WorkingSet:
    """The silver working set of one batch (all frames cached by the handler).

    Attributes:
        before_df: silver rows in the working set before the batch (silver columns).
        after_df: the same rows after the batch's SCD2 plan (what silver holds once it is merged).
        touched_df: ``coin_id, vs_currency, from_ts, to_ts``, one row per key the batch touched.
        first_days: per touched vs_currency, its first touched UTC day (``YYYY-MM-DD``).
        earliest: the earliest ``from_ts`` of all touched keys (UTC text, ``TS_FORMAT``).
    """

    before_df: DataFrame
    after_df: DataFrame
    touched_df: DataFrame
    first_days: dict[str, str]
    earliest: str

    @property
    def currencies(self) -> list[str]:
        """The touched vs currencies, sorted."""
        return sorted(self.first_days)


def working_set_bound(min_ts: str, lookback_hours: int) -> str:
    """The literal lower bound on ``valid_to``: the batch's earliest day start minus the lookback.

    Args:
        min_ts: the batch's earliest observation, UTC text (``TS_FORMAT``).
        lookback_hours: ``working_set_lookback_hours``.

    Returns:
        UTC text in ``TS_FORMAT``.
    """
    day = datetime.strptime(min_ts[:10], "%Y-%m-%d")
    return (day - timedelta(hours=lookback_hours)).strftime(_PY_TS_FORMAT)


def working_set_filter(currencies: list[str], bound: str, until: str | None = None) -> str:
    """The working set's literal predicate (SQL over silver columns).

    Rows of ``currencies`` whose interval reaches ``bound``; with ``until``, only those that end
    before it (the part of a wider read that an earlier, narrower one did not hold).
    """
    listed = ", ".join(sql_str(c) for c in sorted(currencies))
    if until is None:
        return f"vs_currency IN ({listed}) AND (valid_to IS NULL OR valid_to >= {sql_ts(bound)})"
    return f"vs_currency IN ({listed}) AND valid_to >= {sql_ts(bound)} AND valid_to < {sql_ts(until)}"


def read_working_set(
    spark: SparkSession,
    path: str,
    version: int,
    currencies: list[str],
    bound: str,
    until: str | None = None,
) -> DataFrame:
    """Silver at ``version`` restricted to the working set (see :func:`working_set_filter`)."""
    return (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(path)
        .filter(working_set_filter(currencies, bound, until))
    )


def day_start(ts: str) -> str:
    """The start of the UTC day of ``ts`` (UTC text in ``TS_FORMAT``)."""
    return ts[:10] + " 00:00:00.000000"


def read_missing_history(
    spark: SparkSession,
    path: str,
    version: int,
    short: list[tuple[str, str, str]],
    *,
    versions_needed: int,
    bound: str,
) -> DataFrame:
    """The older versions (ending before ``bound``) of keys with a short working set.

    Args:
        spark: the session.
        path: silver.
        version: the silver version the working set was read at.
        short: ``(coin_id, vs_currency, need_before)`` per key, ``need_before`` as UTC text.
        versions_needed: ``W + 1``.
        bound: the working set's bound (rows ending at or after it are already there).

    Returns:
        Silver rows: per key the newest ``versions_needed`` versions that end before ``bound``.
    """
    coins = ", ".join(sql_str(c) for c in sorted({c for c, _, _ in short}))
    currencies = ", ".join(sql_str(v) for v in sorted({v for _, v, _ in short}))
    wanted = spark.createDataFrame([(c, v) for c, v, _ in short], "coin_id string, vs_currency string")
    newest_first = Window.partitionBy(*SILVER_KEYS).orderBy(F.col("valid_from").desc())
    return (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(path)
        .filter(f"vs_currency IN ({currencies}) AND coin_id IN ({coins}) AND valid_to < {sql_ts(bound)}")
        .join(F.broadcast(wanted), list(SILVER_KEYS))
        .withColumn("_rank", F.row_number().over(newest_first))
        .filter(F.col("_rank") <= versions_needed)
        .drop("_rank")
    )


def first_days(rows: list[tuple[str, str]]) -> dict[str, str]:
    """Per vs_currency its first touched day from ``(vs_currency, min from_ts text)`` rows."""
    return {currency: ts[:10] for currency, ts in rows if ts is not None}


def ts_text(col: str) -> F.Column:
    """A timestamp column as UTC text in ``TS_FORMAT`` (formatted by Spark: no local time zone)."""
    return F.date_format(col, TS_FORMAT)


@dataclass(frozen=True)
class WorkingSetReader:
    """Reads of one batch's working set: silver at ``version``, by literal bounds only.

    Attributes:
        spark: the session.
        path: silver.
        version: the silver version before the batch.
        currencies: the batch's vs currencies.
        bound: the first read's bound on ``valid_to`` (:func:`working_set_bound`).
        versions_needed: versions a key needs before its first touched day (W + 1).
    """

    spark: SparkSession
    path: str
    version: int
    currencies: list[str]
    bound: str
    versions_needed: int

    def first(self) -> DataFrame:
        """The working set: every version of the currencies whose interval reaches ``bound``."""
        from app.sinks.delta.scd2 import SILVER_COLUMNS

        return read_working_set(self.spark, self.path, self.version, self.currencies, self.bound).select(
            *SILVER_COLUMNS
        )

    def older(self, since: str) -> DataFrame:
        """The versions ending between ``since`` and ``bound`` (a touched day before the bound)."""
        from app.sinks.delta.scd2 import SILVER_COLUMNS

        return read_working_set(
            self.spark, self.path, self.version, self.currencies, since, until=self.bound
        ).select(*SILVER_COLUMNS)

    def missing_history(self, short: list[tuple[str, str, str]], *, bound: str) -> DataFrame:
        """The newest older versions (ending before ``bound``) of keys with a short history.

        Args:
            short: ``(coin_id, vs_currency, need_before)`` per key.
            bound: the working set's bound once any older day was added.
        """
        from app.sinks.delta.scd2 import SILVER_COLUMNS

        return read_missing_history(
            self.spark, self.path, self.version, short, versions_needed=self.versions_needed, bound=bound
        ).select(*SILVER_COLUMNS)
