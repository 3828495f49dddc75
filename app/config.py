"""Typed, immutable settings, loaded once from the environment, a ``.env`` file and a settings file.

Precedence, highest first: explicit keyword arguments, environment variables, ``.env`` in the
working directory, the TOML file named by ``COINLAKE_SETTINGS_FILE``, then the defaults below.
Every source uses the same key names (``COINLAKE_*`` and ``SNOWFLAKE_*``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.errors import ConfigError

ENV_PREFIX = "COINLAKE_"
SETTINGS_FILE_ENV = "COINLAKE_SETTINGS_FILE"
_SNOWFLAKE_FIELDS = (
    "account",
    "user",
    "password",
    "private_key_path",
    "private_key_passphrase",
    "authenticator",
    "token",
    "role",
    "warehouse",
    "database",
    "schema",
)
# Snowflake object names (database, schema, warehouse, role) are unquoted identifiers: letters,
# digits, ``_`` and ``$``, not starting with a digit. Anything else (quotes, dots, spaces, ``;``)
# is refused on load, so a setting can never smuggle SQL into a ``USE``/DDL statement.
_SNOWFLAKE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")
API_HOSTS = {
    "public": "https://api.coingecko.com/api/v3",
    "demo": "https://api.coingecko.com/api/v3",
    "pro": "https://pro-api.coingecko.com/api/v3",
}


def env_name(field_name: str) -> str:
    """The environment variable that sets a settings field (``rate_limit_per_minute`` -> ``COINLAKE_RATE_LIMIT_PER_MINUTE``)."""
    if field_name.startswith("snowflake_") and field_name[len("snowflake_") :] in _SNOWFLAKE_FIELDS:
        return field_name.upper()
    return ENV_PREFIX + field_name.upper()


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the optional TOML settings file; keys are the environment names or field names."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        if not path:
            return
        file = Path(path)
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{SETTINGS_FILE_ENV}={path!r}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{SETTINGS_FILE_ENV}={path!r}: not valid TOML ({exc})") from exc
        fields = settings_cls.model_fields
        by_env = {env_name(name): name for name in fields}
        for key, value in raw.items():
            name = by_env.get(key.upper()) or (key.lower() if key.lower() in fields else None)
            if name is None:
                raise ConfigError(f"{SETTINGS_FILE_ENV}={path!r}: unknown key {key!r}")
            self._values[name] = value

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def _snowflake_alias(name: str) -> Any:
    return Field(default=None, validation_alias="SNOWFLAKE_" + name.upper())


class Settings(BaseSettings):
    """Every coinlake setting. Immutable; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    # --- storage ---
    data_dir: str = "./data"
    """Data root: a local path, ``dbfs:/...`` or a Unity Catalog volume path."""

    # --- source (CoinGecko) ---
    api_plan: Literal["public", "demo", "pro"] = "public"
    """Which CoinGecko plan: picks the default host and the key header."""
    api_base_url: str | None = None
    """Base URL including ``/api/v3``; default by plan. Point it at the simulator or a proxy."""
    api_key: SecretStr | None = None
    """CoinGecko API key (secret). Required for the demo and pro plans."""
    vs_currencies: Annotated[tuple[str, ...], NoDecode] = ("usd",)
    """Quote currencies, comma-separated in the environment."""
    coins: Annotated[tuple[str, ...], NoDecode] = ()
    """Explicit coin ids, comma-separated; empty means the top ``top_n`` by market cap."""
    top_n: int = Field(default=250, ge=1, le=20000)
    """Universe size when ``coins`` is empty."""
    per_page: int = Field(default=250, ge=1, le=250)
    """Records per /coins/markets page (CoinGecko allows at most 250)."""
    rate_limit_per_minute: int = Field(default=50, ge=1, le=100000)
    """Client-side limit on API calls per minute, shared by all calls of the process."""
    poll_interval_seconds: float = Field(default=60.0, gt=0)
    """Ingester cycle period in seconds (CoinGecko caches /coins/markets for 60 s)."""
    http_timeout_seconds: float = Field(default=30.0, gt=0)
    """Per-request connect+read timeout in seconds."""
    max_attempts: int = Field(default=6, ge=1, le=50)
    """Attempts per API page before it is reported failed."""
    max_retry_seconds: float = Field(default=300.0, gt=0)
    """Upper bound on the total time spent retrying one page, in seconds."""

    # --- stream ---
    max_files_per_trigger: int = Field(default=100, ge=1)
    """Bronze files per micro-batch."""
    bronze_lookback_days: int = Field(default=0, ge=0)
    """``files`` source: only list bronze date folders this many days back (0: all of them);
    ``listing`` source: a new checkpoint starts this many days back (0: at the first file)."""
    bronze_source: Literal["listing", "files"] = "listing"
    """How the stream reads bronze: ``listing`` (a trigger lists only the folders from the admission
    window's day on; bounded checkpoint state) or ``files`` (Spark's file source: lists all of bronze
    on every trigger and logs every file read, for storage plain Python file I/O cannot reach)."""
    bronze_late_minutes: float = Field(default=60.0, ge=0)
    """``listing`` source, the admission window: a file landing late whose fetch time (in its name) is
    at most this many minutes older than the newest file read is found by its name, an older one by
    its modification time; both are read. The offset keeps the names read in the window."""
    optimize_every_batches: int = Field(default=100, ge=0)
    """Compact the Delta tables' small files (OPTIMIZE) after every N-th batch (0: never)."""
    delta_log_retention_days: int = Field(default=30, ge=1)
    """Delta ``logRetentionDuration`` of every pipeline table, in days: how long the transaction log
    (and so time travel) reaches back; log files older than this are removed at checkpoints."""
    delta_deleted_file_retention_hours: int = Field(default=168, ge=168)
    """Delta ``deletedFileRetentionDuration``, in hours (at least 168, Delta's own safety floor):
    ``coinlake maintain``'s VACUUM keeps files removed more recently than this. A batch re-run after
    a crash reads silver at the version before it, so this bounds how long a stream may stay down."""
    delta_checkpoint_interval: int = Field(default=10, ge=1)
    """Delta ``checkpointInterval``: commits between two Delta log checkpoints of a table."""
    working_set_lookback_hours: int = Field(default=6, ge=0, le=24 * 366)
    """Silver history a batch reads before its earliest day, in hours: it must hold the W+1 versions
    the z-scores need; a key with fewer there is read further back (extra Spark jobs)."""
    max_collapsed_observations: int = Field(default=240, ge=1)
    """Most observations a silver version keeps in ``collapsed_observations`` (its latest ones):
    the bound on the array of a coin whose values never change while ``last_updated`` moves."""
    kernel_driver_max_rows: int = Field(default=400_000, ge=0)
    """Largest batch plus working set (rows) whose kernels run on the driver, collected once as
    Arrow; above it they run on the executors, by hash bucket of the key (0: always there)."""
    zscore_window: int = Field(default=60, ge=2)
    """Anomaly detector: number of previous observations in the window (W)."""
    zscore_min_periods: int = Field(default=20, ge=2)
    """Anomaly detector: fewest previous observations needed for a score."""
    zscore_threshold: float = Field(default=3.0, gt=0)
    """Anomaly detector: |z| at or above which an observation is flagged."""
    alert_webhook_url: SecretStr | None = None
    """Optional URL that receives a JSON POST per newly flagged anomaly and data-quality alert
    (secret: may hold a token)."""
    dq_min_score: float = Field(default=0.95, ge=0.0, le=1.0)
    """Data-quality alert when a batch's score (the share of its records passing every
    expectation, 0 to 1) is below this."""
    dq_max_rule_failures: int = Field(default=100, ge=0)
    """Data-quality alert when one rule fails more records than this in a batch."""
    alert_max_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts per alert on a transient failure (connection error, 408/425/429/5xx)."""
    alert_budget_seconds: float = Field(default=3.0, gt=0)
    """Time all the alerts of one batch may take, retries included, in seconds."""

    # --- warehouse ---
    warehouse: Literal["snowflake", "emulator", "none"] | None = None
    """Warehouse target; default ``snowflake`` when SNOWFLAKE_ACCOUNT is set, else ``emulator``."""
    warehouse_on_error: Literal["fail", "continue"] = "fail"
    """On a warehouse load error: fail the batch (retried on restart) or continue and catch up later."""
    warehouse_read_wait_seconds: float = Field(default=30.0, ge=0)
    """How long ``sql --warehouse`` and ``status`` wait for the emulator's file while another process
    (a running stream) writes to it, in seconds; then they fail with a message saying so."""
    warehouse_load_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts per batch load on a transient warehouse error (1 s, 2 s, ... up to 30 s between)."""
    snowflake_account: str | None = _snowflake_alias("account")
    snowflake_user: str | None = _snowflake_alias("user")
    snowflake_password: SecretStr | None = _snowflake_alias("password")
    snowflake_private_key_path: str | None = _snowflake_alias("private_key_path")
    snowflake_private_key_passphrase: SecretStr | None = _snowflake_alias("private_key_passphrase")
    snowflake_authenticator: str | None = _snowflake_alias("authenticator")
    snowflake_token: SecretStr | None = _snowflake_alias("token")
    snowflake_role: str | None = _snowflake_alias("role")
    snowflake_warehouse: str | None = _snowflake_alias("warehouse")
    snowflake_database: str | None = _snowflake_alias("database")
    snowflake_schema: str | None = _snowflake_alias("schema")

    # --- status (alerting on lag: ``coinlake status`` exits 1 when one is exceeded) ---
    status_max_lag_seconds: float = Field(default=900.0, gt=0)
    """Largest tolerated stream lag in seconds: per currency, the newest bronze ``fetched_at`` minus
    the newest silver observation (``last_updated``); a currency with bronze and no silver exceeds it."""
    status_max_lag_files: int = Field(default=500, ge=0)
    """Largest tolerated number of bronze files the stream's checkpoint has not committed."""
    status_max_ingest_lag_seconds: float = Field(default=0.0, ge=0)
    """Largest tolerated time since the last ingest cycle, in seconds (0: not checked)."""

    # --- runtime ---
    spark_master: str = "local[*]"
    """Spark master for local runs; ignored where a session already exists (Databricks)."""
    shuffle_partitions: int = Field(default=4, ge=1)
    """spark.sql.shuffle.partitions for local runs."""
    spark_ui: bool = False
    """Start the Spark UI (off by default)."""
    driver_memory: str = Field(default="4g", pattern=r"(?i)^[0-9]+([kmgtp]b?|b)?$")
    """spark.driver.memory for local runs (``4g``, ``1024m``); the JVM reads it at start only."""
    ivy_dir: str | None = None
    """Ivy cache for the Delta jars (spark.jars.ivy); Spark's default (``~/.ivy2``) when unset."""
    cache_dir: str | None = None
    """Where coinlake records the resolved jar list; ``~/.cache/coinlake`` when unset."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """Log format: JSON lines, human text, or auto (text on a terminal, JSON otherwise)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("vs_currencies", "coins", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(str(part).strip().lower() for part in value if str(part).strip())
        return value

    @field_validator("vs_currencies")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one vs currency is required")
        for cur in value:
            if not cur.isalnum():
                raise ValueError(f"invalid currency code {cur!r}")
        return value

    @field_validator(
        "snowflake_database", "snowflake_schema", "snowflake_warehouse", "snowflake_role", mode="before"
    )
    @classmethod
    def _snowflake_name(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not _SNOWFLAKE_NAME.match(value):
            raise ValueError(
                "expected a Snowflake identifier (letters, digits, _ or $, not starting with a digit)"
            )
        return value

    @field_validator("warehouse", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get(SETTINGS_FILE_ENV)
        return (init_settings, env_settings, dotenv_settings, _TomlFileSource(settings_cls, path))

    # --- derived values ---
    @property
    def effective_warehouse(self) -> str:
        """The warehouse in force: the setting, else ``snowflake`` with an account, else ``emulator``."""
        if self.warehouse:
            return self.warehouse
        return "snowflake" if self.snowflake_account else "emulator"

    @property
    def effective_api_base_url(self) -> str:
        """The base URL in force, without a trailing slash."""
        return (self.api_base_url or API_HOSTS[self.api_plan]).rstrip("/")

    def redacted(self) -> dict[str, Any]:
        """Every setting by its environment name, secrets replaced by ``**********``."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********"
            elif isinstance(value, tuple):
                value = ",".join(value)
            out[env_name(name)] = value
        out["(effective) COINLAKE_WAREHOUSE"] = self.effective_warehouse
        out["(effective) COINLAKE_API_BASE_URL"] = self.effective_api_base_url
        return out


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings once.

    Args:
        **overrides: field values that win over every other source (used by tests and the CLI).

    Returns:
        The frozen settings.

    Raises:
        ConfigError: a value is malformed; the message names the key and the bad value.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err.get("loc") or ("?",)
            field = str(loc[0])
            key = field if field.isupper() else env_name(field)
            bad = _raw_value(field, key, overrides)
            shown = "" if bad is None else f"={bad!r}"
            problems.append(f"{key}{shown}: {err.get('msg')}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None


def _raw_value(field: str, key: str, overrides: dict[str, Any]) -> Any:
    """The raw text that failed, for the error message; never for secret fields."""
    if field in Settings.model_fields and Settings.model_fields[field].annotation in (
        SecretStr,
        SecretStr | None,
    ):
        return None
    if field in overrides:
        return overrides[field]
    return os.environ.get(key)
