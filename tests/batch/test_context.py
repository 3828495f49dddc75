"""Stage ordering: what a stage requires decides when it runs; a bad pipeline fails at start-up."""

from __future__ import annotations

import pytest

from app.batch.anomalies import ANOMALIES_STAGE
from app.batch.context import Stage, as_stage, plan_waves
from app.batch.gold import GOLD_STAGE
from app.batch.handler import BatchHandler
from app.config import load_settings
from app.errors import ConfigError
from app.paths import Layout
from app.sinks.warehouse.stage import WarehouseStage
from app.stream import default_stages


def _stage(name: str, *requires: str) -> Stage:
    return Stage(name, lambda ctx: {}, requires=requires)


def _names(waves: list[list[Stage]]) -> list[list[str]]:
    return [[s.name for s in wave] for wave in waves]


def test_default_pipeline_runs_anomalies_and_gold_with_silver_and_the_warehouse_after(tmp_path):
    settings = load_settings(data_dir=str(tmp_path), warehouse="emulator")
    waves = plan_waves([as_stage(s) for s in default_stages(settings)])
    assert _names(waves) == [["anomalies", "gold"], ["warehouse"]]
    assert ANOMALIES_STAGE.writes == ("crypto_anomalies",)
    assert set(GOLD_STAGE.writes) == {"gold_coin_ohlc", "gold_crypto_metrics"}


def test_waves_follow_requirements_not_list_order():
    waves = plan_waves([_stage("report", "gold"), _stage("gold", "anomalies"), _stage("anomalies")])
    assert _names(waves) == [["anomalies"], ["gold"], ["report"]]


def test_a_stage_requiring_a_builtin_write_runs_after_it():
    assert _names(plan_waves([_stage("mirror", "silver"), _stage("x")])) == [["x"], ["mirror"]]


def test_a_missing_stage_fails_with_its_name():
    with pytest.raises(
        ConfigError, match=r"stage 'warehouse' requires 'anomalies', 'gold'.*not in the pipeline"
    ):
        plan_waves([as_stage(WarehouseStage())])


def test_a_cycle_fails_and_names_it():
    with pytest.raises(ConfigError, match=r"cycle: a -> b -> c -> a"):
        plan_waves([_stage("a", "b"), _stage("b", "c"), _stage("c", "a")])


def test_duplicate_and_builtin_names_are_refused():
    with pytest.raises(ConfigError, match="two stages are named 'x'"):
        plan_waves([_stage("x"), _stage("x")])
    with pytest.raises(ConfigError, match="'silver'"):
        plan_waves([_stage("silver")])


def test_plain_callables_are_stages_named_after_them():
    def probe(ctx):
        return {}

    stage = as_stage(probe)
    assert (stage.name, stage.writes, stage.requires) == ("probe", (), ())


def test_the_handler_refuses_a_bad_pipeline_before_any_batch(tmp_path):
    settings = load_settings(data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="requires 'anomalies'"):
        BatchHandler(
            layout=Layout.from_root(str(tmp_path)),
            settings=settings,
            app_id="a",
            stages=[GOLD_STAGE, WarehouseStage()],
        )
