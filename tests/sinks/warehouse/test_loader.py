"""The loader against the embedded emulator (fakesnow, in-process, a tmp database folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pandas as pd
import pytest

from app.errors import LoadTerminalError, LoadTransientError
from app.sinks.warehouse.connector import emulator_connector
from app.sinks.warehouse.loader import SnowflakeLoader, map_error
from app.sinks.warehouse.sql import TARGETS, WarehouseBatch

APP = "coinlake-test"
T0 = pd.Timestamp("2024-01-01 00:00:00")

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output")


def _silver(rows: list[tuple[str, pd.Timestamp, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["coin_id", "valid_from", "current_price"])
    df["vs_currency"] = "usd"
    for col in TARGETS[0].column_names:
        if col.lower() not in df:
            df[col.lower()] = None
    return df


def _touched(from_ts: dict[str, pd.Timestamp]) -> pd.DataFrame:
    return pd.DataFrame({"coin_id": list(from_ts), "vs_currency": "usd", "from_ts": list(from_ts.values())})


def _snapshot(loader: SnowflakeLoader) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for name in (*(t.name for t in TARGETS), "LOAD_LEDGER"):
        cols, rows = loader.query(f'SELECT * FROM "{name}"')
        cols_no_time = [i for i, c in enumerate(cols) if c != "LOADED_AT"]
        out[name] = sorted((tuple(r[i] for i in cols_no_time) for r in rows), key=repr)
    return out


@pytest.fixture()
def connector(tmp_path):
    return emulator_connector(str(tmp_path / "warehouse"))


@pytest.fixture()
def loader(connector):
    loader = connector.loader()
    loader.init_schema()
    return loader


class _CountingCursor:
    def __init__(self, cursor: Any, log: list[str], fail_on: str | None) -> None:
        self._cursor, self._log, self._fail_on = cursor, log, fail_on

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def execute(self, sql: str, params: Any = None) -> Any:
        self._log.append(sql)
        if self._fail_on and sql.startswith(self._fail_on):
            raise RuntimeError("injected failure")
        return self._cursor.execute(sql, params)


class _CountingConnection:
    def __init__(self, conn: Any, log: list[str], fail_on: str | None = None) -> None:
        self._conn, self._log, self._fail_on = conn, log, fail_on

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def cursor(self, *args: Any) -> _CountingCursor:
        return _CountingCursor(self._conn.cursor(*args), self._log, self._fail_on)


def _instrumented(connector, log: list[str], fail_on: str | None = None) -> SnowflakeLoader:
    def write_pandas(conn: Any, df: pd.DataFrame, table: str, **kwargs: Any) -> Any:
        log.append(f"write_pandas {table}")
        keys = [t.key for t in TARGETS if table.startswith(f"STG_{t.name}_")]
        if keys:
            assert not df.duplicated(subset=list(keys[0])).any(), "duplicate keys reached staging"
        return connector.write_pandas(conn, df, table, **kwargs)

    return SnowflakeLoader(
        lambda: _CountingConnection(connector.connect(), log, fail_on), write_pandas, dialect="emulator"
    )


def test_load_then_reload_same_batch_is_skipped(loader):
    batch = WarehouseBatch(
        APP, 0, {"SILVER_CRYPTO_CLEAN": _silver([("btc", T0, 1.0)])}, _touched({"btc": T0})
    )
    first = loader.load(batch)
    second = loader.load(batch)
    assert not first.skipped and second.skipped
    assert loader.query('SELECT COUNT(*) FROM "SILVER_CRYPTO_CLEAN"')[1] == [(1,)]
    _, ledger = loader.query('SELECT "APP_ID", "BATCH_ID", COUNT(*) FROM "LOAD_LEDGER" GROUP BY 1, 2')
    assert ledger == [(APP, 0, 1)]


def test_load_replaces_the_touched_range_only(loader):
    t = [T0 + pd.Timedelta(hours=h) for h in range(4)]
    loader.load(
        WarehouseBatch(
            APP,
            0,
            {
                "SILVER_CRYPTO_CLEAN": _silver(
                    [("btc", t[0], 1.0), ("btc", t[1], 2.0), ("btc", t[2], 3.0), ("eth", t[0], 9.0)]
                )
            },
            _touched({"btc": t[0], "eth": t[0]}),
        )
    )
    # late data: btc from t1 on is now (t1 changed, t2 gone, t3 new); eth untouched
    loader.load(
        WarehouseBatch(
            APP,
            1,
            {"SILVER_CRYPTO_CLEAN": _silver([("btc", t[1], 2.5), ("btc", t[3], 4.0)])},
            _touched({"btc": t[1]}),
        )
    )
    _, rows = loader.query(
        'SELECT "COIN_ID", "VALID_FROM", "CURRENT_PRICE" FROM "SILVER_CRYPTO_CLEAN" ORDER BY 1, 2'
    )
    assert rows == [("btc", t[0], 1.0), ("btc", t[1], 2.5), ("btc", t[3], 4.0), ("eth", t[0], 9.0)]


def test_failure_mid_transaction_leaves_warehouse_unchanged(connector, loader):
    loader.load(
        WarehouseBatch(APP, 0, {"SILVER_CRYPTO_CLEAN": _silver([("btc", T0, 1.0)])}, _touched({"btc": T0}))
    )
    before = _snapshot(loader)
    log: list[str] = []
    # silver's delete and upsert have run when the gold OHLC upsert fails
    failing = _instrumented(connector, log, fail_on='INSERT INTO "GOLD_COIN_OHLC"')
    batch = WarehouseBatch(
        APP,
        1,
        {"SILVER_CRYPTO_CLEAN": _silver([("btc", T0, 5.0), ("eth", T0, 2.0)])},
        _touched({"btc": T0, "eth": T0}),
    )
    with pytest.raises(LoadTerminalError, match="injected failure"):
        failing.load(batch)
    assert any(s.startswith('UPDATE "SILVER_CRYPTO_CLEAN"') for s in log)
    assert _snapshot(loader) == before
    assert not loader.load(batch).skipped  # the retry loads it
    assert loader.query('SELECT "CURRENT_PRICE" FROM "SILVER_CRYPTO_CLEAN" ORDER BY 1')[1] == [(2.0,), (5.0,)]


@pytest.mark.parametrize("fail_on", ['DELETE FROM "SILVER_CRYPTO_CLEAN"', 'INSERT INTO "LOAD_LEDGER"'])
def test_failure_at_first_or_last_statement_rolls_back(connector, loader, fail_on):
    before = _snapshot(loader)
    failing = _instrumented(connector, [], fail_on=fail_on)
    batch = WarehouseBatch(
        APP, 0, {"SILVER_CRYPTO_CLEAN": _silver([("btc", T0, 1.0)])}, _touched({"btc": T0})
    )
    with pytest.raises(LoadTerminalError):
        failing.load(batch)
    assert _snapshot(loader) == before


def test_statement_count_does_not_grow_with_rows(tmp_path):
    counts = []
    for n in (10, 10_000):
        connector = emulator_connector(str(tmp_path / f"wh{n}"))
        connector.loader().init_schema()
        log: list[str] = []
        rows = [(f"coin{i % 100}", T0 + pd.Timedelta(minutes=i), float(i)) for i in range(n)]
        touched = _touched({f"coin{i}": T0 for i in range(100)})
        anomalies = pd.DataFrame(
            {
                "coin_id": [r[0] for r in rows],
                "vs_currency": "usd",
                "observed_at": [r[1] for r in rows],
                "metric": "price",
            }
        )
        for col in TARGETS[1].column_names:
            anomalies[col.lower()] = anomalies.get(col.lower())
        frames = {"SILVER_CRYPTO_CLEAN": _silver(rows), "CRYPTO_ANOMALIES": anomalies}
        result = _instrumented(connector, log).load(WarehouseBatch(APP, 0, frames, touched))
        assert result.rows["SILVER_CRYPTO_CLEAN"] == n
        counts.append(len(log))
        assert connector.loader().query('SELECT COUNT(*) FROM "SILVER_CRYPTO_CLEAN"')[1] == [(n,)]
    assert counts[0] == counts[1]


def test_duplicate_keys_are_removed_before_merge(connector, loader):
    log: list[str] = []
    dup = _silver([("btc", T0, 1.0), ("btc", T0, 2.0), ("btc", T0, 3.0), ("eth", T0, 1.0)])
    result = _instrumented(connector, log).load(
        WarehouseBatch(APP, 0, {"SILVER_CRYPTO_CLEAN": dup}, _touched({"btc": T0}))
    )
    assert result.duplicates_removed == 2
    assert loader.query('SELECT "COIN_ID", "CURRENT_PRICE" FROM "SILVER_CRYPTO_CLEAN" ORDER BY 1')[1] == [
        ("btc", 3.0),
        ("eth", 1.0),
    ]


def _frame(target_name: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    target = next(t for t in TARGETS if t.name == target_name)
    return pd.DataFrame([{c.lower(): r.get(c.lower()) for c in target.column_names} for r in rows])


def test_gold_rows_with_null_category_are_mirrored_and_updated_in_place(loader):
    day = T0.date()

    def gold(batch_id: int, cap: float) -> WarehouseBatch:
        rows = [
            {"metric_date": day, "vs_currency": "usd", "market_cap_category": None, "num_coins": 1},
            {"metric_date": day, "vs_currency": "usd", "market_cap_category": "LARGE_CAP", "num_coins": 2},
        ]
        rows[0]["total_market_cap"] = cap
        return WarehouseBatch(
            APP, batch_id, {"GOLD_CRYPTO_METRICS": _frame("GOLD_CRYPTO_METRICS", rows)}, _touched({"btc": T0})
        )

    loader.load(gold(0, 1.0))
    loader.load(gold(1, 2.0))
    _, rows = loader.query(
        'SELECT "MARKET_CAP_CATEGORY", "NUM_COINS", "TOTAL_MARKET_CAP" FROM "GOLD_CRYPTO_METRICS" ORDER BY 1'
    )
    assert rows == [("LARGE_CAP", 2, None), (None, 1, 2.0)]


def test_metadata_mirror_keeps_the_latest_row_of_a_batch_whatever_the_collect_order(loader):
    started = T0
    rows = [
        {
            "app_id": APP,
            "kind": "stream_batch",
            "batch_id": 7,
            "status": "ok",
            "started_at": started + pd.Timedelta(minutes=5),
            "finished_at": started + pd.Timedelta(minutes=6),
        },
        {
            "app_id": APP,
            "kind": "stream_batch",
            "batch_id": 7,
            "status": "failed",
            "started_at": started,
            "finished_at": started + pd.Timedelta(minutes=1),
        },
    ]
    frames = {"PIPELINE_METADATA": _frame("PIPELINE_METADATA", rows)}
    loader.load(WarehouseBatch(APP, 0, frames, _touched({})))
    _, got = loader.query('SELECT "BATCH_ID", "STATUS" FROM "PIPELINE_METADATA"')
    assert got == [(7, "ok")]


def test_check_reports_missing_tables_and_ledger(connector):
    loader = connector.loader()
    report = loader.check()
    assert report["existing"] == [] and "LOAD_LEDGER" in report["missing"]
    loader.init_schema()
    loader.init_schema()  # idempotent
    loader.load(WarehouseBatch(APP, 3, {}, _touched({})))
    report = loader.check()
    assert report["missing"] == []
    assert report["ledger"][0]["app_id"] == APP and report["ledger"][0]["last_batch_id"] == 3


def test_init_schema_adds_new_columns_to_a_table_of_an_older_release(connector):
    old_metadata = [(c, t) for c, t in TARGETS[-1].columns if not c.startswith("DQ_")]
    assert TARGETS[-1].name == "PIPELINE_METADATA" and len(old_metadata) < len(TARGETS[-1].columns)
    conn = connector.connect()
    try:
        cols = ", ".join(f'"{c}" {t}' for c, t in old_metadata)
        conn.cursor().execute(f'CREATE TABLE "PIPELINE_METADATA" ({cols})')
        conn.cursor().execute(
            'INSERT INTO "PIPELINE_METADATA" ("APP_ID", "KIND", "BATCH_ID", "STATUS") VALUES (%s, %s, %s, %s)',
            (APP, "stream_batch", 1, "ok"),
        )
    finally:
        conn.close()
    loader = connector.loader()

    loader.init_schema()
    loader.init_schema()  # idempotent: nothing left to add
    row = {
        "app_id": APP,
        "kind": "stream_batch",
        "batch_id": 2,
        "status": "ok",
        "started_at": T0,
        "finished_at": T0,
        "dq_passed": 9,
        "dq_score": 0.9,
        "dq_score_by_rule": '{"name_is_null": 0.9}',
    }
    loader.load(
        WarehouseBatch(APP, 0, {"PIPELINE_METADATA": _frame("PIPELINE_METADATA", [row])}, _touched({}))
    )

    _, got = loader.query(
        'SELECT "BATCH_ID", "DQ_PASSED", "DQ_SCORE", "DQ_SCORE_BY_RULE" FROM "PIPELINE_METADATA" ORDER BY 1'
    )
    assert got == [(1, None, None, None), (2, 9, 0.9, '{"name_is_null": 0.9}')]


def test_map_error_splits_transient_and_terminal():
    from snowflake.connector import errors as sf

    assert isinstance(map_error(sf.OperationalError("net down"), "load"), LoadTransientError)
    assert isinstance(map_error(sf.DatabaseError("bad login", errno=390100), "connect"), LoadTerminalError)
    missing = map_error(sf.ProgrammingError("no table", errno=2003), "load")
    assert isinstance(missing, LoadTerminalError) and "snowflake init" in str(missing)


_CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, pandas as pd
    sys.path.insert(0, {root!r})
    from tests.sinks.warehouse.test_loader import APP, T0, _silver, _touched
    from app.sinks.warehouse.sql import WarehouseBatch
    from app.sinks.warehouse.connector import emulator_connector
    loader = emulator_connector({db!r}).loader()
    loader.init_schema()
    loader.load(WarehouseBatch(APP, 0, {{"SILVER_CRYPTO_CLEAN": _silver([("btc", T0, 1.0)])}}, _touched({{"btc": T0}})))
    """
)


