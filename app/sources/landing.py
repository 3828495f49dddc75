"""Bronze landing: one immutable JSON file per API page (docs/DESIGN.md section 1).

The file is written to a dot-prefixed temporary name in its partition folder, flushed and
fsynced, then moved to its final name with a no-overwrite link (``os.link`` fails when the name
exists). A crash at any point leaves either nothing, a dot-prefixed temp file that readers
ignore, or the complete file; an existing file is never replaced.

Other modules' tests build bronze fixtures with :func:`write_bronze_page`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.faults import crash_point
from app.paths import Layout, local_path

SOURCE = "coingecko"
ENDPOINT = "/coins/markets"
TEMP_SUFFIX = ".tmp"
# Errors meaning "this filesystem has no hard links" (DBFS FUSE, some object-store mounts).
_NO_LINK_ERRNOS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV, errno.EACCES}


def format_fetched_at(fetched_at: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: ``2026-11-25T19:48:06.123Z``."""
    ts = _as_utc(fetched_at)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def bronze_partition(fetched_at: datetime) -> str:
    """The ``YYYY-MM-DD`` UTC date of ``fetched_at`` (the ``dt=`` partition value)."""
    return _as_utc(fetched_at).strftime("%Y-%m-%d")


def bronze_file_name(fetched_at: datetime, vs_currency: str, page: int, run_id: str) -> str:
    """``coins_markets_<YYYYMMDDTHHMMSSfffZ>_<vs>_p<page:04d>_<run_id[:8]>.json``.

    Raises:
        ValueError: the currency is not alphanumeric, the page is below 1 or the run id is empty.
    """
    if not vs_currency or not vs_currency.isalnum():
        raise ValueError(f"vs_currency must be alphanumeric, got {vs_currency!r}")
    if page < 1:
        raise ValueError(f"page must be >= 1, got {page}")
    short = "".join(ch for ch in run_id if ch.isalnum())[:8]
    if not short:
        raise ValueError(f"run_id must contain letters or digits, got {run_id!r}")
    ts = _as_utc(fetched_at)
    stamp = ts.strftime("%Y%m%dT%H%M%S") + f"{ts.microsecond // 1000:03d}Z"
    return f"coins_markets_{stamp}_{vs_currency.lower()}_p{page:04d}_{short}.json"


def temp_name(file_name: str) -> str:
    """The dot-prefixed temporary name of a bronze file (ignored by Spark's file source)."""
    return f".{file_name}{TEMP_SUFFIX}"


def bronze_envelope_text(
    *,
    records_body: str | list[Any],
    vs_currency: str,
    page: int,
    run_id: str,
    fetched_at: datetime,
    request: Mapping[str, Any],
    http_status: int = 200,
) -> str:
    """The file content: one line of compact JSON with the response body unchanged as ``data``.

    A string body is spliced in as received (so numbers keep their exact text, e.g. ``8.36e-06``);
    its line breaks, which valid JSON only allows as whitespace, become spaces so the document
    stays on one line. A list is serialised compactly.

    Raises:
        ValueError: the body is not valid JSON, or ``request`` holds a key-like parameter.
    """
    for name in request:
        if "key" in name.lower():
            raise ValueError(f"request parameter {name!r} looks like a secret; bronze never stores keys")
    if isinstance(records_body, str):
        json.loads(records_body)  # raises ValueError on a truncated body: never land it
        data_text = records_body.replace("\r", " ").replace("\n", " ").strip()
    else:
        data_text = json.dumps(records_body, separators=(",", ":"), ensure_ascii=False)
    envelope = {
        "source": SOURCE,
        "endpoint": ENDPOINT,
        "request": {**request, "vs_currency": vs_currency, "page": page},
        "fetched_at": format_fetched_at(fetched_at),
        "http_status": http_status,
        "run_id": run_id,
        "page": page,
    }
    head = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    return head[:-1] + ',"data":' + data_text + "}\n"


def write_bronze_page(
    layout: Layout,
    *,
    records_body: str | list[Any],
    vs_currency: str,
    page: int,
    run_id: str,
    fetched_at: datetime,
    request: Mapping[str, Any] | None = None,
    http_status: int = 200,
) -> str:
    """Land one API page as an immutable bronze file and return its path.

    Args:
        layout: the storage layout (local root or ``dbfs:/``; written through ``/dbfs``).
        records_body: the response body, as received text (preferred) or a list of records.
        vs_currency: quote currency of the page.
        page: 1-based page number.
        run_id: the ingest cycle's id (its first 8 alphanumerics go into the name).
        fetched_at: when the response arrived; timezone-aware, or naive meaning UTC.
        request: the query parameters (no secrets); defaults to the usual /coins/markets ones.
        http_status: the response status.

    Returns:
        The final path in the layout's form (``dbfs:/...`` stays ``dbfs:/...``).

    Raises:
        FileExistsError: a different file with this name already exists (never overwritten).
        ValueError: the body is not valid JSON or the arguments are malformed.
    """
    if request is None:
        request = {"vs_currency": vs_currency, "order": "market_cap_desc", "per_page": 250, "page": page}
    text = bronze_envelope_text(
        records_body=records_body,
        vs_currency=vs_currency,
        page=page,
        run_id=run_id,
        fetched_at=fetched_at,
        request=request,
        http_status=http_status,
    )
    name = bronze_file_name(fetched_at, vs_currency, page, run_id)
    folder = layout.bronze_day(bronze_partition(fetched_at))
    local_folder = local_path(folder)
    os.makedirs(local_folder, exist_ok=True)
    final = os.path.join(local_folder, name)
    tmp = os.path.join(local_folder, temp_name(name))
    payload = text.encode("utf-8")
    _write_temp(tmp, payload)
    try:
        crash_point("ingest_before_rename")
        _publish(tmp, final, payload)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(local_folder)
    return f"{folder}/{name}"


def cleanup_stale_temps(layout: Layout, *, older_than_seconds: float = 3600.0) -> int:
    """Remove bronze temp files left by crashed writers, older than the given age.

    Returns:
        The number of files removed.
    """
    root = local_path(layout.bronze_root)
    if not os.path.isdir(root):
        return 0
    cutoff = time.time() - older_than_seconds
    removed = 0
    for day in os.listdir(root):
        folder = os.path.join(root, day)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(".") and name.endswith(TEMP_SUFFIX) and os.path.getmtime(path) < cutoff:
                os.unlink(path)
                removed += 1
    return removed


def _write_temp(tmp: str, payload: bytes) -> None:
    """Write the whole payload to a new temp file; on any failure (disk full) remove it again."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileExistsError:
        # A temp of this exact name can only be a dead writer's leftover: replace it.
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _publish(tmp: str, final: str, payload: bytes) -> None:
    """Give the temp file its final name, never replacing an existing file."""
    try:
        os.link(tmp, final)
        return
    except FileExistsError:
        _same_or_raise(final, payload)
        return
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
    # No hard links here (DBFS FUSE): check, then rename. Names embed the run id and the
    # millisecond, so the window between the two steps cannot race another writer of this name.
    if os.path.exists(final):
        _same_or_raise(final, payload)
        return
    os.rename(tmp, final)


def _same_or_raise(final: str, payload: bytes) -> None:
    with open(final, "rb") as fh:
        if fh.read() == payload:
            return
    raise FileExistsError(f"bronze file {final} already exists with other content; not overwritten")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
