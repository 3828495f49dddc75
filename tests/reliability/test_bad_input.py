"""Bad bronze input: every kind of garbage in ``tests/data/bad_bronze`` mixed with good pages.

One real streaming query (available-now, several batches, anomalies and gold on, warehouse off) reads
the whole corpus plus a ~50 MB page generated here. For every fixture: its good records reach silver,
its bad records are in ``bronze_quarantine`` with a reason, and every batch's counts reconcile
(``records_read = new_versions + unchanged + duplicates + quarantined``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from app.config import load_settings
from app.paths import Layout
from app.stream import run_stream
from tests.helpers import T0, coin_record, iso, minutes

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_bronze"
DAY = "dt=2026-01-05"
LARGE_PAGE = "large_page_50mb.json"
LARGE_RECORDS = 250
LARGE_FIELD_CHARS = 200_000


# Spark's file scan skips a zero-byte file (no row); app.sources.bronze.with_empty_files brings it
# back as an empty-text row so it is quarantined. The ingester cannot write one (it lands a whole
# envelope atomically), but a copy, a sync tool or a full disk can.
ZERO_BYTE = "empty.json"


@dataclass(frozen=True)
class Case:
    """What one fixture must produce: the coin ids that reach silver, the quarantined count, a reason."""

    good: frozenset[str] = frozenset()
    bad: int = 0
    reason: str = ""


def case(good: tuple[str, ...] = (), bad: int = 0, reason: str = "") -> Case:
    return Case(frozenset(good), bad, reason)


CASES: dict[str, Case] = {
    "not_json.json": case(bad=1, reason="not a JSON object"),
    "truncated.json": case(bad=1, reason="not a JSON object"),
    ZERO_BYTE: case(bad=1, reason="file is empty"),
    "blank_whitespace.json": case(bad=1, reason="unparseable"),
    "empty_array.json": case(bad=1, reason="not a JSON object"),
    "empty_object.json": case(bad=1, reason="no 'data' array"),
    "html_error_page.json": case(bad=1, reason="not a JSON object"),
    "http_status_500.json": case(bad=1, reason="unparseable"),
    "data_not_array.json": case(bad=1, reason="unparseable"),
    "envelope_no_data.json": case(bad=1, reason="no 'data' array"),
    "empty_data.json": case(),
    "utf8_bom.json": case(("bom-good",)),
    "latin1_name.json": case(("latin1-good",)),
    "nan_infinity_literals.json": case(("nan-good",), 3, "must be"),
    "numeric_strings.json": case(("numstr-good",)),
    "non_numeric_strings.json": case(("nonnum-good",), 2, "wrong_type"),
    "negative_and_zero_price.json": case(("negzero-good",), 2, "current_price_not_positive"),
    "negative_amounts.json": case(("negamt-good",), 2, "_negative"),
    "huge_numbers.json": case(("huge-good",), 2, "current_price_not_positive"),
    "bool_for_number.json": case(("bool-good",), 1, "wrong_type"),
    "low_above_high.json": case(("lowhigh-good",), 1, "low_24h_above_high_24h"),
    "null_and_empty_ids.json": case(("ids-good",), 3, "coin_id_is_null"),
    "missing_id_and_symbol.json": case(("missing-good",), 1, "symbol_is_null"),
    # Same key and instant, other values: one deterministic winner (earliest fetch, then smallest
    # row hash: docs/RELIABILITY.md), the other counted as a duplicate, not quarantined.
    "duplicate_ids_conflicting.json": case(("dup-good", "dup-conflict")),
    "duplicate_ids_identical.json": case(("dupsame-good",)),
    "missing_last_updated.json": case(("nolu-good",), 1, "last_updated_is_null"),
    "malformed_timestamps.json": case(("badts-good",), 3, "wrong_type"),
    "future_timestamp.json": case(("future-good",), 1, "last_updated_in_future"),
    "epoch_1970_timestamp.json": case(("epoch-good",), 1, "last_updated_too_old"),
    "unknown_extra_fields.json": case(("extra-good",)),
    "nested_types.json": case(("nested-good",), 4, ""),
    "records_not_objects.json": case(("notobj-good",), 5, "not a JSON object"),
    "missing_vs_currency.json": case(bad=1, reason="vs_currency_is_null"),
    "symbol_change_1.json": case(("symchange-good",)),
    "symbol_change_2.json": case(("symchange-good",)),
    "all_good.json": case(("clean-a", "clean-b")),
    LARGE_PAGE: case(tuple(f"large-{i:03d}" for i in range(LARGE_RECORDS))),
}


def _bytes_of(name: str) -> bytes:
    """A fixture's bytes; two encoding cases are made here so the fixtures stay readable UTF-8 text."""
    data = (CORPUS / name).read_bytes()
    if name == "utf8_bom.json":
        return b"\xef\xbb\xbf" + data
    if name == "latin1_name.json":
        return data.decode("utf-8").encode("latin-1")
    return data


