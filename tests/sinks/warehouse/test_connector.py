"""Connection settings for real Snowflake (pure) and the emulator default."""

from __future__ import annotations

import pytest

from app.config import load_settings
from app.errors import ConfigError
from app.paths import Layout
from app.sinks.warehouse.connector import connector_from_settings, snowflake_connect_kwargs

BASE = {
    "snowflake_account": "acme-xy123",
    "snowflake_user": "loader",
    "snowflake_database": "ANALYTICS",
    "snowflake_schema": "CRYPTO",
    "snowflake_role": "LOADER",
    "snowflake_warehouse": "WH_XS",
}


def _kwargs(**extra):
    return snowflake_connect_kwargs(load_settings(**BASE, **extra))


def test_password_auth():
    kw = _kwargs(snowflake_password="s3cret")
    assert kw["authenticator"] == "snowflake" and kw["password"] == "s3cret"
    assert kw["role"] == "LOADER" and kw["warehouse"] == "WH_XS" and kw["schema"] == "CRYPTO"
    assert kw["login_timeout"] > 0 and kw["network_timeout"] > 0
    assert kw["session_parameters"]["TIMEZONE"] == "UTC"


def test_key_pair_auth():
    kw = _kwargs(snowflake_private_key_path="/keys/rsa.p8", snowflake_private_key_passphrase="pp")
    assert kw["authenticator"] == "SNOWFLAKE_JWT"
    assert kw["private_key_file"] == "/keys/rsa.p8" and kw["private_key_file_pwd"] == "pp"
    assert "password" not in kw


def test_externalbrowser_and_oauth():
    assert _kwargs(snowflake_authenticator="externalbrowser")["authenticator"] == "externalbrowser"
    kw = _kwargs(snowflake_token="tok")
    assert kw["authenticator"] == "oauth" and kw["token"] == "tok"


def test_missing_settings_are_named():
    with pytest.raises(ConfigError, match="SNOWFLAKE_PASSWORD"):
        _kwargs()
    with pytest.raises(ConfigError, match="SNOWFLAKE_DATABASE"):
        snowflake_connect_kwargs(
            load_settings(snowflake_account="a", snowflake_user="u", snowflake_password="p")
        )


def test_default_is_emulator_without_account(tmp_path, monkeypatch):
    monkeypatch.delenv("SNOWFLAKE_ACCOUNT", raising=False)
    monkeypatch.delenv("COINLAKE_WAREHOUSE", raising=False)
    layout = Layout.from_root(str(tmp_path))
    connector = connector_from_settings(load_settings(data_dir=str(tmp_path)), layout)
    assert connector is not None and connector.kind == "emulator" and connector.dialect == "emulator"
    assert connector_from_settings(load_settings(warehouse="none"), layout) is None
    assert connector_from_settings(load_settings(**BASE, snowflake_password="p"), layout).kind == "snowflake"
