"""Snowflake sink, part 2: the thin loader that runs the builders of ``app.sinks.warehouse.sql``.

One :class:`SnowflakeLoader` takes a connection factory and a ``write_pandas`` function (the
connector's for Snowflake, fakesnow's for the emulator) and, per batch, stages, then runs one
transaction, then drops the staging tables. Connector errors are mapped to
:class:`~app.errors.LoadTransientError` / :class:`~app.errors.LoadTerminalError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.errors import LoadTerminalError, LoadTransientError, PipelineError
from app.faults import crash_point
from app.sinks.warehouse.sql import (
    LEDGER_COLUMNS,
    LEDGER_TABLE,
    TARGETS,
    TOUCHED_COLUMNS,
    WAREHOUSE_TABLE_NAMES,
    Dialect,
    LoadResult,
    WarehouseBatch,
    build_add_column_sql,
    build_columns_probe_sql,
    build_ddl,
    build_delete_sql,
    build_drop_sql,
    build_ledger_check_sql,
    build_ledger_insert_sql,
    build_ledger_position_sql,
    build_stage_sql,
    build_upsert_sql,
    missing_columns,
    prepare_frame,
    quote_ident,
    staging_name,
)

logger = logging.getLogger(__name__)

# Snowflake errnos: failed logins and bad tokens never succeed on retry.
_AUTH_ERRNOS = {390100, 390101, 390102, 390144, 390303, 390318, 251005, 251006}
# Statement/network timeouts and "try again" conditions.
_TRANSIENT_ERRNOS = {604, 625, 630, 250001, 250003, 253003, 390114}


def map_error(exc: BaseException, action: str) -> PipelineError:
    """Map a connector (or emulator) exception to a transient or terminal load error.

    Args:
        exc: what the connector raised.
        action: what was being done, for the message (``"connect"``, ``"load batch 7"``).

    Returns:
        A :class:`LoadTransientError` (retry may help) or a :class:`LoadTerminalError`.
    """
    if isinstance(exc, PipelineError):
        return exc
    from snowflake.connector import errors as sf

    errno = getattr(exc, "errno", None)
    message = f"warehouse {action} failed: {type(exc).__name__}: {exc}"
    transient_types: tuple[type[BaseException], ...] = (
        sf.OperationalError,
        sf.InterfaceError,
        sf.ServiceUnavailableError,
        sf.GatewayTimeoutError,
        sf.RequestTimeoutError,
        sf.InternalServerError,
        sf.BadGatewayError,
        sf.OtherHTTPRetryableError,
        sf.TooManyRequests,
        ConnectionError,
        TimeoutError,
    )
    if errno in _AUTH_ERRNOS or isinstance(exc, sf.ForbiddenError):
        return LoadTerminalError(message + " (authentication: check the SNOWFLAKE_* credentials)")
    if errno in _TRANSIENT_ERRNOS or isinstance(exc, transient_types):
        return LoadTransientError(message)
    try:
        import duckdb

        # The emulator's file is locked while another process has it open.
        if isinstance(exc, duckdb.IOException):
            return LoadTransientError(message)
    except ImportError:  # pragma: no cover - duckdb ships with fakesnow
        pass
    if errno == 2003:
        return LoadTerminalError(message + " (missing object: run 'coinlake snowflake init')")
    return LoadTerminalError(message)


class SnowflakeLoader:
    """Runs DDL, batch loads and health checks against one warehouse connection factory.

    Args:
        connect: returns a new DB-API connection (autocommit on) with database and schema set.
        write_pandas: ``write_pandas(conn, df, table_name, **kwargs)``.
        dialect: ``snowflake`` (MERGE, transient staging) or ``emulator``.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        write_pandas: Callable[..., Any],
        *,
        dialect: Dialect = "snowflake",
    ) -> None:
        self._connect = connect
        self._write_pandas = write_pandas
        self.dialect: Dialect = dialect

    def _open(self) -> Any:
        try:
            return self._connect()
        except Exception as exc:
            raise map_error(exc, "connect") from exc

    def init_schema(self) -> list[str]:
        """Create every warehouse table if missing, and add the columns an existing one lacks.

        A table created by an older release (e.g. ``PIPELINE_METADATA`` before the data-quality
        columns) gets the new columns, NULL in its old rows; the load would fail on it otherwise.
        Idempotent; returns the table names.
        """
        conn = self._open()
        try:
            cur = conn.cursor()
            for sql in build_ddl():
                cur.execute(sql)
            for name, columns in ((t.name, t.columns) for t in TARGETS):
                self._add_missing_columns(cur, name, columns)
            self._add_missing_columns(cur, LEDGER_TABLE, LEDGER_COLUMNS)
        except Exception as exc:
            raise map_error(exc, "init") from exc
        finally:
            conn.close()
        return list(WAREHOUSE_TABLE_NAMES)

    @staticmethod
    def _add_missing_columns(cur: Any, name: str, columns: Any) -> None:
        cur.execute(build_columns_probe_sql(name))
        present = [d[0] for d in (cur.description or [])]
        for column, sf_type in missing_columns(columns, present):
            cur.execute(build_add_column_sql(name, column, sf_type))
            logger.info("warehouse column added table=%s column=%s", name, column)

    def check(self) -> dict[str, Any]:
        """Which tables exist, which are missing, and the ledger position per app id."""
        conn = self._open()
        existing, missing, ledger = [], [], []
        try:
            for name in WAREHOUSE_TABLE_NAMES:
                try:
                    conn.cursor().execute(f"SELECT COUNT(*) FROM {quote_ident(name)} WHERE 1 = 0")
                    existing.append(name)
                except Exception as exc:  # a missing table is a finding, not a failure
                    if map_error(exc, "check").__class__ is LoadTransientError:
                        raise
                    missing.append(name)
            if LEDGER_TABLE in existing:
                cur = conn.cursor()
                cur.execute(build_ledger_position_sql())
                for app_id, last, count, loaded_at in cur.fetchall():
                    ledger.append(
                        {
                            "app_id": app_id,
                            "last_batch_id": int(last),
                            "batches": int(count),
                            "loaded_at": str(loaded_at),
                        }
                    )
        except PipelineError:
            raise
        except Exception as exc:
            raise map_error(exc, "check") from exc
        finally:
            conn.close()
        return {"existing": existing, "missing": missing, "ledger": ledger}

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read query; returns column names and rows."""
        conn = self._open()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            names = [d[0] for d in (cur.description or [])]
            return names, [tuple(r) for r in cur.fetchall()]
        except Exception as exc:
            raise map_error(exc, "query") from exc
        finally:
            conn.close()

    def load(self, batch: WarehouseBatch) -> LoadResult:
        """Mirror one batch exactly once (see the module docstring of ``app.sinks.warehouse.sql``).

        Raises:
            LoadTransientError: the warehouse was unreachable or timed out; the batch rolled back.
            LoadTerminalError: anything else (auth, missing tables, bad data); rolled back.
        """
        result = LoadResult()
        staged = {}
        for target in TARGETS:
            frame = batch.frames.get(target.name)
            if frame is None:
                import pandas as pd

                frame = pd.DataFrame(columns=list(target.column_names))
            try:
                staged[target.name], removed = prepare_frame(
                    frame,
                    target.columns,
                    target.key,
                    nullable_key=target.nullable_key,
                    latest_by=target.latest_by,
                )
            except ValueError as exc:
                raise LoadTerminalError(f"{target.name}: {exc}") from exc
            result.duplicates_removed += removed
            result.rows[target.name] = len(staged[target.name])
        touched, _ = prepare_frame(batch.touched, TOUCHED_COLUMNS, ("COIN_ID", "VS_CURRENCY"))
        touched_name = staging_name("TOUCHED", batch.app_id)
        names = {t.name: staging_name(t.name, batch.app_id) for t in TARGETS}

        conn = self._open()
        try:
            cur = conn.cursor()
            self._stage(conn, cur, touched_name, TOUCHED_COLUMNS, touched, result)
            for target in TARGETS:
                self._stage(conn, cur, names[target.name], target.columns, staged[target.name], result)
            crash_point("after_warehouse_staging")
            self._transaction(conn, batch, names, touched_name, result)
            crash_point("after_warehouse_commit")
            for name in (touched_name, *names.values()):
                try:
                    conn.cursor().execute(build_drop_sql(name))
                except Exception:  # leftover staging is harmless: recreated on the next batch
                    logger.warning("warehouse staging drop failed table=%s", name, exc_info=True)
        except PipelineError:
            raise
        except Exception as exc:
            raise map_error(exc, f"load batch {batch.batch_id}") from exc
        finally:
            try:
                conn.close()
            except Exception:  # closing a broken connection must not hide the real error
                logger.debug("warehouse close failed", exc_info=True)
        logger.info(
            "warehouse load app_id=%s batch_id=%s skipped=%s rows=%s deleted=%s statements=%s",
            batch.app_id,
            batch.batch_id,
            result.skipped,
            result.rows,
            result.deleted,
            result.statements,
        )
        return result

    def _stage(self, conn: Any, cur: Any, name: str, columns: Any, frame: Any, result: LoadResult) -> None:
        cur.execute(build_stage_sql(name, columns, dialect=self.dialect))
        result.statements += 1
        if len(frame):
            self._write_pandas(
                conn,
                frame,
                name,
                quote_identifiers=True,
                use_logical_type=True,
                auto_create_table=False,
                overwrite=False,
            )

    def _transaction(
        self,
        conn: Any,
        batch: WarehouseBatch,
        names: dict[str, str],
        touched_name: str,
        result: LoadResult,
    ) -> None:
        conn.autocommit(False)
        try:
            cur = conn.cursor()
            cur.execute(build_ledger_check_sql(), (batch.app_id, batch.batch_id))
            result.statements += 1
            if int(cur.fetchone()[0]) > 0:
                result.skipped = True
                conn.rollback()
                return
            for target in TARGETS:
                if target.replaces is not None:
                    cur.execute(build_delete_sql(target, names[target.name], touched_name))
                    result.statements += 1
                    result.deleted += max(int(cur.rowcount or 0), 0)
                for sql in build_upsert_sql(target, names[target.name], dialect=self.dialect):
                    cur.execute(sql)
                    result.statements += 1
            row = [
                batch.app_id,
                batch.batch_id,
                datetime.now(UTC).replace(tzinfo=None),
                *(result.rows[t.name] for t in TARGETS),
                result.deleted,
                ",".join(str(b) for b in batch.catches_up) or None,
            ]
            cur.execute(build_ledger_insert_sql(), row)
            result.statements += 1
            crash_point("after_warehouse_merge")
            conn.commit()
        except BaseException as exc:
            try:
                conn.rollback()
            except Exception:  # the connection may be gone; Snowflake rolls back on disconnect
                logger.warning("warehouse rollback failed", exc_info=True)
            if isinstance(exc, Exception):
                raise map_error(exc, f"load batch {batch.batch_id}") from exc
            raise
        finally:
            try:
                conn.autocommit(True)
            except Exception:
                logger.debug("warehouse autocommit reset failed", exc_info=True)
