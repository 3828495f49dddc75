"""The Databricks Asset Bundle: structure, secrets, and entry points that exist and run locally."""

from __future__ import annotations

import configparser
import copy
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


# The Jobs API's documented health metrics (JobsHealthMetric) and the notification event each one
# raises; GREATER_THAN is the only operator the API defines.
HEALTH_EVENT = {
    "RUN_DURATION_SECONDS": "on_duration_warning_threshold_exceeded",
    "STREAMING_BACKLOG_BYTES": "on_streaming_backlog_exceeded",
    "STREAMING_BACKLOG_RECORDS": "on_streaming_backlog_exceeded",
    "STREAMING_BACKLOG_SECONDS": "on_streaming_backlog_exceeded",
    "STREAMING_BACKLOG_FILES": "on_streaming_backlog_exceeded",
}
EMAIL_VAR = "${var.notification_email}"
DESTINATION_VAR = "${var.notification_destination_id}"


def notification_problems(bundle: dict) -> list[str]:
    """What is missing from the failure notifications and health rules of each job (empty: none)."""
    problems = []
    for var in ("notification_email", "notification_destination_id"):
        if var not in bundle.get("variables", {}):
            problems.append(f"variable {var} is not declared")
    for job_key, job in bundle["resources"]["jobs"].items():
        email = job.get("email_notifications") or {}
        webhook = job.get("webhook_notifications") or {}
        events = {"on_failure"}
        for rule in (job.get("health") or {}).get("rules", []):
            metric = rule.get("metric")
            if metric not in HEALTH_EVENT:
                problems.append(f"{job_key}: health metric {metric!r} is not one the Jobs API documents")
                continue
            if rule.get("op") != "GREATER_THAN":
                problems.append(f"{job_key}: health rule {metric} has op {rule.get('op')!r}")
            value = _resolve(str(rule.get("value")), bundle)
            if not value.isdigit() or int(value) <= 0:
                problems.append(
                    f"{job_key}: health rule {metric} has value {value!r}, not a positive integer"
                )
            events.add(HEALTH_EVENT[metric])
        for event in sorted(events):
            if EMAIL_VAR not in (email.get(event) or []):
                problems.append(f"{job_key}: email_notifications.{event} does not mail {EMAIL_VAR}")
            if {"id": DESTINATION_VAR} not in (webhook.get(event) or []):
                problems.append(f"{job_key}: webhook_notifications.{event} does not call {DESTINATION_VAR}")
    return problems


def test_bundle_notifies_on_failure_and_health_for_every_job(bundle):
    assert notification_problems(bundle) == []
    jobs = bundle["resources"]["jobs"]
    stream_metrics = {r["metric"] for r in jobs["coinlake_stream"]["health"]["rules"]}
    assert stream_metrics == {"STREAMING_BACKLOG_SECONDS", "STREAMING_BACKLOG_FILES"}
    assert [r["metric"] for r in jobs["coinlake_batch"]["health"]["rules"]] == ["RUN_DURATION_SECONDS"]
    # Who is notified is the operator's choice: the variables have no made-up default.
    for var in ("notification_email", "notification_destination_id"):
        assert "default" not in bundle["variables"][var]


def test_notification_problems_names_a_job_without_notifications_and_a_bad_health_rule(bundle):
    broken = copy.deepcopy(bundle)
    del broken["resources"]["jobs"]["coinlake_ingest"]["email_notifications"]
    broken["resources"]["jobs"]["coinlake_stream"]["webhook_notifications"].pop(
        "on_streaming_backlog_exceeded"
    )
    broken["resources"]["jobs"]["coinlake_batch"]["health"]["rules"].append(
        {"metric": "CPU_PERCENT", "op": "GREATER_THAN", "value": 90}
    )
    broken["resources"]["jobs"]["coinlake_batch"]["health"]["rules"][0]["value"] = "soon"

    problems = notification_problems(broken)

    assert problems == [
        "coinlake_ingest: email_notifications.on_failure does not mail ${var.notification_email}",
        "coinlake_stream: webhook_notifications.on_streaming_backlog_exceeded does not call "
        "${var.notification_destination_id}",
        "coinlake_batch: health rule RUN_DURATION_SECONDS has value 'soon', not a positive integer",
        "coinlake_batch: health metric 'CPU_PERCENT' is not one the Jobs API documents",
    ]
