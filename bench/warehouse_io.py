"""Warehouse cost per batch: SQL statements and round trips for 10, 1,000 and 10,000 changed rows.

Drives the real :class:`~app.sinks.warehouse.loader.SnowflakeLoader` against the embedded emulator,
counting every ``cursor.execute`` (statements), every ``write_pandas`` (bulk staging calls) and
every connection opened. Every target table gets ``n`` changed rows in the batch.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

import pandas as pd

from app.sinks.warehouse.connector import emulator_connector
from app.sinks.warehouse.loader import SnowflakeLoader
from app.sinks.warehouse.sql import TARGETS, WarehouseBatch

T0 = pd.Timestamp("2026-01-01 00:00:00")
COINS = 100


@dataclass(frozen=True)
class StatementCount:
    rows: int
    statements: int
    bulk_calls: int
    connections: int

    @property
    def round_trips(self) -> int:
        return self.statements + self.bulk_calls + self.connections


class _Counter:
    def __init__(self) -> None:
        self.statements = self.bulk_calls = self.connections = 0


class _CountingCursor:
    def __init__(self, cursor: Any, counter: _Counter) -> None:
        self._cursor, self._counter = cursor, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def execute(self, sql: str, params: Any = None) -> Any:
        self._counter.statements += 1
        return self._cursor.execute(sql, params)


class _CountingConnection:
    def __init__(self, conn: Any, counter: _Counter) -> None:
        self._conn, self._counter = conn, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def cursor(self, *args: Any) -> _CountingCursor:
        return _CountingCursor(self._conn.cursor(*args), self._counter)


def _value(column: str, sf_type: str, i: int) -> Any:
    """A value of Snowflake type ``sf_type`` for row ``i``; keys are distinct per row."""
    t = sf_type.upper()
    if column == "COIN_ID":
        return f"coin{i % COINS}"
    if column == "VS_CURRENCY":
        return "usd"
    if t.startswith("TIMESTAMP"):
        return T0 + pd.Timedelta(minutes=i)
    if t == "DATE":
        return (T0 + pd.Timedelta(days=i)).date()
    if t in ("FLOAT", "DOUBLE"):
        return float(i)
    if t.startswith("NUMBER"):
        return i
    if t == "BOOLEAN":
        return True
    if t.startswith("VARCHAR"):
        return f"{column.lower()}-{i}"
    return None  # ARRAY / VARIANT: NULL


def batch_frames(n: int) -> dict[str, pd.DataFrame]:
    """``n`` rows with distinct keys for every target table (lower-case column names, as staged)."""
    frames = {}
    for target in TARGETS:
        data = {c.lower(): [_value(c, t, i) for i in range(n)] for c, t in target.columns}
        frames[target.name] = pd.DataFrame(data)
    return frames


def count_statements(work_dir: str, sizes: tuple[int, ...] = (10, 1_000, 10_000)) -> list[StatementCount]:
    """Load one batch of each size into a fresh emulator and count what the load sent."""
    out = []
    touched = pd.DataFrame(
        {"coin_id": [f"coin{i}" for i in range(COINS)], "vs_currency": "usd", "from_ts": T0}
    )
    for n in sizes:
        db_dir = os.path.join(work_dir, f"wh_{n}")
        shutil.rmtree(db_dir, ignore_errors=True)
        connector = emulator_connector(db_dir)
        connector.loader().init_schema()
        counter = _Counter()

        def connect(connector: Any = connector, counter: _Counter = counter) -> Any:
            counter.connections += 1
            return _CountingConnection(connector.connect(), counter)

        def write_pandas(
            conn: Any, df: Any, table: str, connector: Any = connector, counter: _Counter = counter, **kw: Any
        ) -> Any:
            counter.bulk_calls += 1
            return connector.write_pandas(conn, df, table, **kw)

        loader = SnowflakeLoader(connect, write_pandas, dialect=connector.dialect)
        result = loader.load(WarehouseBatch("bench", 0, batch_frames(n), touched))
        loaded = sum(result.rows.values())
        if loaded != n * len(TARGETS):
            raise RuntimeError(f"warehouse bench: loaded {loaded} rows, expected {n * len(TARGETS)}")
        out.append(StatementCount(n, counter.statements, counter.bulk_calls, counter.connections))
    return out
