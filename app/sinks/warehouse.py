"""Warehouse connections from settings: real Snowflake, or the embedded emulator (fakesnow).

``COINLAKE_WAREHOUSE`` (default: ``snowflake`` when ``SNOWFLAKE_ACCOUNT`` is set, else ``emulator``)
picks the target. The emulator keeps one DuckDB file per database under ``<data root>/warehouse``;
each connection opens and closes it, so a CLI query and the stream can take turns on the file (a
busy file raises a transient error, retried with backoff).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.errors import ConfigError, LoadTransientError
from app.paths import local_path
from app.retry import RetryPolicy
from app.sinks.snowflake import Dialect
from app.sinks.snowflake_loader import SnowflakeLoader, map_error

if TYPE_CHECKING:
    from app.config import Settings
    from app.paths import Layout

logger = logging.getLogger(__name__)

EMULATOR_DATABASE = "COINLAKE"
EMULATOR_SCHEMA = "PUBLIC"
LOGIN_TIMEOUT_SECONDS = 60
NETWORK_TIMEOUT_SECONDS = 300
STATEMENT_TIMEOUT_SECONDS = 1800
CONNECT_RETRY = RetryPolicy(
    max_attempts=4, backoff_initial=0.5, backoff_max=10.0, transient=(LoadTransientError,)
)
"""Connecting: transient errors (network, throttling) are retried with 0.5, 1, 2 s waits."""


@dataclass(frozen=True)
class WarehouseConnector:
    """How to reach the warehouse: a connection factory, its ``write_pandas`` and its dialect."""

    kind: str
    connect: Callable[[], Any]
    write_pandas: Callable[..., Any]
    dialect: Dialect

    def loader(self) -> SnowflakeLoader:
        """The loader bound to this connector."""
        return SnowflakeLoader(self.connect, self.write_pandas, dialect=self.dialect)


class _EmulatorConnection:
    """A fakesnow connection that also closes its private DuckDB instance (releasing the file)."""

    def __init__(self, instance: Any, conn: Any) -> None:
        self._instance = instance
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            self._instance.duck_conn.close()


def emulator_connector(db_dir: str) -> WarehouseConnector:
    """The embedded emulator persisted in ``db_dir`` (created if missing).

    Args:
        db_dir: a local folder (``dbfs:/`` paths are mapped to the ``/dbfs`` mount).
    """
    path = local_path(db_dir)

    def connect() -> Any:
        from fakesnow.instance import FakeSnow

        # fakesnow warns about an extra Arrow copy on every fetch: noise, not a problem here.
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
        os.makedirs(path, exist_ok=True)
        instance = FakeSnow(db_path=path)
        try:
            conn = instance.connect(database=EMULATOR_DATABASE, schema=EMULATOR_SCHEMA)
        except BaseException:
            instance.duck_conn.close()
            raise
        return _EmulatorConnection(instance, conn)

    def write_pandas(conn: Any, df: Any, table_name: str, **kwargs: Any) -> Any:
        from fakesnow.pandas_tools import write_pandas as fake_write_pandas

        return fake_write_pandas(
            conn._conn if isinstance(conn, _EmulatorConnection) else conn, df, table_name, **kwargs
        )

    return WarehouseConnector("emulator", _with_retry(connect), write_pandas, "emulator")


def snowflake_connect_kwargs(settings: Settings) -> dict[str, Any]:
    """Connector keyword arguments for real Snowflake, choosing the authentication from settings.

    ``SNOWFLAKE_AUTHENTICATOR`` wins (``externalbrowser``, ``oauth``, ``snowflake_jwt``, ...);
    otherwise a token means OAuth, a private key path means key-pair, else a password.

    Raises:
        ConfigError: a required setting is missing (names it).
    """
    required = {
        "SNOWFLAKE_ACCOUNT": settings.snowflake_account,
        "SNOWFLAKE_DATABASE": settings.snowflake_database,
        "SNOWFLAKE_SCHEMA": settings.snowflake_schema,
    }
    missing = [k for k, v in required.items() if not v]
    kwargs: dict[str, Any] = {
        "account": settings.snowflake_account,
        "database": settings.snowflake_database,
        "schema": settings.snowflake_schema,
        "login_timeout": LOGIN_TIMEOUT_SECONDS,
        "network_timeout": NETWORK_TIMEOUT_SECONDS,
        "application": "coinlake",
        "session_parameters": {
            "QUERY_TAG": "coinlake",
            "STATEMENT_TIMEOUT_IN_SECONDS": STATEMENT_TIMEOUT_SECONDS,
            "TIMEZONE": "UTC",
        },
    }
    for name in ("user", "role", "warehouse"):
        value = getattr(settings, f"snowflake_{name}")
        if value:
            kwargs[name] = value
    authenticator = (settings.snowflake_authenticator or "").strip().lower()
    if not authenticator:
        if settings.snowflake_token:
            authenticator = "oauth"
        elif settings.snowflake_private_key_path:
            authenticator = "snowflake_jwt"
        else:
            authenticator = "snowflake"
    if authenticator == "oauth":
        if not settings.snowflake_token:
            missing.append("SNOWFLAKE_TOKEN")
        else:
            kwargs["token"] = settings.snowflake_token.get_secret_value()
    elif authenticator == "snowflake_jwt":
        if not settings.snowflake_private_key_path:
            missing.append("SNOWFLAKE_PRIVATE_KEY_PATH")
        kwargs["private_key_file"] = settings.snowflake_private_key_path
        if settings.snowflake_private_key_passphrase:
            kwargs["private_key_file_pwd"] = settings.snowflake_private_key_passphrase.get_secret_value()
    elif authenticator == "snowflake":
        if not settings.snowflake_password:
            missing.append("SNOWFLAKE_PASSWORD (or SNOWFLAKE_PRIVATE_KEY_PATH / SNOWFLAKE_TOKEN)")
        else:
            kwargs["password"] = settings.snowflake_password.get_secret_value()
    if authenticator != "oauth" and not settings.snowflake_user:
        missing.append("SNOWFLAKE_USER")
    if missing:
        raise ConfigError(f"Snowflake authentication={authenticator}: missing {', '.join(missing)}")
    kwargs["authenticator"] = authenticator.upper() if authenticator == "snowflake_jwt" else authenticator
    return kwargs


def snowflake_connector(settings: Settings) -> WarehouseConnector:
    """Real Snowflake (transient connection errors retried with exponential backoff)."""
    kwargs = snowflake_connect_kwargs(settings)

    def connect() -> Any:
        import snowflake.connector

        return snowflake.connector.connect(**kwargs)

    def write_pandas(conn: Any, df: Any, table_name: str, **kw: Any) -> Any:
        from snowflake.connector.pandas_tools import write_pandas as sf_write_pandas

        return sf_write_pandas(conn, df, table_name, **kw)

    return WarehouseConnector("snowflake", _with_retry(connect), write_pandas, "snowflake")


def connector_from_settings(settings: Settings, layout: Layout) -> WarehouseConnector | None:
    """The warehouse in force, or ``None`` when ``COINLAKE_WAREHOUSE=none``."""
    kind = settings.effective_warehouse
    if kind == "none":
        return None
    if kind == "emulator":
        return emulator_connector(layout.warehouse_dir)
    return snowflake_connector(settings)


def _with_retry(connect: Callable[[], Any], policy: RetryPolicy = CONNECT_RETRY) -> Callable[[], Any]:
    """Wrap a connect function: map errors; retry transient ones under ``policy``."""

    def attempt() -> Any:
        try:
            return connect()
        except Exception as exc:
            mapped = map_error(exc, "connect")
            logger.warning("warehouse connect failed: %s", mapped)
            raise mapped from exc

    def connect_with_retry() -> Any:
        return policy.retrying()(attempt)

    return connect_with_retry
