"""Warehouse connections from settings: real Snowflake, or the embedded emulator (fakesnow).

``COINLAKE_WAREHOUSE`` (default: ``snowflake`` when ``SNOWFLAKE_ACCOUNT`` is set, else ``emulator``)
picks the target. The emulator keeps one DuckDB file per database under ``<data root>/warehouse``;
each connection opens and closes it, so the stream and ``coinlake snowflake init`` take turns on the
file (a busy file raises a transient error, retried with backoff).

Readers (``coinlake sql --warehouse``, ``coinlake status``) cannot simply open the file read-only:
DuckDB locks the whole file with ``fcntl`` (exclusive for a read-write open, shared for a
read-only one), so a read-only open fails for as long as another process has it open for writing,
exactly like a read-write open. Instead a reader takes a shared lock itself, copies the file (and
its WAL) while no writer can hold it, drops the lock and queries the copy: the writer is kept out
only for the copy, and a reader waits at most ``COINLAKE_WAREHOUSE_READ_WAIT_SECONDS`` for a
writer to let go, then fails with a message that says so.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from app.errors import ConfigError, LoadTerminalError, LoadTransientError
from app.paths import local_path
from app.sinks.warehouse.loader import SnowflakeLoader, map_error
from app.sinks.warehouse.sql import Dialect

if TYPE_CHECKING:
    from app.config import Settings
    from app.paths import Layout

logger = logging.getLogger(__name__)

EMULATOR_DATABASE = "COINLAKE"
EMULATOR_SCHEMA = "PUBLIC"
LOGIN_TIMEOUT_SECONDS = 60
NETWORK_TIMEOUT_SECONDS = 300
STATEMENT_TIMEOUT_SECONDS = 1800
CONNECT_ATTEMPTS = 4
READ_POLL_SECONDS = 0.1


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

    def __init__(self, instance: Any, conn: Any, cleanup: Callable[[], None] | None = None) -> None:
        self._instance = instance
        self._conn = conn
        self._cleanup = cleanup

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            self._instance.duck_conn.close()
            if self._cleanup is not None:
                self._cleanup()


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


def emulator_file(db_dir: str) -> str:
    """The emulator's DuckDB file in ``db_dir`` (fakesnow names it after the database)."""
    return os.path.join(local_path(db_dir), f"{EMULATOR_DATABASE}.db")


def _try_shared_lock(fd: int) -> bool:
    """Take a shared lock on the whole file without waiting; False when a writer holds it.

    An open-file-description lock where Linux has one: it conflicts with DuckDB's ``fcntl`` locks
    in other processes *and* in this one, and closing it never drops a lock DuckDB holds in this
    process (closing any descriptor drops all of a process's classic ``fcntl`` locks on the file).
    """
    import fcntl

    try:
        if hasattr(fcntl, "F_OFD_SETLK"):
            # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), padding.
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("@hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
        else:  # pragma: no cover - non-Linux Unix
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def snapshot_emulator_file(
    db_file: str,
    dest_dir: str,
    *,
    wait_seconds: float,
    poll_seconds: float = READ_POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Copy the emulator's database file (and its WAL, if any) into ``dest_dir`` under a shared lock.

    Args:
        db_file: the emulator's DuckDB file.
        dest_dir: an empty folder for the copy (same file name).
        wait_seconds: how long to wait for a writer to release the file.
        poll_seconds: the pause between two attempts to lock it.
        clock: monotonic seconds (tests pass a fake one).
        sleep: pauses between attempts (tests pass a fake one).

    Returns:
        The path of the copy.

    Raises:
        LoadTransientError: another process kept the file open for writing for ``wait_seconds``.
    """
    deadline = clock() + wait_seconds
    while True:
        fd = os.open(db_file, os.O_RDONLY)
        try:
            if _try_shared_lock(fd):
                copy = os.path.join(dest_dir, os.path.basename(db_file))
                shutil.copyfile(db_file, copy)
                if os.path.exists(db_file + ".wal"):
                    shutil.copyfile(db_file + ".wal", copy + ".wal")
                return copy
        finally:
            os.close(fd)  # releases the shared lock
        if clock() >= deadline:
            raise LoadTransientError(
                f"the warehouse emulator is busy: another process (a running stream, 'coinlake run' or "
                f"'snowflake init') kept {db_file} open for writing for {wait_seconds:g} s; try again, "
                f"or raise COINLAKE_WAREHOUSE_READ_WAIT_SECONDS"
            )
        sleep(poll_seconds)


def emulator_read_connector(db_dir: str, *, wait_seconds: float) -> WarehouseConnector:
    """Read-only access to the emulator while another process may be writing to it.

    Each connection queries a private copy of the database file taken under a shared lock (see
    the module docstring) and deletes it on close; writes to it are lost by design.

    Args:
        db_dir: the emulator's folder.
        wait_seconds: how long a connection waits for a writer to release the file.

    Raises:
        LoadTerminalError: (on connect) the emulator has no database file yet.
        LoadTransientError: (on connect) a writer kept the file for ``wait_seconds``.
    """
    db_file = emulator_file(db_dir)

    def connect() -> Any:
        from fakesnow.instance import FakeSnow

        if not os.path.isfile(db_file):
            raise LoadTerminalError(
                f"the warehouse emulator has no database yet ({db_file} does not exist): nothing "
                "has been loaded; run the stream or 'coinlake snowflake init' first"
            )
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
        snapshot = tempfile.mkdtemp(prefix="coinlake-warehouse-read-")
        instance = None
        try:
            snapshot_emulator_file(db_file, snapshot, wait_seconds=wait_seconds)
            instance = FakeSnow(db_path=snapshot)
            conn = instance.connect(database=EMULATOR_DATABASE, schema=EMULATOR_SCHEMA)
        except BaseException:
            if instance is not None:
                instance.duck_conn.close()
            shutil.rmtree(snapshot, ignore_errors=True)
            raise
        return _EmulatorConnection(
            instance, conn, cleanup=lambda: shutil.rmtree(snapshot, ignore_errors=True)
        )

    def write_pandas(conn: Any, df: Any, table_name: str, **kwargs: Any) -> Any:
        raise LoadTerminalError("the warehouse read connector cannot write")

    return WarehouseConnector("emulator", connect, write_pandas, "emulator")


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


def connector_from_settings(
    settings: Settings, layout: Layout, *, read_only: bool = False
) -> WarehouseConnector | None:
    """The warehouse in force, or ``None`` when ``COINLAKE_WAREHOUSE=none``.

    Args:
        settings: the settings.
        layout: the storage layout (the emulator's folder).
        read_only: for queries that must work while a stream writes: the emulator is then read
            from a snapshot (:func:`emulator_read_connector`); Snowflake itself needs nothing.
    """
    kind = settings.effective_warehouse
    if kind == "none":
        return None
    if kind == "emulator":
        if read_only:
            return emulator_read_connector(
                layout.warehouse_dir, wait_seconds=settings.warehouse_read_wait_seconds
            )
        return emulator_connector(layout.warehouse_dir)
    return snowflake_connector(settings)


def _with_retry(connect: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a connect function: map errors; retry transient ones with exponential backoff."""

    @retry(
        retry=retry_if_exception_type(LoadTransientError),
        stop=stop_after_attempt(CONNECT_ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    def attempt() -> Any:
        try:
            return connect()
        except Exception as exc:
            mapped = map_error(exc, "connect")
            logger.warning("warehouse connect failed: %s", mapped)
            raise mapped from exc

    return attempt
