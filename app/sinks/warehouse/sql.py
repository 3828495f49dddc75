"""Snowflake sink, part 1: pure SQL builders and frame preparation (the loader: ``snowflake_loader``).

The warehouse mirrors the Delta tables state by state (docs/DESIGN.md, section 4). Per batch the
loader stages the current Delta rows of the replaced ranges with ``write_pandas`` *before* the
transaction, then in one transaction (autocommit off, ``commit``/``rollback``): skips the batch if
``LOAD_LEDGER`` already holds ``(app_id, batch_id)``; per target deletes the rows of the replaced
ranges that are no longer in Delta and upserts the staged rows by key; inserts the ledger row;
commits. The statement count depends on the number of targets only, never on row counts.

Upserts are ``MERGE`` on Snowflake. The emulator (fakesnow) emulates MERGE with a ``CREATE TEMPORARY
TABLE`` that implicitly commits the open transaction, so with ``dialect="emulator"`` the same upsert
is written as ``UPDATE ... FROM`` + ``INSERT ... WHERE NOT EXISTS`` (plain DML, atomic there).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from app.tables import ANOMALIES, GOLD_METRICS, GOLD_OHLC, METADATA, SILVER, TABLES

if TYPE_CHECKING:
    import pandas as pd

Dialect = Literal["snowflake", "emulator"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")
_SPARK_TO_SNOWFLAKE = {
    "STRING": "VARCHAR",
    "DOUBLE": "FLOAT",
    "FLOAT": "FLOAT",
    "INT": "NUMBER(38,0)",
    "BIGINT": "NUMBER(38,0)",
    "TIMESTAMP": "TIMESTAMP_NTZ",
    "DATE": "DATE",
    "BOOLEAN": "BOOLEAN",
}
LEDGER_TABLE = "LOAD_LEDGER"
TOUCHED_COLUMNS = (("COIN_ID", "VARCHAR"), ("VS_CURRENCY", "VARCHAR"), ("FROM_TS", "TIMESTAMP_NTZ"))


def quote_ident(name: str) -> str:
    """Quote one identifier after validating it against a strict pattern.

    Args:
        name: a table or column name (letters, digits, ``_``, ``$``; not starting with a digit).

    Returns:
        The name in double quotes, case preserved.

    Raises:
        ValueError: the name does not match the pattern (e.g. contains quotes, dots or spaces).
    """
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"invalid identifier {name!r}: expected {_IDENT.pattern}")
    return f'"{name}"'


def spark_ddl_columns(ddl: str) -> tuple[tuple[str, str], ...]:
    """Snowflake ``(COLUMN, TYPE)`` pairs of a Spark DDL string (``app.tables``); no Spark needed.

    Arrays and maps become VARCHAR holding JSON.
    """
    parts, depth, current = [], 0, ""
    for char in ddl:
        depth += char == "<"
        depth -= char == ">"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    columns = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        name, _, spark_type = part.partition(" ")
        base = spark_type.strip().upper()
        sf_type = "VARCHAR" if base.startswith(("ARRAY", "MAP")) else _SPARK_TO_SNOWFLAKE[base]
        columns.append((name.strip("`").upper(), sf_type))
    return tuple(columns)


@dataclass(frozen=True)
class RangeRule:
    """Which target rows a touched key ``r`` replaces: ``match`` columns equal, ``column >= bound``.

    ``bound`` is ``ts`` (``r.FROM_TS``), ``date`` (its date), ``day`` (its day start) or ``bucket``
    (the start of the candle holding it: its hour where ``INTERVAL = '1h'``, else its day).
    """

    match: tuple[str, ...]
    column: str
    bound: Literal["ts", "date", "day", "bucket"] = "ts"


@dataclass(frozen=True)
class TargetTable:
    """A warehouse table mirroring a Delta table: columns, key and the range a batch replaces."""

    name: str
    delta_name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    replaces: RangeRule | None = None
    keep_on_update: tuple[str, ...] = ()
    """Columns an upsert writes on insert only, as the Delta table's MERGE does (e.g. the batch that
    first flagged an anomaly), so the mirror need not know their stored values to update a row."""
    nullable_key: tuple[str, ...] = ()
    """Key columns that may be NULL in Delta (matched null-safely, like Delta's ``<=>``): the rows
    are mirrored, not dropped."""
    latest_by: tuple[str, ...] = ()
    """Columns ordering the rows of one key, latest last: the one kept when Delta holds several."""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


def _target(
    name: str,
    delta: str,
    key: tuple[str, ...],
    rule: RangeRule | None,
    keep: tuple[str, ...] = (),
    **options: tuple[str, ...],
) -> TargetTable:
    return TargetTable(name, delta, spark_ddl_columns(TABLES[delta].ddl), key, rule, keep, **options)


_KEY = ("COIN_ID", "VS_CURRENCY")
TARGETS: tuple[TargetTable, ...] = (
    _target(
        "SILVER_CRYPTO_CLEAN",
        SILVER,
        (*_KEY, "VALID_FROM"),
        RangeRule(_KEY, "VALID_FROM"),
    ),
    _target(
        "CRYPTO_ANOMALIES",
        ANOMALIES,
        (*_KEY, "OBSERVED_AT", "METRIC"),
        RangeRule(_KEY, "OBSERVED_AT"),
        ("DETECTED_BATCH_ID",),
    ),
    _target(
        "GOLD_CRYPTO_METRICS",
        GOLD_METRICS,
        ("METRIC_DATE", "VS_CURRENCY", "MARKET_CAP_CATEGORY"),
        RangeRule(("VS_CURRENCY",), "METRIC_DATE", "date"),
        # Coins without a market cap have a NULL category: a gold row of its own in Delta.
        nullable_key=("MARKET_CAP_CATEGORY",),
    ),
    _target(
        "GOLD_COIN_OHLC",
        GOLD_OHLC,
        (*_KEY, "INTERVAL", "BUCKET_START"),
        RangeRule(_KEY, "BUCKET_START", "bucket"),
    ),
    # A batch that failed and then succeeded has two Delta rows; the mirror keeps the latest.
    _target(
        "PIPELINE_METADATA",
        METADATA,
        ("APP_ID", "KIND", "BATCH_ID"),
        None,
        latest_by=("FINISHED_AT", "STARTED_AT"),
    ),
)
LEDGER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("APP_ID", "VARCHAR"),
    ("BATCH_ID", "NUMBER(38,0)"),
    ("LOADED_AT", "TIMESTAMP_NTZ"),
    *((f"{t.name}_ROWS", "NUMBER(38,0)") for t in TARGETS),
    ("DELETED_ROWS", "NUMBER(38,0)"),
    ("CATCHES_UP", "VARCHAR"),
)
WAREHOUSE_TABLE_NAMES = (*(t.name for t in TARGETS), LEDGER_TABLE)


# --- pure SQL builders ---------------------------------------------------------------------------


def _column_list(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{quote_ident(c)} {t}" for c, t in columns)


def build_create_table_sql(name: str, columns: Sequence[tuple[str, str]]) -> str:
    """Idempotent ``CREATE TABLE IF NOT EXISTS`` with explicit column types."""
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(name)} ({_column_list(columns)})"


def build_add_column_sql(name: str, column: str, sf_type: str) -> str:
    """Add one column to an existing table (a table created by an older release lacks it).

    ``IF NOT EXISTS`` keeps it idempotent when two processes upgrade the same table at once.
    """
    return f"ALTER TABLE {quote_ident(name)} ADD COLUMN IF NOT EXISTS {quote_ident(column)} {sf_type}"


def build_columns_probe_sql(name: str) -> str:
    """A query returning no rows whose cursor description lists the table's columns."""
    return f"SELECT * FROM {quote_ident(name)} WHERE 1 = 0"


def missing_columns(columns: Sequence[tuple[str, str]], present: Sequence[str]) -> list[tuple[str, str]]:
    """The ``(COLUMN, TYPE)`` pairs of a target that a table with columns ``present`` lacks (case-insensitive)."""
    have = {c.upper() for c in present}
    return [(c, t) for c, t in columns if c.upper() not in have]


def build_ddl() -> list[str]:
    """Every warehouse table (targets and the ledger), idempotent."""
    return [build_create_table_sql(t.name, t.columns) for t in TARGETS] + [
        build_create_table_sql(LEDGER_TABLE, LEDGER_COLUMNS)
    ]


def staging_name(table: str, app_id: str) -> str:
    """Staging table of one target for one stream (so two streams never share a staging table)."""
    digest = hashlib.sha1(app_id.encode("utf-8")).hexdigest()[:10].upper()
    return f"STG_{table}_{digest}"


def build_stage_sql(
    staging: str, columns: Sequence[tuple[str, str]], *, dialect: Dialect = "snowflake"
) -> str:
    """(Re)create an empty staging table; transient on Snowflake (no fail-safe storage)."""
    kind = "TRANSIENT TABLE" if dialect == "snowflake" else "TABLE"
    return f"CREATE OR REPLACE {kind} {quote_ident(staging)} ({_column_list(columns)})"


def build_drop_sql(staging: str) -> str:
    """Drop a staging table after the load."""
    return f"DROP TABLE IF EXISTS {quote_ident(staging)}"


def _key_match(key: Sequence[str], left: str, right: str, nullable: Sequence[str] = ()) -> str:
    """Key equality; null-safe (``IS NOT DISTINCT FROM``, Delta's ``<=>``) for ``nullable`` columns."""
    return " AND ".join(
        f"{left}.{quote_ident(k)} {'IS NOT DISTINCT FROM' if k in nullable else '='} {right}.{quote_ident(k)}"
        for k in key
    )


def _range_predicate(rule: RangeRule) -> str:
    bound = 'r."FROM_TS"'
    if rule.bound == "date":
        bound = f"CAST({bound} AS DATE)"
    elif rule.bound == "day":
        bound = f"DATE_TRUNC('DAY', {bound})"
    elif rule.bound == "bucket":
        hour, day = f"DATE_TRUNC('HOUR', {bound})", f"DATE_TRUNC('DAY', {bound})"
        bound = f"CASE WHEN t.{quote_ident('INTERVAL')} = '1h' THEN {hour} ELSE {day} END"
    return f"{_key_match(rule.match, 't', 'r')} AND t.{quote_ident(rule.column)} >= {bound}"


def build_delete_sql(target: TargetTable, staging: str, touched: str) -> str:
    """Delete the target rows of the replaced ranges that are not in the staged (current) rows."""
    if target.replaces is None:
        raise ValueError(f"{target.name} has no replaced range")
    return (
        f"DELETE FROM {quote_ident(target.name)} t"
        f" WHERE EXISTS (SELECT 1 FROM {quote_ident(touched)} r WHERE {_range_predicate(target.replaces)})"
        f" AND NOT EXISTS (SELECT 1 FROM {quote_ident(staging)} s"
        f" WHERE {_key_match(target.key, 't', 's', target.nullable_key)})"
    )


def build_merge_sql(target: TargetTable, staging: str) -> str:
    """Upsert the staged rows by key with one MERGE (the staging table is deduplicated by key)."""
    cols = target.column_names
    updates = [c for c in cols if c not in target.key and c not in target.keep_on_update]
    return (
        f"MERGE INTO {quote_ident(target.name)} t USING {quote_ident(staging)} s"
        f" ON {_key_match(target.key, 't', 's', target.nullable_key)}"
        f" WHEN MATCHED THEN UPDATE SET "
        + ", ".join(f"t.{quote_ident(c)} = s.{quote_ident(c)}" for c in updates)
        + f" WHEN NOT MATCHED THEN INSERT ({', '.join(quote_ident(c) for c in cols)})"
        f" VALUES ({', '.join('s.' + quote_ident(c) for c in cols)})"
    )


def build_update_insert_sql(target: TargetTable, staging: str) -> list[str]:
    """The same upsert as :func:`build_merge_sql` as two plain DML statements (emulator)."""
    cols = target.column_names
    updates = [c for c in cols if c not in target.key and c not in target.keep_on_update]
    update = (
        f"UPDATE {quote_ident(target.name)} t SET "
        + ", ".join(f"{quote_ident(c)} = s.{quote_ident(c)}" for c in updates)
        + f" FROM {quote_ident(staging)} s WHERE {_key_match(target.key, 't', 's', target.nullable_key)}"
    )
    insert = (
        f"INSERT INTO {quote_ident(target.name)} ({', '.join(quote_ident(c) for c in cols)})"
        f" SELECT {', '.join('s.' + quote_ident(c) for c in cols)} FROM {quote_ident(staging)} s"
        f" WHERE NOT EXISTS (SELECT 1 FROM {quote_ident(target.name)} t"
        f" WHERE {_key_match(target.key, 't', 's', target.nullable_key)})"
    )
    return [update, insert]


def build_upsert_sql(target: TargetTable, staging: str, *, dialect: Dialect) -> list[str]:
    """The upsert statements of a target for a dialect."""
    if dialect == "snowflake":
        return [build_merge_sql(target, staging)]
    return build_update_insert_sql(target, staging)


def build_ledger_check_sql() -> str:
    """Count the ledger rows of ``(app_id, batch_id)``; bind both values."""
    return f'SELECT COUNT(*) FROM {quote_ident(LEDGER_TABLE)} WHERE "APP_ID" = %s AND "BATCH_ID" = %s'


def build_ledger_insert_sql() -> str:
    """Insert one ledger row; every value bound."""
    names = ", ".join(quote_ident(c) for c, _ in LEDGER_COLUMNS)
    marks = ", ".join(["%s"] * len(LEDGER_COLUMNS))
    return f"INSERT INTO {quote_ident(LEDGER_TABLE)} ({names}) VALUES ({marks})"


def build_ledger_position_sql() -> str:
    """Per app id: last batch loaded, number of batches, last load time."""
    return (
        'SELECT "APP_ID", MAX("BATCH_ID"), COUNT(*), MAX("LOADED_AT")'
        f' FROM {quote_ident(LEDGER_TABLE)} GROUP BY "APP_ID" ORDER BY 1'
    )


# --- pure frame preparation ----------------------------------------------------------------------


def prepare_frame(
    df: pd.DataFrame,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    *,
    nullable_key: Sequence[str] = (),
    latest_by: Sequence[str] = (),
) -> tuple[pd.DataFrame, int]:
    """Columns in target order and types, null-key rows and duplicate keys removed.

    Column names are matched case-insensitively. Timestamps become UTC-naive; floats, integers and
    booleans become pandas nullable types so NULL stays NULL in the warehouse. A NaN becomes NULL
    too: the one representation of "no value" in both stores (parsing never lets NaN into Delta).
    Rows with a NULL in a ``nullable_key`` column are kept (NULL is a key value there). Of several
    rows with one key the last one in ``latest_by`` order is kept (the input order is not
    meaningful: a Spark collect); without ``latest_by``, the last one in input order.

    Returns:
        The frame ready for ``write_pandas`` and the number of rows removed.

    Raises:
        ValueError: a target column is missing (names the missing and the available columns).
    """
    import pandas as pd

    by_upper = {str(c).upper(): c for c in df.columns}
    missing = [c for c, _ in columns if c not in by_upper]
    if missing:
        raise ValueError(f"staged frame lacks columns {missing}; it has {sorted(by_upper)}")
    out = pd.DataFrame({c: df[by_upper[c]] for c, _ in columns}, index=df.index)
    for name, sf_type in columns:
        col = out[name]
        if sf_type == "FLOAT":
            out[name] = pd.to_numeric(col, errors="raise").astype("Float64")
        elif sf_type.startswith("NUMBER"):
            out[name] = pd.to_numeric(col, errors="raise").astype("Int64")
        elif sf_type == "BOOLEAN":
            out[name] = col.astype("boolean")
        elif sf_type == "TIMESTAMP_NTZ":
            ts = pd.to_datetime(col, utc=True)
            out[name] = ts.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
        elif sf_type == "DATE":
            out[name] = pd.to_datetime(col).dt.date.astype(object).where(col.notna(), None)
        else:
            out[name] = col.astype(object).where(col.notna(), None)
    before = len(out)
    required = [k for k in key if k not in nullable_key]
    if required:
        out = out.dropna(subset=required)
    if latest_by:
        out = out.sort_values(list(latest_by), kind="stable", na_position="first")
    out = out.drop_duplicates(subset=list(key), keep="last").reset_index(drop=True)
    return out, before - len(out)


@dataclass(frozen=True)
class WarehouseBatch:
    """What one micro-batch mirrors: current Delta rows of its ranges, by target table name.

    Attributes:
        app_id: the stream's idempotence id.
        batch_id: the micro-batch id.
        frames: rows per target name (``TargetTable.name``); a missing target stages no rows.
        touched: ``COIN_ID, VS_CURRENCY, FROM_TS`` per key, one row per key (earliest from_ts).
        catches_up: earlier batch ids whose ranges are included (warehouse_on_error=continue).
    """

    app_id: str
    batch_id: int
    frames: Mapping[str, pd.DataFrame]
    touched: pd.DataFrame
    catches_up: tuple[int, ...] = ()


@dataclass
class LoadResult:
    """Outcome of one load: skipped (already in the ledger) or the staged/deleted counts."""

    skipped: bool = False
    rows: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    duplicates_removed: int = 0
    statements: int = 0
