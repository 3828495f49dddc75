"""``coinlake replay --from-scratch`` reads all of bronze, whatever COINLAKE_BRONZE_LOOKBACK_DAYS says."""

from __future__ import annotations

import argparse

import pytest

import app.commands.replay as replay_mod
import app.stream as stream_mod
from app.commands import stream as stream_cmd


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith(("COINLAKE_", "SNOWFLAKE_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_replay_lists_every_bronze_folder_despite_a_lookback(monkeypatch, capsys):
    monkeypatch.setenv("COINLAKE_BRONZE_LOOKBACK_DAYS", "2")
    seen = {}

    def fake_run_stream(spark, settings, layout, **kwargs):
        seen["lookback"] = settings.bronze_lookback_days
        return "result"

    monkeypatch.setattr(replay_mod, "spark_from_settings", lambda settings, app_name: object())
    monkeypatch.setattr(replay_mod, "drop_derived_state", lambda spark, layout: [])
    monkeypatch.setattr(stream_mod, "run_stream", fake_run_stream)
    monkeypatch.setattr(stream_cmd, "summary_line", lambda result: f"done {result}")

    args = argparse.Namespace(from_scratch=True)
    assert replay_mod._replay(args) == 0
    assert seen["lookback"] == 0
    assert "reading all of bronze" in capsys.readouterr().out
