"""The demo's summary: what each phase cost is printed beside what it did."""

from __future__ import annotations

import io

import pytest

from app.config import load_settings
from app.demo import PHASES, DemoOptions, DemoSummary, format_summary, run_demo


def test_format_summary_prints_time_per_phase_and_total():
    summary = DemoSummary(
        data_dir="/data",
        elapsed_seconds=74.31,
        phase_seconds={"ingest cycles": 9.84, "spark start": 6.0, "stream": 48.04},
    )

    lines = format_summary(summary).splitlines()

    block = lines[lines.index("  time per phase:") + 1 :][:4]
    # in the order the phases ran; one that did not run (simulator start) is left out
    assert block == [
        "    ingest cycles              9.8 s",
        "    spark start                6.0 s",
        "    stream                    48.0 s",
        "    total                     74.3 s",
    ]


@pytest.mark.slow
def test_run_demo_times_every_phase(spark, tmp_path):
    settings = load_settings(data_dir=str(tmp_path), warehouse="none", max_files_per_trigger=10)
    out = io.StringIO()

    summary = run_demo(settings, DemoOptions(coins=5, cycles=2, fresh=True), out=out)

    assert summary.cycles == 2 and summary.batches == 1 and summary.records_read == 10
    assert list(summary.phase_seconds) == list(PHASES)
    assert all(seconds >= 0 for seconds in summary.phase_seconds.values())
    assert sum(summary.phase_seconds.values()) <= summary.elapsed_seconds
    text = format_summary(summary)
    for name in PHASES:
        assert f"    {name:<22} {summary.phase_seconds[name]:>7.1f} s" in text
