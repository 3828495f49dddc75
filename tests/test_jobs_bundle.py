"""The Databricks Asset Bundle: structure, secrets, and entry points that exist and run locally."""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "databricks.yml"
SECRET_REF = re.compile(r"^\{\{secrets/[^/{}]+/[^/{}]+\}\}$")
SECRET_KEYS = ("PASSWORD", "API_KEY", "PASSPHRASE", "TOKEN", "WEBHOOK", "ACCOUNT", "USER")


@pytest.fixture(scope="module")
def bundle() -> dict:
    return yaml.safe_load(BUNDLE.read_text(encoding="utf-8"))


def _tasks(bundle: dict):
    for job_key, job in bundle["resources"]["jobs"].items():
        for task in job["tasks"]:
            yield job_key, job, task


def _cluster(job: dict, task: dict) -> dict:
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    return clusters[task["job_cluster_key"]]


def _resolve(value: str, bundle: dict) -> str:
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(bundle["variables"][m.group(1)]["default"]), value)


def test_bundle_defines_continuous_ingest_continuous_stream_and_scheduled_batch(bundle):
    jobs = bundle["resources"]["jobs"]
    assert bundle["bundle"]["name"] == "coinlake"
    assert set(jobs) == {"coinlake_ingest", "coinlake_stream", "coinlake_batch"}
    assert "continuous" in jobs["coinlake_ingest"] and "schedule" not in jobs["coinlake_ingest"]
    assert "continuous" in jobs["coinlake_stream"]
    assert jobs["coinlake_batch"]["schedule"]["quartz_cron_expression"]
    assert "continuous" not in jobs["coinlake_batch"]
    file_of = {key: Path(task["spark_python_task"]["python_file"]).name for key, _, task in _tasks(bundle)}
    assert file_of == {
        "coinlake_ingest": "ingest.py",
        "coinlake_stream": "stream.py",
        "coinlake_batch": "batch.py",
    }
    stream_params = jobs["coinlake_stream"]["tasks"][0]["spark_python_task"]["parameters"]
    assert stream_params[stream_params.index("--trigger") + 1] == "interval"


def test_bundle_builds_the_wheel_from_setup_cfg(bundle):
    artifact = bundle["artifacts"]["coinlake_wheel"]
    assert artifact["type"] == "whl"
    assert (REPO / artifact["path"] / "setup.cfg").is_file()
    assert "wheel" in artifact["build"]
    for _, _, task in _tasks(bundle):
        assert {"whl": "./dist/*.whl"} in task["libraries"]
    name = configparser.ConfigParser()
    name.read(REPO / "setup.cfg")
    assert name["metadata"]["name"] == "coinlake"


def test_bundle_data_root_is_a_volume_or_dbfs_path(bundle):
    root = bundle["variables"]["data_root"]["default"]
    assert root.startswith(("/Volumes/", "dbfs:/"))
    for _, job, task in _tasks(bundle):
        env = _cluster(job, task)["spark_env_vars"]
        assert _resolve(env["COINLAKE_DATA_DIR"], bundle) == root
        params = task["spark_python_task"]["parameters"]
        assert _resolve(params[params.index("--data-dir") + 1], bundle) == root


def test_bundle_takes_credentials_only_from_the_secret_scope(bundle):
    scope = bundle["variables"]["secret_scope"]["default"]
    for job_key, job, task in _tasks(bundle):
        env = _cluster(job, task)["spark_env_vars"]
        for key, value in env.items():
            if any(word in key for word in SECRET_KEYS):
                assert SECRET_REF.match(_resolve(value, bundle)), (
                    f"{job_key}: {key} is not a secret reference"
                )
                assert f"/{scope}/" in _resolve(value, bundle)
        if job_key != "coinlake_ingest":  # the pipeline loads Snowflake
            for key in ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_PASSWORD"):
                assert SECRET_REF.match(_resolve(env[key], bundle))


def _load_job(path: Path):
    spec = importlib.util.spec_from_file_location(f"coinlake_job_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundle_entry_points_exist_and_accept_their_parameters(bundle):
    for job_key, _, task in _tasks(bundle):
        path = (REPO / task["spark_python_task"]["python_file"]).resolve()
        assert path.is_file(), f"{job_key}: {path} missing"
        module = _load_job(path)
        params = [_resolve(p, bundle) for p in task["spark_python_task"]["parameters"]]
        module.build_parser().parse_args(params)  # exits with status 2 on an unknown argument


@pytest.mark.parametrize("name", ["ingest", "stream", "batch"])
def test_job_entry_point_runs_with_help(name):
    out = subprocess.run(
        [sys.executable, str(REPO / "jobs" / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: jobs/{name}.py")
    assert "--data-dir" in out.stdout
