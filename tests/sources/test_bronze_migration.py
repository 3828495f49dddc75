"""A checkpoint written by Spark's file source is taken over by the listing source in place."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import ConfigError
from app.paths import Layout
from app.sources.bronze import read_bronze_stream
from app.sources.bronze_migration import committed_file_keys, is_file_source_checkpoint, migrate_checkpoint
from app.sources.bronze_source import SEED_FILE
from app.stream import prepare_checkpoint
from tests.helpers import T0, coin_record, minutes, write_bronze_page


def _page(layout: Layout, minute: float, run_id: str = "0123456789abcdef") -> str:
    return write_bronze_page(
        layout.bronze_root, T0 + minutes(minute), [coin_record("bitcoin", 1.0 + minute, T0)], run_id=run_id
    )


def _run(
    spark, layout: Layout, checkpoint: str, *, source: str, seed_file: str | None = None
) -> list[list[str]]:
    batches: list[list[str]] = []
    query = (
        read_bronze_stream(
            spark, layout.bronze_root, max_files_per_trigger=2, source=source, seed_file=seed_file
        )  # type: ignore[arg-type]
        .writeStream.option("checkpointLocation", checkpoint)
        .foreachBatch(lambda df, _: batches.append(sorted(Path(r["source_file"]).name for r in df.collect())))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    assert query.exception() is None
    return batches


def test_a_file_source_checkpoint_moves_over_without_reading_a_file_twice_or_skipping_one(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path / "root"))
    checkpoint = layout.checkpoint()
    first = [Path(_page(layout, m)).name for m in range(6)]
    # today's code: the file source reads 6 files in 3 batches; the last batch's commit is lost (a crash)
    old_batches = _run(spark, layout, checkpoint, source="files")
    assert [len(b) for b in old_batches] == [2, 2, 2]
    for name in ("2", ".2.crc"):  # as a crash before the commit leaves it
        os.remove(os.path.join(checkpoint, "commits", name))
    assert len(committed_file_keys(checkpoint)) == 4

    # batch 2 may have committed some writes under the old idempotence id: it is finished first
    settings = load_settings(data_dir=layout.root, max_files_per_trigger=2)
    with pytest.raises(
        ConfigError, match=r"batch 2 was planned but not committed.*COINLAKE_BRONZE_SOURCE=files"
    ):
        prepare_checkpoint(settings, layout, checkpoint)
    assert is_file_source_checkpoint(checkpoint)  # left as it was
    assert _run(spark, layout, checkpoint, source="files") == [sorted(first[4:])]  # the same files again

    newer = Path(_page(layout, 10)).name
    late = Path(_page(layout, 4.5, run_id="slowclock")).name  # sorts between committed files
    seed = prepare_checkpoint(settings, layout, checkpoint)
    assert seed == os.path.join(checkpoint, SEED_FILE)
    moved = [p for p in os.listdir(Path(checkpoint).parent) if p.startswith("bronze_to_silver.filesource-")]
    assert len(moved) == 1 and not is_file_source_checkpoint(checkpoint)

    new_batches = _run(spark, layout, checkpoint, source="listing", seed_file=seed)
    read = [name for batch in new_batches for name in batch]
    assert sorted(read) == sorted([late, newer])  # the late and new files, nothing committed
    # a restart reads nothing more; the migration does not run twice
    assert prepare_checkpoint(settings, layout, checkpoint) == seed
    assert _run(spark, layout, checkpoint, source="listing", seed_file=seed) == []
    # the file source cannot resume the listing source's checkpoint: a message, not a Spark error
    with pytest.raises(ConfigError, match="written by the listing bronze source"):
        prepare_checkpoint(settings.model_copy(update={"bronze_source": "files"}), layout, checkpoint)


def test_a_migration_stopped_between_its_renames_is_finished_by_the_next_start(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    staging = checkpoints / ".bronze_to_silver.migrating"
    staging.mkdir(parents=True)
    (staging / SEED_FILE).write_text(
        json.dumps({"v": 1, "seq": 0, "hw": "", "lb": "", "seen": {}, "batch": []})
    )
    assert (
        migrate_checkpoint(str(checkpoints / "bronze_to_silver"), str(tmp_path / "bronze"), late_minutes=60)
        is None
    )
    assert (checkpoints / "bronze_to_silver" / SEED_FILE).exists() and not staging.exists()


def test_a_file_source_log_that_cannot_be_read_stops_the_start_with_what_to_do(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "bronze_to_silver"
    for folder in ("sources/0", "offsets", "commits"):
        (checkpoint / folder).mkdir(parents=True)
    (checkpoint / "sources" / "0" / "0").write_text("v1\n{not json\n")
    (checkpoint / "offsets" / "0").write_text("v1\n{}\n")
    (checkpoint / "commits" / "0").write_text("v1\n{}\n")
    with pytest.raises(ConfigError, match="cannot be read.*COINLAKE_BRONZE_SOURCE=files"):
        migrate_checkpoint(str(checkpoint), str(tmp_path / "bronze"), late_minutes=60)
    assert is_file_source_checkpoint(str(checkpoint))  # left as it was
