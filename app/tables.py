"""Schemas of the Delta tables: the data contracts every stage writes to and reads from.

Timestamps are Spark ``TIMESTAMP`` values in a UTC session (``app/spark.py`` sets
``spark.sql.session.timeZone=UTC``) and map to Snowflake ``TIMESTAMP_NTZ`` holding UTC.
Money and supply amounts are ``DOUBLE``: CoinGecko sends them as JSON numbers, mixed int/float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Business key of silver and of the anomaly detector.
SILVER_KEYS = ("coin_id", "vs_currency")


@dataclass(frozen=True)
class FieldSpec:
    """One field of a CoinGecko ``/coins/markets`` record and the silver column it becomes.

    The Delta DDLs, the raw-text schema bronze is read with, the typed select of parsing, its
    type rules, the row hash, the Snowflake targets and the report's data all derive from
    :data:`COINGECKO_FIELDS`: adding a field is one line here (and the simulator sending it).

    Attributes:
        source: the field's name in the API record.
        kind: ``text``, ``double``, ``int`` or ``timestamp``; how the raw text is converted.
        column: the silver column (default: ``source``).
        tracked: a change of it starts a new SCD2 version (hashed into ``row_hash``).
        max_chars: longest text (``text`` only; None: any length).
        quarantine_unrepresentable: a value that does not fit (NaN, ±Infinity, a time out of
            range, text too long or not text) quarantines the record; otherwise it becomes NULL
            and a ``warn`` rule counts it.
        report: loaded into the report's price data.
    """

    source: str
    kind: Literal["text", "double", "int", "timestamp"]
    column: str = ""
    tracked: bool = True
    max_chars: int | None = None
    quarantine_unrepresentable: bool = False
    report: bool = False

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.source)

    @property
    def spark_type(self) -> str:
        """The Spark SQL type of the silver column."""
        return {"text": "STRING", "double": "DOUBLE", "int": "INT", "timestamp": "TIMESTAMP"}[self.kind]


# Longest text kept in a record's text columns: a key is a short slug; a name is short text.
MAX_KEY_CHARS = 200
MAX_NAME_CHARS = 1000

# Every field of a record coinlake keeps, in silver column order. Fields the API sends that are
# not here are ignored.
COINGECKO_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "id",
        "text",
        column="coin_id",
        tracked=False,
        max_chars=MAX_KEY_CHARS,
        quarantine_unrepresentable=True,
    ),
    FieldSpec("symbol", "text", max_chars=MAX_KEY_CHARS, quarantine_unrepresentable=True, report=True),
    FieldSpec("name", "text", max_chars=MAX_NAME_CHARS, report=True),
    FieldSpec("current_price", "double", quarantine_unrepresentable=True, report=True),
    FieldSpec("market_cap", "double", quarantine_unrepresentable=True, report=True),
    FieldSpec("market_cap_rank", "int"),
    FieldSpec("total_volume", "double", quarantine_unrepresentable=True, report=True),
    FieldSpec("high_24h", "double"),
    FieldSpec("low_24h", "double"),
    FieldSpec("price_change_24h", "double"),
    FieldSpec("price_change_percentage_24h", "double"),
    FieldSpec("circulating_supply", "double"),
    FieldSpec("total_supply", "double"),
    FieldSpec("max_supply", "double"),
    FieldSpec("ath", "double"),
    FieldSpec("ath_date", "timestamp"),
    FieldSpec("atl", "double"),
    FieldSpec("atl_date", "timestamp"),
    FieldSpec("last_updated", "timestamp", tracked=False, quarantine_unrepresentable=True),
)
FIELDS_BY_COLUMN: dict[str, FieldSpec] = {f.column: f for f in COINGECKO_FIELDS}

# Columns whose change starts a new SCD2 version (hashed into row_hash, null-safe, in this order).
TRACKED_COLUMNS = tuple(f.column for f in COINGECKO_FIELDS if f.tracked)

# The typed record as parsed from bronze, before derived columns (one row per API record): the
# business key (coin_id, and vs_currency from the page's request), the other fields, and where and
# when the record was fetched.
RECORD_DDL = ", ".join(
    [
        "coin_id STRING",
        "vs_currency STRING",
        *(f"{f.column} {f.spark_type}" for f in COINGECKO_FIELDS if f.column != "coin_id"),
        "extracted_at TIMESTAMP",
        "source_file STRING",
    ]
)

DERIVED_DDL = """
price_volatility_24h DOUBLE, market_cap_category STRING, volume_to_market_cap_ratio DOUBLE,
supply_percentage DOUBLE, distance_from_ath_pct DOUBLE, distance_from_atl_pct DOUBLE
"""

# The observations collapsed into a silver version (same row_hash as the version, later
# last_updated), sorted by observed_at; valid_from's own observation is not in it. A late record
# with other values landing between them splits the version again (ARCHITECTURE.md, "Order
# independence"), so each keeps what differs per observation: its time, fetch time and file.
COLLAPSED_OBSERVATIONS_TYPE = (
    "ARRAY<STRUCT<observed_at: TIMESTAMP, extracted_at: TIMESTAMP, source_file: STRING>>"
)

SCD2_DDL = f"""
row_hash STRING, valid_from TIMESTAMP, valid_to TIMESTAMP, is_current BOOLEAN,
batch_id BIGINT, updated_batch_id BIGINT, collapsed_observations {COLLAPSED_OBSERVATIONS_TYPE}
"""

SILVER_DDL = ",".join([RECORD_DDL, DERIVED_DDL, SCD2_DDL])

ANOMALIES_DDL = """
coin_id STRING, vs_currency STRING, observed_at TIMESTAMP, metric STRING,
value DOUBLE, window_mean DOUBLE, window_stddev DOUBLE, z_score DOUBLE,
window_size INT, threshold DOUBLE, detected_batch_id BIGINT
"""

GOLD_METRICS_DDL = """
metric_date DATE, vs_currency STRING, market_cap_category STRING, num_coins BIGINT,
total_market_cap DOUBLE, total_volume_24h DOUBLE, avg_price DOUBLE, avg_price_change_24h DOUBLE,
avg_volatility DOUBLE, avg_volume_ratio DOUBLE, max_market_cap DOUBLE, min_market_cap DOUBLE,
metric_timestamp TIMESTAMP, updated_batch_id BIGINT
"""

GOLD_OHLC_DDL = """
coin_id STRING, vs_currency STRING, `interval` STRING, bucket_start TIMESTAMP,
open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, `return` DOUBLE,
realized_volatility DOUBLE, n_obs BIGINT, n_anomalies BIGINT, updated_batch_id BIGINT
"""

QUARANTINE_DDL = """
batch_id BIGINT, source_file STRING, record_index INT, coin_id STRING, vs_currency STRING,
raw_record STRING, failed_rules ARRAY<STRING>, errors ARRAY<STRING>, extracted_at TIMESTAMP
"""

METADATA_DDL = """
run_id STRING, kind STRING, batch_id BIGINT, app_id STRING, started_at TIMESTAMP,
finished_at TIMESTAMP, status STRING, files BIGINT, records_read BIGINT, new_versions BIGINT,
unchanged BIGINT, duplicates BIGINT, quarantined BIGINT, quarantined_by_rule MAP<STRING, BIGINT>,
warned_by_rule MAP<STRING, BIGINT>, durations_ms MAP<STRING, BIGINT>, error_message STRING,
details STRING, dq_passed BIGINT, dq_score DOUBLE, dq_score_by_rule MAP<STRING, DOUBLE>
"""
# dq_passed: records that passed every expectation (warn rules included); dq_score: dq_passed /
# records_read, NULL for a batch without records; dq_score_by_rule: 1 - failures / records_read
# per rule that failed at least one record (app/quality/score.py).

# --- the table registry ---------------------------------------------------------------------------
# Every module names a table through these constants (no table-name literal elsewhere).
SILVER = "silver_crypto_clean"
ANOMALIES = "crypto_anomalies"
GOLD_METRICS = "gold_crypto_metrics"
GOLD_OHLC = "gold_coin_ohlc"
QUARANTINE = "bronze_quarantine"
METADATA = "pipeline_metadata"


@dataclass(frozen=True)
class TableSpec:
    """One Delta table of the lake: its contract and how it is laid out.

    Attributes:
        name: folder name under ``<root>/tables`` and the lower-case Snowflake target name.
        ddl: the column contract (a Spark DDL string).
        keys: the business key of one row (what a MERGE matches on).
        time_column: the column whose maximum says how recent the table is.
        partitions: Delta partition columns.
        properties: Delta table properties that differ from :data:`TABLE_PROPERTIES`.
        derived: rebuilt from bronze by a replay (pipeline_metadata is run history and is kept).
    """

    name: str
    ddl: str
    keys: tuple[str, ...]
    time_column: str
    partitions: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    derived: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names of the contract, in order."""
        return ddl_column_names(self.ddl)


TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "true",
    "delta.enableChangeDataFeed": "true",
}

# Partitioning keeps a batch's MERGE on the files of the keys and days it touches.
# Deletion vectors keep an UPDATE from rewriting the whole file a superseded row sits in, which is
# what keeps the silver, anomaly and candle MERGEs from growing with history. gold_crypto_metrics
# holds a few rows per day (days x currencies x categories, ~5k a year), so rewriting its file is
# cheaper than writing a vector: a MERGE into it ran 10 fewer Spark jobs per batch, ~1.5 s of a
# 25 s batch (docs/BENCHMARKS.md).
TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(SILVER, SILVER_DDL, (*SILVER_KEYS, "valid_from"), "valid_from", ("vs_currency",)),
        TableSpec(
            GOLD_METRICS,
            GOLD_METRICS_DDL,
            ("metric_date", "vs_currency", "market_cap_category"),
            "metric_timestamp",
            properties={"delta.enableDeletionVectors": "false"},
        ),
        TableSpec(
            GOLD_OHLC,
            GOLD_OHLC_DDL,
            (*SILVER_KEYS, "interval", "bucket_start"),
            "bucket_start",
            ("interval",),
        ),
        TableSpec(
            ANOMALIES,
            ANOMALIES_DDL,
            (*SILVER_KEYS, "observed_at", "metric"),
            "observed_at",
            ("vs_currency",),
        ),
        TableSpec(QUARANTINE, QUARANTINE_DDL, ("source_file", "record_index"), "extracted_at"),
        TableSpec(METADATA, METADATA_DDL, ("app_id", "kind", "batch_id"), "finished_at", derived=False),
    )
}
TABLE_NAMES: tuple[str, ...] = tuple(TABLES)
DERIVED_TABLE_NAMES: tuple[str, ...] = tuple(n for n, spec in TABLES.items() if spec.derived)


