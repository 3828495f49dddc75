"""Data-quality score and alerts through the CLI: stream, status --json, status, report, config."""

from __future__ import annotations

import json
import logging
import re

import pytest

from app.cli import main
from app.paths import Layout
from app.tables import METADATA
from tests.helpers import T0, coin_record, minutes, write_bronze_page, write_raw_bronze


@pytest.fixture()
def cli_spark(spark, monkeypatch):
    """Every command's session is the test session (one JVM per test process)."""
    import app.commands.report as report_command
    import app.commands.sql as sql_command
    import app.commands.status as status_command
    import app.commands.stream as stream_command

    for module in (report_command, sql_command, status_command, stream_command):
        monkeypatch.setattr(module, "spark_from_settings", lambda settings, app_name="coinlake": spark)
    return spark


def test_stream_scores_batches_alerts_once_and_status_and_report_show_it(
    cli_spark, tmp_path, monkeypatch, capsys, caplog
):
    root = str(tmp_path)
    layout = Layout.from_root(root)
    for key, value in {
        "COINLAKE_WAREHOUSE": "emulator",
        "COINLAKE_DQ_MIN_SCORE": "0.8",
        "COINLAKE_DQ_MAX_RULE_FAILURES": "5",
        "COINLAKE_MAX_FILES_PER_TRIGGER": "1",
    }.items():
        monkeypatch.setenv(key, value)
    # 7 records: 4 good; 1 good and 1 with a bad price; an unreadable file (one record)
    write_bronze_page(layout.bronze_root, T0, [coin_record(c, 1.0 + i, T0) for i, c in enumerate("abcd")])
    write_bronze_page(
        layout.bronze_root,
        T0 + minutes(1),
        [
            coin_record("a", 2.0, T0 + minutes(1)),
            coin_record("bad", -1.0, T0 + minutes(1), market_cap=1, low_24h=0.1, high_24h=2.0),
        ],
    )
    write_raw_bronze(layout.bronze_root, T0 + minutes(2), "zz-broken.json", "<html>oops</html>")

    with caplog.at_level(logging.WARNING, logger="app.alerts.dq"):
        assert main(["--data-dir", root, "stream", "--trigger", "available-now"]) == 0
    alerts = [r for r in caplog.records if r.getMessage() == "dq.alert"]
    scored = {
        r["batch_id"]: r["dq_score"]
        for r in cli_spark.read.format("delta").load(layout.table(METADATA)).collect()
        if r["kind"] == "stream_batch"
    }
    # one batch per file (in the file source's order): 4/4 pass, 1/2 pass, the unreadable file 0/1
    assert sorted(scored.values()) == [0.0, 0.5, 1.0]
    low = [b for b, s in scored.items() if s < 0.8]
    assert len(alerts) == len(low) == 2
    first = alerts[0].fields
    assert first["score"] < 0.8 and first["top_rules"][0]["examples"]
    example = first["top_rules"][0]["examples"][0]
    assert set(example) == {"source_file", "record_index", "coin_id", "vs_currency"}
    with open(tmp_path / "alerts" / "delivered.jsonl") as fh:
        delivered = fh.read().splitlines()
    assert len(delivered) == len(low) and all(d.startswith("dq|coinlake-") for d in delivered)

    # the warehouse mirrors the scores (a batch's metadata row goes with the next batch's load)
    capsys.readouterr()
    query = 'SELECT "BATCH_ID", "DQ_PASSED", "DQ_SCORE", "DQ_SCORE_BY_RULE" FROM "PIPELINE_METADATA"'
    assert main(["--data-dir", root, "sql", "--warehouse", "--format", "json", query]) == 0
    mirrored = json.loads(capsys.readouterr().out)
    assert len(mirrored) >= len(scored) - 1
    for row in mirrored:
        assert row["DQ_SCORE"] == scored[row["BATCH_ID"]]
        assert row["DQ_PASSED"] == {1.0: 4, 0.5: 1, 0.0: 0}[row["DQ_SCORE"]]
        assert bool(json.loads(row["DQ_SCORE_BY_RULE"])) == (row["DQ_SCORE"] < 1.0)

    assert main(["--data-dir", root, "status", "--json"]) == 0
    quality = json.loads(capsys.readouterr().out)["data_quality"]
    last = quality["last_batch"]
    assert last["batch_id"] == max(scored) and last["score"] == scored[max(scored)]
    day = quality["last_24h"]
    assert (day["batches"], day["records"], day["passed"]) == (len(scored), 7, 5)
    assert day["score"] == pytest.approx(5 / 7)
    assert day["failures_by_rule"] == {"current_price_not_positive": 1, "unparseable": 1}
    assert day["by_rule"] == pytest.approx({"current_price_not_positive": 6 / 7, "unparseable": 6 / 7})

    assert main(["--data-dir", root, "status"]) == 0
    text = capsys.readouterr().out
    assert "data quality" in text and "71.43%" in text and "unparseable" in text

    out = tmp_path / "report.html"
    assert main(["--data-dir", root, "report", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    panel = re.search(
        r"<section class='panel' id='panel-quality' data-state='data'>.*?</section>", page, re.S
    )
    assert panel and "data:image/png;base64," in panel.group(0)
    assert "minimum score 0.8" in panel.group(0)


def test_config_show_lists_the_dq_settings_and_refuses_bad_values(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COINLAKE_DQ_MIN_SCORE", "0.97")
    monkeypatch.setenv("COINLAKE_DQ_MAX_RULE_FAILURES", "12")
    assert main(["--data-dir", str(tmp_path), "config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["COINLAKE_DQ_MIN_SCORE"], shown["COINLAKE_DQ_MAX_RULE_FAILURES"]) == (0.97, 12)

    for key, bad in (
        ("COINLAKE_DQ_MIN_SCORE", "1.5"),
        ("COINLAKE_DQ_MIN_SCORE", "nan"),
        ("COINLAKE_DQ_MAX_RULE_FAILURES", "-1"),
        ("COINLAKE_DQ_MAX_RULE_FAILURES", "many"),
    ):
        monkeypatch.setenv(key, bad)
        assert main(["--data-dir", str(tmp_path), "config", "show"]) == 2
        err = capsys.readouterr().err
        assert f"{key}={bad!r}" in err
        monkeypatch.delenv(key)
