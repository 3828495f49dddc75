"""How far the pipeline is behind bronze: files, time per currency, and the ingest cycle.

``coinlake status`` reports it and exits 1 when a limit is exceeded, so a scheduler can alert.
The file lag comes from the stream's checkpoint (:func:`app.status.stream_progress`); the time lag
compares the newest bronze ``fetched_at`` (read from the file names, which encode it, so no bronze
file is opened) with the newest silver observation per currency; the ingest lag is the time since
the last cycle in the ingest log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.tables import SILVER

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.config import Settings
    from app.paths import Layout

# ``coins_markets_<YYYYMMDDTHHMMSSfff>Z_<vs>_p<page>_<run>.json`` (app.sources.landing.bronze_file_name).
_BRONZE_NAME = re.compile(r"^coins_markets_(\d{8}T\d{6})(\d{3})Z_([A-Za-z0-9]+)_p\d+_[A-Za-z0-9]*\.json$")


@dataclass(frozen=True)
class LagLimits:
    """The lags beyond which ``coinlake status`` exits 1.

    Attributes:
        max_lag_seconds: newest bronze fetch minus newest silver observation, per currency.
        max_lag_files: bronze files not committed by the stream's checkpoint.
        max_ingest_lag_seconds: time since the last ingest cycle; 0 means not checked.
    """

    max_lag_seconds: float = 900.0
    max_lag_files: int = 500
    max_ingest_lag_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LagLimits:
        """The limits of ``COINLAKE_STATUS_MAX_LAG_SECONDS``/``_FILES``/``_INGEST_LAG_SECONDS``."""
        return cls(
            max_lag_seconds=settings.status_max_lag_seconds,
            max_lag_files=settings.status_max_lag_files,
            max_ingest_lag_seconds=settings.status_max_ingest_lag_seconds,
        )


def bronze_newest_by_currency(paths: Iterable[str]) -> dict[str, datetime]:
    """The newest ``fetched_at`` per vs currency, from bronze file names.

    Args:
        paths: bronze file paths; names that are not landing names (hand-placed files) are skipped.

    Returns:
        ``{currency: newest fetched_at (UTC)}``.
    """
    newest: dict[str, datetime] = {}
    for path in paths:
        match = _BRONZE_NAME.match(path.rsplit("/", 1)[-1])
        if not match:
            continue
        stamp, millis, currency = match.groups()
        fetched = datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(
            microsecond=int(millis) * 1000, tzinfo=UTC
        )
        currency = currency.lower()
        if currency not in newest or fetched > newest[currency]:
            newest[currency] = fetched
    return newest


def silver_newest_by_currency(spark: SparkSession, layout: Layout) -> dict[str, datetime]:
    """The newest observation per vs currency in silver: ``last_updated`` or a collapsed one.

    An unchanged record does not start a silver version; its time goes into the version's
    ``collapsed_observations``, so both are looked at.
    """
    from pyspark.sql import functions as F

    observed = F.greatest(F.col("last_updated"), F.array_max(F.col("collapsed_observations.observed_at")))
    rows = (
        spark.read.format("delta")
        .load(layout.table(SILVER))
        .groupBy("vs_currency")
        # Epoch microseconds, not a timestamp: collect() would turn it into local wall time.
        .agg(F.unix_micros(F.max(observed)).alias("newest_us"))
        .collect()
    )
    return {
        str(r["vs_currency"]).lower(): datetime.fromtimestamp(r["newest_us"] / 1e6, tz=UTC)
        for r in rows
        if r["vs_currency"] is not None and r["newest_us"] is not None
    }


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 time as an aware UTC datetime (naive means UTC); None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace(" ", "T"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def compute_lag(
    stream: dict[str, Any],
    bronze_newest: dict[str, datetime],
    silver_newest: dict[str, datetime] | None,
    ingest_last_at: datetime | None,
    *,
    now: datetime,
    limits: LagLimits,
) -> dict[str, Any]:
    """The lag section of the status and the limits it exceeds.

    Args:
        stream: :func:`app.status.stream_progress` output (``pending_files``, ``in_flight_files``).
        bronze_newest: newest ``fetched_at`` per currency in bronze.
        silver_newest: newest observation per currency in silver; None when silver was not read
            (no table, or no Spark), which leaves the time lag unknown rather than exceeded.
        ingest_last_at: when the last ingest cycle happened, if any.
        now: the time to measure the ingest lag against.
        limits: the thresholds.

    Returns:
        ``files_behind``, ``by_currency`` (``bronze_newest``, ``silver_newest``, ``lag_seconds``),
        ``max_lag_seconds``, ``ingest_last_at``, ``ingest_lag_seconds``, ``limits`` and
        ``exceeded`` (one message per exceeded limit; empty when within every limit).
    """
    exceeded: list[str] = []
    files_behind = int(stream.get("pending_files") or 0) + int(stream.get("in_flight_files") or 0)
    if files_behind > limits.max_lag_files:
        exceeded.append(
            f"{files_behind} bronze files not committed by the stream (limit {limits.max_lag_files})"
        )
    by_currency: dict[str, dict[str, Any]] = {}
    for currency in sorted(bronze_newest):
        fetched = bronze_newest[currency]
        seen = (silver_newest or {}).get(currency)
        lag = None if seen is None else round((fetched - seen).total_seconds(), 3)
        by_currency[currency] = {
            "bronze_newest": fetched.isoformat(timespec="seconds"),
            "silver_newest": None if seen is None else seen.isoformat(timespec="seconds"),
            "lag_seconds": lag,
        }
        if silver_newest is not None and seen is None:
            exceeded.append(f"{currency}: bronze up to {fetched:%Y-%m-%d %H:%M:%S} and no silver rows")
        elif lag is not None and lag > limits.max_lag_seconds:
            exceeded.append(
                f"{currency}: silver {lag:.0f} s behind bronze (limit {limits.max_lag_seconds:g} s)"
            )
    lags = [c["lag_seconds"] for c in by_currency.values() if c["lag_seconds"] is not None]
    ingest_lag = None if ingest_last_at is None else round((now - ingest_last_at).total_seconds(), 3)
    if (
        limits.max_ingest_lag_seconds > 0
        and ingest_lag is not None
        and ingest_lag > limits.max_ingest_lag_seconds
    ):
        exceeded.append(
            f"last ingest cycle {ingest_lag:.0f} s ago (limit {limits.max_ingest_lag_seconds:g} s)"
        )
    return {
        "files_behind": files_behind,
        "by_currency": by_currency,
        "max_lag_seconds": max(lags) if lags else None,
        "ingest_last_at": None if ingest_last_at is None else ingest_last_at.isoformat(timespec="seconds"),
        "ingest_lag_seconds": ingest_lag,
        "limits": {
            "max_lag_seconds": limits.max_lag_seconds,
            "max_lag_files": limits.max_lag_files,
            "max_ingest_lag_seconds": limits.max_ingest_lag_seconds,
        },
        "exceeded": exceeded,
    }
