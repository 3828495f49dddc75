from __future__ import annotations

import logging

import pytest
from delta.tables import DeltaTable

from app.batch.handler import BatchHandler
from app.config import load_settings
from app.errors import ConfigError
from app.paths import Layout
from app.sinks.delta import compaction
from app.sinks.delta.compaction import compaction_due
from app.sources.bronze import read_bronze_files
from tests.helpers import T0, assert_scd2_invariants, coin_record, minutes, silver_content, write_bronze_page

SILVER = "silver_crypto_clean"


@pytest.mark.parametrize(
    ("every", "due"),
    [(0, []), (1, [0, 1, 2, 3, 4, 5]), (2, [1, 3, 5]), (3, [2, 5]), (100, [])],
)
def test_compaction_is_due_at_the_end_of_each_period(every, due):
    assert [b for b in range(6) if compaction_due(b, every)] == due


def test_a_negative_period_is_a_config_error():
    with pytest.raises(ConfigError, match="OPTIMIZE_EVERY_BATCHES"):
        load_settings(optimize_every_batches=-1)


def _pages(layout: Layout) -> list[list[str]]:
    """Three batches of two coins; batch 2 brings a late observation that splits an old version."""
    batches = []
    for i in range(2):
        t = T0 + minutes(10 * (i + 1))
        batches.append(
            [
                write_bronze_page(
                    layout.bronze_root, t, [coin_record("btc", 100.0 + i, t), coin_record("eth", 10.0 + i, t)]
                )
            ]
        )
    late = T0 + minutes(15)
    batches.append([write_bronze_page(layout.bronze_root, late, [coin_record("btc", 50.0, late)])])
    return batches


def _num_files(spark, path: str) -> int:
    return DeltaTable.forPath(spark, path).detail().first()["numFiles"]


def test_handler_compacts_every_n_batches_without_changing_a_row(spark, tmp_path):
    bronze = Layout.from_root(str(tmp_path / "bronze"))
    batches = _pages(bronze)
    results = {}
    for every in (0, 3):
        layout = Layout.from_root(str(tmp_path / f"every{every}"))
        settings = load_settings(data_dir=layout.root, optimize_every_batches=every)
        handler = BatchHandler(layout=layout, settings=settings, app_id="test-app")
        results[every] = (
            layout,
            [handler.process(read_bronze_files(spark, f), i) for i, f in enumerate(batches)],
        )

    plain_layout, plain = results[0]
    layout, metas = results[3]
    assert [("optimize" in m.details, "optimize" in m.durations_ms) for m in metas] == [
        (False, False),
        (False, False),
        (True, True),
    ]
    assert not any("optimize" in m.details for m in plain)
    summary = metas[2].details["optimize"]
    assert "errors" not in summary and summary["tables"] == 3  # silver, quarantine, metadata exist
    assert summary["files_removed"] >= 2 and summary["files_added"] >= 1
    silver = DeltaTable.forPath(spark, layout.table(SILVER))
    assert {r["operation"] for r in silver.history().collect()} >= {"MERGE", "OPTIMIZE"}
    # one file per vs_currency partition, against one or more per batch without compaction
    assert _num_files(spark, layout.table(SILVER)) == 1 < _num_files(spark, plain_layout.table(SILVER))

    # the same rows as without compaction, late version included
    for name in (SILVER, "pipeline_metadata"):
        got = spark.read.format("delta").load(layout.table(name))
        want = spark.read.format("delta").load(plain_layout.table(name))
        if name == SILVER:
            assert_scd2_invariants(got)
            assert sorted(silver_content(got).collect()) == sorted(silver_content(want).collect())
        else:
            assert got.count() == want.count() == 3
    assert [(m.new_versions, m.unchanged) for m in metas] == [(m.new_versions, m.unchanged) for m in plain]

    # re-running the last batch after the compaction commit that followed it changes nothing
    version = silver.history(1).first()["version"]
    handler = BatchHandler(
        layout=layout,
        settings=load_settings(data_dir=layout.root, optimize_every_batches=0),
        app_id="test-app",
    )
    again = handler.process(read_bronze_files(spark, batches[2]), 2)
    assert again.details["silver"]["already_committed"] is True
    assert (again.new_versions, again.unchanged) == (metas[2].new_versions, metas[2].unchanged)
    assert DeltaTable.forPath(spark, layout.table(SILVER)).history(1).first()["version"] == version


def test_a_failed_compaction_is_logged_and_the_batch_still_succeeds(spark, tmp_path, monkeypatch, caplog):
    layout = Layout.from_root(str(tmp_path))
    settings = load_settings(data_dir=layout.root, optimize_every_batches=1)
    files = [write_bronze_page(layout.bronze_root, T0, [coin_record("btc", 1.0, T0)])]

    def broken(spark, path):
        if path.endswith(SILVER):
            raise OSError("No space left on device")
        return {"files_removed": 0, "files_added": 0}

    monkeypatch.setattr(compaction, "compact_table", broken)
    handler = BatchHandler(layout=layout, settings=settings, app_id="test-app")
    with caplog.at_level(logging.WARNING, logger="app.sinks.delta.compaction"):
        meta = handler.process(read_bronze_files(spark, files), 0)

    assert meta.status == "ok"
    summary = meta.details["optimize"]
    assert summary["tables"] == 2
    assert summary["errors"] == {layout.table(SILVER): "OSError: No space left on device"}
    assert any("compaction.failed" in r.getMessage() for r in caplog.records)
    rows = spark.read.format("delta").load(layout.table("pipeline_metadata")).collect()
    assert [(r["batch_id"], r["status"]) for r in rows] == [(0, "ok")]
    assert spark.read.format("delta").load(layout.table(SILVER)).count() == 1
