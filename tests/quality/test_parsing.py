from __future__ import annotations

import json
from datetime import datetime

from app.quality.parsing import parse_bronze
from tests.helpers import T0, coin_record, iso

FILES_DDL = "value string, source_file string"


def _page(records, vs="usd", fetched=T0) -> str:
    return json.dumps(
        {
            "source": "coingecko",
            "request": {"vs_currency": vs},
            "fetched_at": iso(fetched),
            "http_status": 200,
            "data": records,
        }
    )


def test_parse_bronze_types_records_with_envelope_metadata(spark):
    rec = coin_record("bitcoin", 42000, T0, market_cap=8.1e11, extra_field={"nested": [1, 2]})
    int_rec = coin_record("ether", 3000, T0, current_price=3000, high_24h=None)
    df = spark.createDataFrame([(_page([rec, int_rec], vs="EUR"), "f1.json")], FILES_DDL)

    rows = {r["coin_id"]: r for r in parse_bronze(df).collect()}

    btc = rows["bitcoin"]
    assert btc["vs_currency"] == "eur"
    assert btc["current_price"] == 42000.0
    assert btc["market_cap"] == 8.1e11
    assert btc["last_updated"] == T0.replace(tzinfo=None)
    assert btc["extracted_at"] == T0.replace(tzinfo=None)
    assert btc["ath_date"] == datetime(2021, 11, 10, 14, 24, 11, 849000)
    assert btc["source_file"] == "f1.json"
    assert btc["record_index"] == 0
    assert json.loads(btc["raw_record"])["id"] == "bitcoin"
    assert btc["parse_error"] is None
    assert rows["ether"]["current_price"] == 3000.0
    assert rows["ether"]["high_24h"] is None
    assert rows["ether"]["record_index"] == 1


def test_parse_bronze_keeps_unusable_files_as_one_row_with_reason(spark):
    files = [
        ("not json at all", "a.json"),
        ('{"data": [{"id": "x"}', "b.json"),
        ("<html><body>502 Bad Gateway</body></html>", "c.json"),
        ("{}", "d.json"),
        ('{"data": {"id": "x"}}', "e.json"),
        ('{"http_status": 429, "data": []}', "f.json"),
    ]
    out = {r["source_file"]: r for r in parse_bronze(spark.createDataFrame(files, FILES_DDL)).collect()}

    assert set(out) == {"a.json", "b.json", "c.json", "d.json", "e.json", "f.json"}
    assert "not a JSON object" in out["a.json"]["parse_error"]
    assert "not a JSON object" in out["b.json"]["parse_error"]
    assert out["c.json"]["raw_record"].startswith("<html>")
    assert "no 'data' array" in out["d.json"]["parse_error"]
    assert "wrong type" in out["e.json"]["parse_error"]
    assert "429" in out["f.json"]["parse_error"]
    assert all(r["record_index"] is None for r in out.values())


def test_parse_bronze_empty_page_gives_no_rows_and_non_objects_are_flagged(spark):
    files = [(_page([]), "empty.json"), (_page([5, None, coin_record("x", 1, T0)]), "mixed.json")]

    rows = parse_bronze(spark.createDataFrame(files, FILES_DDL)).orderBy("record_index").collect()

    assert [r["source_file"] for r in rows] == ["mixed.json"] * 3
    assert rows[0]["parse_error"] == "record is not a JSON object"
    assert rows[1]["parse_error"] == "record is not a JSON object"
    assert rows[2]["parse_error"] is None


def test_parse_bronze_tolerates_wrong_types_without_failing(spark):
    rec = coin_record("x", 1.0, T0, current_price={"usd": 1}, market_cap="12")
    rec["last_updated"] = "yesterday"
    rows = parse_bronze(spark.createDataFrame([(_page([rec]), "w.json")], FILES_DDL)).collect()

    assert rows[0]["current_price"] is None
    assert rows[0]["market_cap"] == 12.0
    assert rows[0]["last_updated"] is None
    assert rows[0]["_raw"]["current_price"] == '{"usd":1}'
