"""Security and replay over one full CLI lifecycle on the same data root.

``ingest --once`` against the simulator in key-required mode, ``stream`` with every secret set to a
marker string (warehouse: the emulator), checkpoint deleted, ``replay --from-scratch``. Then:

- no marker in any process output, any file under the data root (bronze, ``ingest_runs.jsonl``,
  checkpoints, emulator files), any Delta table's rows, or ``config show``;
- bronze files keep their modification times and SHA-256 through the stream and the replay;
- the replayed Delta tables (and the warehouse) equal the original run's, ids aside;
- a SQL injection attempt in a Snowflake name setting is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import ConfigError
from app.paths import STREAM_QUERY_NAME, Layout
from app.sources.simulator import Faults, start_simulator
from tests.reliability.harness import (
    CliRun,
    delta_snapshot,
    diff_snapshots,
    run_cli,
    tail,
    warehouse_snapshot,
    write_fixed_bronze,
)

API_KEY = "CGKEY-marker-7f3a9c"
WRONG_KEY = "CGKEY-wrong-marker-51b2"
PASSWORD = "SFPASS-marker-c0ffee"
PASSPHRASE = "SFPHRASE-marker-beef42"
SF_TOKEN = "SFTOKEN-marker-9d8e7f"
WEBHOOK_TOKEN = "HOOKTOKEN-marker-a1b2c3"
MARKERS = (API_KEY, WRONG_KEY, PASSWORD, PASSPHRASE, SF_TOKEN, WEBHOOK_TOKEN)
STREAM = ("stream", "--trigger", "available-now")


def _secret_env() -> dict[str, str]:
    # Port 9 on loopback refuses connections: every alert fails and is logged, never sent anywhere.
    return {
        "COINLAKE_WAREHOUSE": "emulator",
        "SNOWFLAKE_USER": "coinlake",
        "SNOWFLAKE_PASSWORD": PASSWORD,
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": PASSPHRASE,
        "SNOWFLAKE_TOKEN": SF_TOKEN,
        "COINLAKE_ALERT_WEBHOOK_URL": f"http://127.0.0.1:9/hooks/{WEBHOOK_TOKEN}?token={WEBHOOK_TOKEN}",
        "COINLAKE_API_KEY": API_KEY,
        "COINLAKE_API_PLAN": "demo",
    }


def _bronze_state(layout: Layout) -> dict[str, tuple[int, str]]:
    out = {}
    for folder, _, files in os.walk(layout.bronze_root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[path] = (os.stat(path).st_mtime_ns, hashlib.sha256(fh.read()).hexdigest())
    return out


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("secrets") / "data"
    layout = Layout.from_root(str(root))
    write_fixed_bronze(layout)
    simulator = start_simulator(
        port=0, coins=50, seed=42, faults=Faults(api_key=API_KEY, plan="demo", error_rate=0.2, seed=11)
    )
    api = {
        "COINLAKE_API_BASE_URL": simulator.base_url,
        "COINLAKE_TOP_N": "20",
        "COINLAKE_PER_PAGE": "10",
        "COINLAKE_MAX_RETRY_SECONDS": "20",
    }
    runs: dict[str, CliRun] = {}
    try:
        runs["ingest"] = run_cli("ingest", "--once", data_dir=root, **{**_secret_env(), **api})
        runs["ingest_wrong_key"] = run_cli(
            "ingest", "--once", data_dir=root, **{**_secret_env(), **api, "COINLAKE_API_KEY": WRONG_KEY}
        )
    finally:
        simulator.stop()
    bronze_before = _bronze_state(layout)
    runs["stream"] = run_cli(*STREAM, data_dir=root, **_secret_env())
    bronze_after_stream = _bronze_state(layout)
    original = delta_snapshot(spark, layout)
    original_wh = warehouse_snapshot(layout)
    shutil.rmtree(layout.checkpoint(STREAM_QUERY_NAME))
    runs["replay"] = run_cli("replay", "--from-scratch", data_dir=root, **_secret_env())
    bronze_after_replay = _bronze_state(layout)
    runs["config"] = run_cli("config", "show", data_dir=root, **_secret_env())
    runs["config_json"] = run_cli("config", "show", "--json", data_dir=root, **_secret_env())
    return {
        "layout": layout,
        "runs": runs,
        "bronze": (bronze_before, bronze_after_stream, bronze_after_replay),
        "original": (original, original_wh),
        "replayed": (delta_snapshot(spark, layout), warehouse_snapshot(layout)),
    }


@pytest.mark.process
def test_lifecycle_commands_succeed(lifecycle):
    runs = lifecycle["runs"]
    for name in ("ingest", "stream", "replay", "config", "config_json"):
        assert runs[name].returncode == 0, (name, tail(runs[name]))
    wrong = runs["ingest_wrong_key"]
    assert wrong.returncode != 0
    assert wrong.stderr.strip().splitlines()[-1].startswith("coinlake: error:"), tail(wrong)


@pytest.mark.process
def test_no_secret_in_process_output(lifecycle):
    leaks = [
        (name, marker)
        for name, run in lifecycle["runs"].items()
        for marker in MARKERS
        if marker in run.stdout or marker in run.stderr
    ]
    assert leaks == []


@pytest.mark.process
def test_no_secret_in_any_file_under_the_data_root(lifecycle):
    layout = lifecycle["layout"]
    needles = [m.encode("utf-8") for m in MARKERS]
    leaks, scanned = [], 0
    for folder, _, files in os.walk(layout.root):
        for name in files:
            path = os.path.join(folder, name)
            data = Path(path).read_bytes()
            scanned += 1
            leaks += [(path, n.decode()) for n in needles if n in data]
    assert scanned > 20
    assert leaks == []
    assert os.path.exists(os.path.join(layout.logs_dir, "ingest_runs.jsonl"))


@pytest.mark.process
def test_no_secret_in_delta_table_rows(lifecycle, spark):
    from delta.tables import DeltaTable

    from app.tables import TABLE_NAMES

    layout = lifecycle["layout"]
    leaks = []
    for table in TABLE_NAMES:
        path = layout.table(table)
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        text = "\n".join(
            str(r.asDict(recursive=True)) for r in spark.read.format("delta").load(path).collect()
        )
        leaks += [(table, m) for m in MARKERS if m in text]
    assert leaks == []


@pytest.mark.process
def test_config_show_redacts_secrets(lifecycle):
    for name in ("config", "config_json"):
        out = lifecycle["runs"][name].stdout
        assert "**********" in out
        assert not [m for m in MARKERS if m in out]


@pytest.mark.process
def test_bronze_files_never_rewritten(lifecycle):
    before, after_stream, after_replay = lifecycle["bronze"]
    assert len(before) >= 10
    assert after_stream == before
    assert after_replay == before


@pytest.mark.process
def test_replay_after_checkpoint_loss_rebuilds_equal_tables(lifecycle):
    original, original_wh = lifecycle["original"]
    replayed, replayed_wh = lifecycle["replayed"]
    assert original["silver_crypto_clean"] and original["crypto_anomalies"]
    assert diff_snapshots(original, replayed) == []
    assert diff_snapshots(original_wh, replayed_wh) == []


@pytest.mark.parametrize(
    "setting",
    ["snowflake_schema", "snowflake_database", "snowflake_warehouse", "snowflake_role"],
)
@pytest.mark.parametrize("value", ['PUBLIC"; DROP TABLE SILVER_CRYPTO_CLEAN; --', "a.b", "x y", "1abc"])
def test_injection_in_snowflake_names_is_refused(setting: str, value: str):
    with pytest.raises(ConfigError, match=setting.upper()):
        load_settings(**{setting: value})


def test_injection_refused_by_the_cli_with_one_line(tmp_path):
    run = run_cli(
        "config",
        "show",
        data_dir=tmp_path / "data",
        SNOWFLAKE_SCHEMA='PUBLIC"; DROP TABLE "LOAD_LEDGER"; --',
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "SNOWFLAKE_SCHEMA" in lines[0] and "Snowflake identifier" in lines[0]
