from __future__ import annotations

import subprocess
import sys

import pytest

from app.config import load_settings
from app.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith(("COINLAKE_", "SNOWFLAKE_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_load_settings_defaults_give_local_setup():
    settings = load_settings()
    assert settings.data_dir == "./data"
    assert settings.vs_currencies == ("usd",)
    assert settings.rate_limit_per_minute == 50
    assert settings.effective_warehouse == "emulator"
    assert settings.effective_api_base_url == "https://api.coingecko.com/api/v3"


def test_load_settings_malformed_value_names_key(monkeypatch):
    monkeypatch.setenv("COINLAKE_RATE_LIMIT_PER_MINUTE", "abc")
    with pytest.raises(ConfigError, match="COINLAKE_RATE_LIMIT_PER_MINUTE='abc'"):
        load_settings()


def test_load_settings_secrets_never_shown(monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("COINLAKE_API_KEY", "CG-topsecret")
    settings = load_settings()
    assert settings.snowflake_password.get_secret_value() == "hunter2-secret"
    assert settings.effective_warehouse == "emulator"
    text = repr(settings) + str(settings.redacted())
    assert "hunter2-secret" not in text and "CG-topsecret" not in text


def test_load_settings_secret_in_error_not_echoed(monkeypatch):
    monkeypatch.setenv("COINLAKE_ALERT_WEBHOOK_URL", "https://hooks/secret-token")
    monkeypatch.setenv("COINLAKE_TOP_N", "-3")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "secret-token" not in str(info.value)
    assert "COINLAKE_TOP_N='-3'" in str(info.value)


def test_load_settings_sources_precedence(monkeypatch, tmp_path):
    settings_file = tmp_path / "coinlake.toml"
    settings_file.write_text('COINLAKE_TOP_N = 10\nCOINLAKE_VS_CURRENCIES = "usd,eur"\nzscore_window = 30\n')
    (tmp_path / ".env").write_text("COINLAKE_TOP_N=20\n")
    monkeypatch.setenv("COINLAKE_SETTINGS_FILE", str(settings_file))
    settings = load_settings()
    assert settings.top_n == 20  # .env beats the settings file
    assert settings.vs_currencies == ("usd", "eur")
    assert settings.zscore_window == 30
    monkeypatch.setenv("COINLAKE_TOP_N", "30")
    assert load_settings().top_n == 30  # the environment beats .env


def test_load_settings_unknown_key_in_file(monkeypatch, tmp_path):
    settings_file = tmp_path / "bad.toml"
    settings_file.write_text("COINLAKE_NOPE = 1\n")
    monkeypatch.setenv("COINLAKE_SETTINGS_FILE", str(settings_file))
    with pytest.raises(ConfigError, match="unknown key 'COINLAKE_NOPE'"):
        load_settings()


def test_load_settings_warehouse_snowflake_when_account(monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_ACCOUNT", "xy12345")
    assert load_settings().effective_warehouse == "snowflake"
    monkeypatch.setenv("COINLAKE_WAREHOUSE", "none")
    assert load_settings().effective_warehouse == "none"


def _cli(*args, env_extra=None):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINLAKE_", "SNOWFLAKE_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env)


def test_cli_config_show_redacts_and_tolerates_missing_root():
    out = _cli(
        "config",
        "show",
        env_extra={"COINLAKE_DATA_DIR": "/nonexistent/x", "SNOWFLAKE_PASSWORD": "pw-should-hide"},
    )
    assert out.returncode == 0, out.stderr
    assert "/nonexistent/x" in out.stdout
    assert "pw-should-hide" not in out.stdout + out.stderr
    assert "**********" in out.stdout


def test_cli_config_show_malformed_value_one_line():
    out = _cli("config", "show", env_extra={"COINLAKE_RATE_LIMIT_PER_MINUTE": "abc"})
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0
    assert "COINLAKE_RATE_LIMIT_PER_MINUTE" in out.stderr


def test_cli_help_lists_only_registered_commands():
    out = _cli("--help")
    assert out.returncode == 0
    assert "config" in out.stdout


def test_runtime_knobs_go_through_settings_and_show_in_config_show(monkeypatch, tmp_path):
    monkeypatch.setenv("COINLAKE_DRIVER_MEMORY", "2g")
    monkeypatch.setenv("COINLAKE_IVY_DIR", str(tmp_path / "ivy"))
    monkeypatch.setenv("COINLAKE_ALERT_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("COINLAKE_WAREHOUSE_LOAD_ATTEMPTS", "2")
    shown = load_settings().redacted()
    assert shown["COINLAKE_DRIVER_MEMORY"] == "2g"
    assert shown["COINLAKE_IVY_DIR"] == str(tmp_path / "ivy")
    assert shown["COINLAKE_CACHE_DIR"] is None
    assert shown["COINLAKE_ALERT_MAX_ATTEMPTS"] == 5
    assert shown["COINLAKE_ALERT_BUDGET_SECONDS"] == 3.0
    assert shown["COINLAKE_WAREHOUSE_LOAD_ATTEMPTS"] == 2


def test_load_settings_rejects_a_malformed_driver_memory(monkeypatch):
    monkeypatch.setenv("COINLAKE_DRIVER_MEMORY", "lots")
    with pytest.raises(ConfigError, match="COINLAKE_DRIVER_MEMORY='lots'"):
        load_settings()
