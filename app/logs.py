"""Structured logging: one JSON object per line, or readable ``key=value`` text on a terminal.

Use ``logger = logging.getLogger(__name__)`` and :func:`log_event` for events with fields::

    log_event(logger, "batch.done", batch_id=3, records=1000, duration_ms=812)
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (kept as JSON keys, or ``k=v`` pairs in text)."""
    logger.log(level, event, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level event k=v ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = getattr(record, "fields", {}) or {}
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{ts} {record.levelname.lower():7s} {record.getMessage()}"
        line = f"{line} {pairs}" if pairs else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that looks up ``sys.stderr`` at every write.

    Test runners and notebooks swap ``sys.stderr``; a handler holding the old object would write
    to a closed file.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _DropReraisedCallbackErrors(logging.Filter):
    """Drop py4j's log of an exception raised in a Python callback (a foreachBatch function).

    py4j logs it, traceback included, before handing it back to the JVM, which re-raises it to the
    streaming query; the stream logs the failed batch (``batch.failed``) and the CLI reports its
    cause in one line, so this copy only adds a raw traceback to standard error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("py4j") and "Python Proxy" in record.getMessage())


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: Any = None) -> None:
    """Install one handler on the root logger (idempotent).

    Args:
        fmt: ``json``, ``text`` or ``auto`` (text when ``stream`` is a terminal).
        level: root log level name.
        stream: where logs go; standard error by default.
    """
    if fmt == "auto":
        fmt = "text" if getattr(stream or sys.stderr, "isatty", lambda: False)() else "json"
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_DropReraisedCallbackErrors())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_coinlake", False):
            root.removeHandler(old)
    handler._coinlake = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "urllib3", "snowflake.connector", "fakesnow", "matplotlib", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
