"""Delta table creation: the contract's properties on new tables and on tables made before them."""

from __future__ import annotations

from delta.tables import DeltaTable

from app.tables import ensure_table


def _properties(spark, path):
    return DeltaTable.forPath(spark, path).detail().first()["properties"]


def test_new_tables_get_their_properties_and_metrics_has_no_deletion_vectors(spark, tmp_path):
    for name in ("silver_crypto_clean", "gold_coin_ohlc", "gold_crypto_metrics"):
        path = str(tmp_path / name)
        ensure_table(spark, name, path)
        props = _properties(spark, path)
        assert props["delta.enableChangeDataFeed"] == "true"
        expected = "false" if name == "gold_crypto_metrics" else "true"
        assert props["delta.enableDeletionVectors"] == expected, name


def test_an_existing_table_gets_the_changed_properties(spark, tmp_path):
    path = str(tmp_path / "gold_crypto_metrics")
    ensure_table(spark, "gold_crypto_metrics", path)
    # As an older release created it: deletion vectors on.
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    assert _properties(spark, path)["delta.enableDeletionVectors"] == "true"
    version = DeltaTable.forPath(spark, path).history(1).first()["version"]

    ensure_table(spark, "gold_crypto_metrics", path)
    assert _properties(spark, path)["delta.enableDeletionVectors"] == "false"
    ensure_table(spark, "gold_crypto_metrics", path)  # nothing left to change: no new commit
    assert DeltaTable.forPath(spark, path).history(1).first()["version"] == version + 1