def table_spec(name: str) -> TableSpec:
    """The registry entry of table ``name``; a clear error for a name that is not a table."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; expected one of {', '.join(TABLE_NAMES)}") from None


def table_properties(name: str) -> dict[str, str]:
    """The Delta table properties of table ``name`` (TABLE_PROPERTIES with its overrides)."""
    return {**TABLE_PROPERTIES, **table_spec(name).properties}


def ddl_column_names(ddl: str) -> tuple[str, ...]:
    """Column names of a DDL string, in order (commas inside ``<...>`` types do not split)."""
    names, depth, start = [], 0, 0
    for i, char in enumerate(ddl + ","):
        depth += (char == "<") - (char == ">")
        if char == "," and depth == 0:
            part = ddl[start:i].strip()
            if part:
                names.append(part.split()[0].strip("`"))
            start = i + 1
    return tuple(names)


def ensure_table(spark: SparkSession, name: str, path: str) -> None:
    """Create the Delta table at ``path`` with its contract schema if it does not exist yet.

    An existing table that lacks columns added to the contract since it was created gets them
    (NULL in old rows) with one ``ALTER TABLE ... ADD COLUMNS``, and one whose properties differ
    from :func:`table_properties` gets them with one ``ALTER TABLE ... SET TBLPROPERTIES``.

    Args:
        spark: the session.
        name: a table of :data:`TABLES`.
        path: where the table lives.
    """
    from delta.tables import DeltaTable

    if DeltaTable.isDeltaTable(spark, path):
        _add_missing_columns(spark, name, path)
        _set_changed_properties(spark, name, path)
        return
    builder = DeltaTable.createIfNotExists(spark).location(path)
    schema = spark.createDataFrame([], table_spec(name).ddl).schema
    builder = builder.addColumns(schema)
    partitions = table_spec(name).partitions
    if partitions:
        builder = builder.partitionedBy(*partitions)
    for key, value in _wanted_properties(spark, name).items():
        builder = builder.property(key, value)
    builder.execute()


def _wanted_properties(spark: SparkSession, name: str) -> dict[str, str]:
    """:func:`table_properties` plus the maintenance settings the session carries (log and file
    retention, checkpoint interval: :mod:`app.sinks.delta.maintenance`)."""
    from app.sinks.delta.maintenance import session_maintenance_properties

    return {**table_properties(name), **session_maintenance_properties(spark)}


def _set_changed_properties(spark: SparkSession, name: str, path: str) -> None:
    """Give an existing table the properties of the contract it lacks (one ALTER, only if needed).

    Turning deletion vectors off keeps the vectors already written readable; later writes rewrite
    files instead.
    """
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, path).detail().select("properties").first()
    current = dict(detail["properties"] or {}) if detail is not None else {}
    changed = {k: v for k, v in _wanted_properties(spark, name).items() if current.get(k) != v}
    if changed:
        assignments = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(changed.items()))
        location = path.replace("`", "``")
        spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ({assignments})")


def _add_missing_columns(spark: SparkSession, name: str, path: str) -> None:
    """Add the contract columns an existing table lacks (a table created by an older release)."""
    present = {c.lower() for c in spark.read.format("delta").load(path).columns}
    contract = spark.createDataFrame([], table_spec(name).ddl).schema
    missing = [f for f in contract.fields if f.name.lower() not in present]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        location = path.replace("`", "``")
        spark.sql(f"ALTER TABLE delta.`{location}` ADD COLUMNS ({columns})")
