"""``coinlake sql`` (Delta and warehouse modes, three formats) and ``coinlake snowflake init|check``."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pandas as pd
import pytest

from app.cli import main
from app.commands.sql import format_rows
from app.sinks.warehouse.connector import emulator_connector
from app.sinks.warehouse.sql import WarehouseBatch
from app.tables import ensure_table

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output")


@pytest.fixture(autouse=True)
def _emulator_env(monkeypatch):
    monkeypatch.setenv("COINLAKE_WAREHOUSE", "emulator")
    monkeypatch.delenv("SNOWFLAKE_ACCOUNT", raising=False)


def test_format_rows_json_uses_iso_utc_timestamps():
    out = json.loads(
        format_rows(
            ["t", "d", "n", "x"],
            [(datetime(2024, 1, 2, 3, 4, 5, 600000), date(2024, 1, 2), Decimal("3"), float("nan"))],
            "json",
        )
    )
    assert out == [{"t": "2024-01-02T03:04:05.600000Z", "d": "2024-01-02", "n": 3, "x": None}]


def test_format_rows_csv_and_table():
    rows = [("btc", 1.5, None), ("eth", 2.0, True)]
    assert format_rows(["coin", "p", "b"], rows, "csv") == "coin,p,b\nbtc,1.5,\neth,2.0,True"
    table = format_rows(["coin", "p", "b"], rows, "table").splitlines()
    assert table[0].split(" | ")[0].strip() == "coin" and table[-1] == "(2 rows)" and "NULL" in table[2]


def test_sql_queries_delta_tables_by_name(spark, tmp_path, capsys):
    path = str(tmp_path / "tables" / "silver_crypto_clean")
    ensure_table(spark, "silver_crypto_clean", path)
    spark.sql(
        f"INSERT INTO delta.`{path}` (coin_id, vs_currency, current_price, valid_from, is_current) "
        "VALUES ('bitcoin', 'usd', 42.5, TIMESTAMP'2024-01-01 10:00:00', true), ('eth', 'usd', NULL, NULL, NULL)"
    )
    code = main(
        [
            "--data-dir",
            str(tmp_path),
            "sql",
            "--format",
            "json",
            "SELECT coin_id, current_price, valid_from, is_current FROM silver_crypto_clean ORDER BY coin_id",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "coin_id": "bitcoin",
            "current_price": 42.5,
            "valid_from": "2024-01-01T10:00:00Z",
            "is_current": True,
        },
        {"coin_id": "eth", "current_price": None, "valid_from": None, "is_current": None},
    ]
    assert (
        main(
            [
                "--data-dir",
                str(tmp_path),
                "sql",
                "--format",
                "csv",
                "SELECT count(*) AS n FROM silver_crypto_clean",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "n\n2"


def test_sql_reports_a_bad_query_in_one_line(spark, tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "sql", "SELECT * FROM no_such_table"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coinlake: error:") and "no_such_table" in err
    assert len(err.strip().splitlines()) == 1


def test_snowflake_init_check_and_sql_warehouse(tmp_path, capsys):
    root = str(tmp_path)
    assert main(["--data-dir", root, "snowflake", "check"]) == 1
    assert "missing" in capsys.readouterr().out
    assert main(["--data-dir", root, "snowflake", "init"]) == 0
    assert main(["--data-dir", root, "snowflake", "init"]) == 0  # idempotent
    capsys.readouterr()

    silver = pd.DataFrame(
        {
            "coin_id": ["bitcoin"],
            "vs_currency": ["usd"],
            "valid_from": [pd.Timestamp("2024-01-01 10:00")],
            "current_price": [42.5],
        }
    )
    from app.sinks.warehouse.sql import TARGETS

    for col in TARGETS[0].column_names:
        silver[col.lower()] = silver.get(col.lower())
    touched = pd.DataFrame(
        {"coin_id": ["bitcoin"], "vs_currency": ["usd"], "from_ts": [pd.Timestamp("2024-01-01")]}
    )
    emulator_connector(str(tmp_path / "warehouse")).loader().load(
        WarehouseBatch("app", 7, {"SILVER_CRYPTO_CLEAN": silver}, touched)
    )

    assert main(["--data-dir", root, "snowflake", "check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["missing"] == [] and report["ledger"][0]["last_batch_id"] == 7

    query = "SELECT coin_id, valid_from, current_price FROM silver_crypto_clean"
    assert main(["--data-dir", root, "sql", "--warehouse", "--format", "json", query]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"COIN_ID": "bitcoin", "VALID_FROM": "2024-01-01T10:00:00Z", "CURRENT_PRICE": 42.5}
    ]
    assert main(["--data-dir", root, "sql", "--warehouse", "--format", "csv", query]) == 0
    assert (
        capsys.readouterr().out.strip()
        == "COIN_ID,VALID_FROM,CURRENT_PRICE\nbitcoin,2024-01-01T10:00:00Z,42.5"
    )


def test_sql_warehouse_none_fails_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COINLAKE_WAREHOUSE", "none")
    assert main(["--data-dir", str(tmp_path), "sql", "--warehouse", "SELECT 1"]) == 2
    assert "COINLAKE_WAREHOUSE=none" in capsys.readouterr().err