def _write_large_page(folder: Path) -> int:
    """A ~50 MB page: 250 records, each with a 200 kB unknown field (streamed, never held twice)."""
    path = folder / LARGE_PAGE
    t = T0 + minutes(40)
    filler = "x" * LARGE_FIELD_CHARS
    with open(path, "w", encoding="utf-8") as fh:
        head = {
            "source": "coingecko",
            "endpoint": "/coins/markets",
            "request": {"vs_currency": "usd", "page": 1},
            "fetched_at": iso(t),
            "http_status": 200,
            "run_id": "largepage0000000",
            "page": 1,
        }
        fh.write(json.dumps(head)[:-1] + ', "data": [')
        for i in range(LARGE_RECORDS):
            rec = coin_record(f"large-{i:03d}", 1.0 + i, t - minutes(1), description=filler)
            fh.write(("," if i else "") + json.dumps(rec))
        fh.write("]}\n")
    return path.stat().st_size


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("bad_input") / "data"
    layout = Layout.from_root(str(root))
    folder = Path(layout.bronze_root) / DAY
    folder.mkdir(parents=True)
    for name in CASES:
        if name != LARGE_PAGE:
            (folder / name).write_bytes(_bytes_of(name))
    size = _write_large_page(folder)
    settings = load_settings(
        data_dir=str(root),
        warehouse="none",
        max_files_per_trigger=10,
        zscore_window=5,
        zscore_min_periods=3,
    )
    result = run_stream(spark, settings, layout)
    yield layout, result, size
    shutil.rmtree(root, ignore_errors=True)


def _by_file(df, column: str = "source_file"):
    return df.withColumn("_file", F.element_at(F.split(F.col(column), "/"), -1))


def test_corpus_has_at_least_25_kinds():
    on_disk = {p.name for p in CORPUS.iterdir() if p.suffix == ".json"}
    assert on_disk == set(CASES) - {LARGE_PAGE}
    assert len(CASES) >= 25


def test_stream_survives_the_corpus(corpus_run):
    _, result, size = corpus_run
    assert size >= 50 * 1000 * 1000
    assert len(result.batches) >= 3
    assert all(b.status == "ok" for b in result.batches)
    # empty_data.json has no record, so no row names it
    assert sum(b.files for b in result.batches) == len(CASES) - 1


def test_every_good_record_reaches_silver(corpus_run, spark):
    layout, _, _ = corpus_run
    silver = _by_file(spark.read.format("delta").load(layout.table("silver_crypto_clean")))
    found: dict[str, set[str]] = {}
    for row in silver.select("_file", "coin_id").collect():
        found.setdefault(row["_file"], set()).add(row["coin_id"])
    wrong = {
        name: (sorted(c.good), sorted(found.get(name, set())))
        for name, c in CASES.items()
        if found.get(name, set()) != c.good
    }
    assert wrong == {}, "fixture: (expected coin ids in silver, found)"


def test_every_bad_record_is_quarantined_with_a_reason(corpus_run, spark):
    layout, _, _ = corpus_run
    quarantine = _by_file(spark.read.format("delta").load(layout.table("bronze_quarantine")))
    rows = quarantine.select("_file", "errors", "failed_rules", "raw_record").collect()
    counts = Counter(r["_file"] for r in rows)
    assert all(r["errors"] and r["failed_rules"] for r in rows)
    wrong_counts = {n: (c.bad, counts.get(n, 0)) for n, c in CASES.items() if counts.get(n, 0) != c.bad}
    assert wrong_counts == {}, "fixture: (expected quarantined, found)"
    for name, c in CASES.items():
        if c.bad and c.reason:
            reasons = [" | ".join(r["errors"]) for r in rows if r["_file"] == name]
            assert all(c.reason in text for text in reasons), (name, reasons)


def test_batch_counts_reconcile(corpus_run, spark):
    layout, result, _ = corpus_run
    for b in result.batches:
        assert b.records_read == b.new_versions + b.unchanged + b.duplicates + b.quarantined, b
    meta = (
        spark.read.format("delta")
        .load(layout.table("pipeline_metadata"))
        .filter((F.col("run_id") == result.run_id) & (F.col("kind") == "stream_batch"))
        .collect()
    )
    assert len(meta) == len(result.batches)
    for m in meta:
        assert m["records_read"] == m["new_versions"] + m["unchanged"] + m["duplicates"] + m["quarantined"]
    assert sum(m["quarantined"] for m in meta) == sum(c.bad for c in CASES.values())


def test_bronze_fixture_files_are_untouched(corpus_run):
    layout, _, _ = corpus_run
    folder = Path(layout.bronze_root) / DAY
    for name in CASES:
        if name != LARGE_PAGE:
            assert (folder / name).read_bytes() == _bytes_of(name), name
    assert not [n for n in os.listdir(folder) if n.startswith(".")]


def test_zero_byte_file_is_quarantined(corpus_run, spark):
    layout, _, _ = corpus_run
    assert (Path(layout.bronze_root) / DAY / ZERO_BYTE).stat().st_size == 0
    quarantine = _by_file(spark.read.format("delta").load(layout.table("bronze_quarantine")))
    rows = quarantine.filter(F.col("_file") == ZERO_BYTE).collect()
    assert len(rows) == 1
    assert rows[0]["failed_rules"] == ["unparseable"], rows[0]
    assert any("file is empty" in e for e in rows[0]["errors"]), rows[0]
    assert rows[0]["raw_record"] == ""