@pytest.mark.parametrize(
    "point", ["after_warehouse_staging", "after_warehouse_merge", "after_warehouse_commit"]
)
def test_kill_during_load_then_rerun_loads_exactly_once(tmp_path, point):
    db = str(tmp_path / "warehouse")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "COINLAKE_CRASH_AT": point}
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT.format(root=root, db=db)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr.decode()
    loader = emulator_connector(db).loader()
    result = loader.load(
        WarehouseBatch(APP, 0, {"SILVER_CRYPTO_CLEAN": _silver([("btc", T0, 1.0)])}, _touched({"btc": T0}))
    )
    assert result.skipped == (point == "after_warehouse_commit")
    assert loader.query('SELECT COUNT(*) FROM "SILVER_CRYPTO_CLEAN"')[1] == [(1,)]
    assert loader.query('SELECT COUNT(*) FROM "LOAD_LEDGER"')[1] == [(1,)]


@pytest.mark.snowflake
@pytest.mark.skipif(not os.environ.get("SNOWFLAKE_ACCOUNT"), reason="needs SNOWFLAKE_ACCOUNT and credentials")
def test_real_snowflake_load_is_exactly_once():
    import uuid

    from app.config import load_settings
    from app.sinks.warehouse.connector import snowflake_connector

    loader = snowflake_connector(load_settings(warehouse="snowflake")).loader()
    loader.init_schema()
    app_id = f"coinlake-test-{uuid.uuid4()}"
    batch = WarehouseBatch(app_id, 0, {}, _touched({}))
    assert not loader.load(batch).skipped
    assert loader.load(batch).skipped
    assert loader.check()["missing"] == []
