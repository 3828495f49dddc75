"""The polling ingester: one cycle fetches every page for every vs currency and lands it in bronze.

A page either lands as exactly one bronze file or is reported failed (page, currency, reason) in
the cycle's run log row: ``<logs_dir>/ingest_runs.jsonl``, one JSON object per cycle, which
``coinlake status`` reads. An authentication problem fails the whole cycle at its first call.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.config import Settings
from app.errors import SourceTerminalError, SourceTransientError
from app.logs import log_event
from app.paths import Layout, local_path
from app.sources.coingecko import CoinGeckoClient, SourceAuthError
from app.sources.landing import cleanup_stale_temps, write_bronze_page

logger = logging.getLogger(__name__)

RUN_LOG_NAME = "ingest_runs.jsonl"


class _Stopped(Exception):
    """Raised inside a retry wait when a stop was requested: the page in flight is abandoned."""


@dataclass(frozen=True)
class PageFailure:
    """A page that did not land, and why."""

    vs_currency: str
    page: int
    reason: str


@dataclass
class CycleResult:
    """What one ingest cycle did; one row of ``ingest_runs.jsonl``.

    ``status`` is ``ok`` (every page landed), ``partial`` (some failed), ``failed`` (none landed,
    or an auth error stopped the cycle) or ``stopped`` (a stop was requested mid-cycle).
    """

    run_id: str
    started_at: str
    finished_at: str = ""
    status: str = "ok"
    pages_ok: int = 0
    pages_failed: list[PageFailure] = field(default_factory=list)
    records: int = 0
    calls: int = 0
    http_429: int = 0
    retries: int = 0
    duration_seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    error: str | None = None

    def to_log_row(self) -> dict[str, Any]:
        """The JSON-lines row (without the file list, which can be long)."""
        row = asdict(self)
        row.pop("files")
        row["files_written"] = len(self.files)
        return row


def plan_pages(settings: Settings) -> tuple[int, int, list[str] | None]:
    """How to cover the universe: ``(pages, per_page, ids)`` per vs currency.

    The top-N universe is split evenly into the fewest pages of at most ``per_page``
    (1,000 coins: 4 pages of 250; 300 coins: 2 pages of 150). An explicit coin list is paged
    the same way with ``ids``.
    """
    ids = list(settings.coins) or None
    size = len(ids) if ids else settings.top_n
    pages = max(1, math.ceil(size / settings.per_page))
    per_page = math.ceil(size / pages)
    return pages, per_page, ids


def run_cycle(
    settings: Settings,
    layout: Layout,
    *,
    client: CoinGeckoClient | None = None,
    stop_event: threading.Event | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CycleResult:
    """Run one ingest cycle: all pages of all configured vs currencies.

    Args:
        settings: the app settings.
        layout: where bronze and the run log go.
        client: the API client; built from the settings if None.
        stop_event: when set, the cycle stops before the next page (a page in a retry wait is
            abandoned, never half-written).
        now: UTC clock of ``fetched_at`` and the run log (tests may fix it).

    Returns:
        The cycle's result, also appended to ``<logs_dir>/ingest_runs.jsonl``.
    """
    stop_event = stop_event or threading.Event()
    own_client = client is None
    if client is None:
        client = CoinGeckoClient(settings, sleep=_interruptible_sleep(stop_event))
    started = now()
    t0 = time.monotonic()
    before = (client.stats.calls, client.stats.http_429, client.stats.retries)
    result = CycleResult(run_id=uuid.uuid4().hex, started_at=_iso(started))
    pages, per_page, ids = plan_pages(settings)
    log_event(
        logger, "ingest.cycle_start", run_id=result.run_id, vs=",".join(settings.vs_currencies), pages=pages
    )
    try:
        for vs in settings.vs_currencies:
            if not _ingest_currency(client, layout, result, vs, pages, per_page, ids, stop_event, now):
                break
    finally:
        result.calls = client.stats.calls - before[0]
        result.http_429 = client.stats.http_429 - before[1]
        result.retries = client.stats.retries - before[2]
        result.finished_at = _iso(now())
        result.duration_seconds = round(time.monotonic() - t0, 3)
        if result.status == "ok" and result.pages_failed:
            result.status = "partial" if result.pages_ok else "failed"
        try:
            append_run_log(layout, result)
        except OSError as exc:
            # The run log is how `coinlake status` and operators see a cycle: a cycle that could
            # not record itself (disk full, permissions) is failed, with the reason.
            reason = (
                f"cannot write the ingest run log: {exc.strerror or exc} ({exc.filename or layout.logs_dir})"
            )
            result.status = "failed"
            result.error = f"{result.error}; {reason}" if result.error else reason
        log_event(
            logger,
            "ingest.cycle_done",
            level=logging.INFO if result.status == "ok" else logging.WARNING,
            **{k: v for k, v in result.to_log_row().items() if k != "pages_failed"},
            pages_failed=len(result.pages_failed),
        )
        if own_client:
            client.close()
    return result


def _ingest_currency(
    client: CoinGeckoClient,
    layout: Layout,
    result: CycleResult,
    vs: str,
    pages: int,
    per_page: int,
    ids: list[str] | None,
    stop_event: threading.Event,
    now: Callable[[], datetime],
) -> bool:
    """Fetch and land the pages of one currency; False when the whole cycle must stop."""
    for page in range(1, pages + 1):
        if stop_event.is_set():
            result.status = "stopped"
            return False
        try:
            got = client.coins_markets(vs, page, per_page, ids)
        except _Stopped:
            result.status = "stopped"
            return False
        except SourceAuthError as exc:
            result.pages_failed.append(PageFailure(vs, page, str(exc)))
            result.status, result.error = "failed", str(exc)
            return False
        except SourceTerminalError as exc:
            result.pages_failed.append(PageFailure(vs, page, str(exc)))
            if "vs_currency" in str(exc):
                return True  # the currency itself is refused: later pages would be too
            continue
        except SourceTransientError as exc:
            result.pages_failed.append(PageFailure(vs, page, str(exc)))
            continue
        try:
            path = write_bronze_page(
                layout,
                records_body=got.body_text,
                vs_currency=vs,
                page=page,
                run_id=result.run_id,
                fetched_at=now(),
                request=got.request,
                http_status=got.http_status,
            )
        except OSError as exc:
            # Storage is broken (permission denied, disk full, a file where a folder should be):
            # the page is not landed (the writer leaves no temp file) and later pages would fail too.
            reason = f"cannot write bronze page {vs} p{page}: {exc.strerror or exc} ({exc.filename or layout.bronze_root})"
            result.pages_failed.append(PageFailure(vs, page, reason))
            result.status, result.error = "failed", reason
            return False
        result.pages_ok += 1
        result.records += len(got.records)
        result.files.append(path)
        if len(got.records) < per_page:
            break  # a short or empty page: the universe ends here
    return True


def append_run_log(layout: Layout, result: CycleResult) -> str:
    """Append the cycle's row to ``<logs_dir>/ingest_runs.jsonl`` and return the file's path."""
    folder = local_path(layout.logs_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, RUN_LOG_NAME)
    line = json.dumps(result.to_log_row(), default=str, separators=(",", ":")) + "\n"
    # One write of one line in append mode: concurrent writers never interleave within a row.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
    return path


def read_run_log(layout: Layout, limit: int | None = None) -> list[dict[str, Any]]:
    """The run log's rows, oldest first (the last ``limit`` when given); skips torn lines."""
    path = os.path.join(local_path(layout.logs_dir), RUN_LOG_NAME)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows[-limit:] if limit else rows


def check_source(settings: Settings, *, client: CoinGeckoClient | None = None) -> str:
    """Ping the API (reachability and key); returns its greeting.

    Raises:
        SourceTransientError: unreachable after retries.
        SourceTerminalError: the key or plan is refused.
    """
    client = client or CoinGeckoClient(settings)
    body = client.ping()
    return str(body.get("gecko_says", ""))


def next_slot(first: float, interval: float, now: float) -> float:
    """The first start time ``first + k * interval`` strictly after ``now`` (cycles never drift)."""
    if now < first:
        return first
    return first + (math.floor((now - first) / interval) + 1) * interval


def poll_forever(
    settings: Settings,
    layout: Layout,
    *,
    client: CoinGeckoClient | None = None,
    stop_event: threading.Event | None = None,
    max_cycles: int | None = None,
    clock: Callable[[], float] = time.time,
) -> list[CycleResult]:
    """Run cycles every ``poll_interval_seconds``, aligned to the first start, until stopped.

    A cycle that overruns skips the slots it missed rather than drifting. SIGINT/SIGTERM set the
    stop event when called from the main thread without one.

    Returns:
        The results of the cycles run.
    """
    own_event = stop_event is None
    stop_event = stop_event or threading.Event()
    restore = install_stop_signals(stop_event) if own_event else None
    client = client or CoinGeckoClient(settings, sleep=_interruptible_sleep(stop_event))
    removed = cleanup_stale_temps(layout)
    if removed:
        log_event(logger, "ingest.stale_temps_removed", count=removed)
    interval = settings.poll_interval_seconds
    first = clock()
    results: list[CycleResult] = []
    try:
        while not stop_event.is_set():
            results.append(run_cycle(settings, layout, client=client, stop_event=stop_event))
            if max_cycles is not None and len(results) >= max_cycles:
                break
            wake = next_slot(first, interval, clock())
            stop_event.wait(max(0.0, wake - clock()))
    finally:
        if restore:
            restore()
    log_event(logger, "ingest.stopped", cycles=len(results))
    return results


def install_stop_signals(stop_event: threading.Event) -> Callable[[], None] | None:
    """Make SIGINT and SIGTERM set ``stop_event``; returns a function restoring the old handlers.

    Does nothing (returns None) outside the main thread, where Python cannot install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    old = {}

    def handler(signum: int, _frame: Any) -> None:
        log_event(logger, "ingest.stop_requested", signal=signal.Signals(signum).name)
        stop_event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, previous in old.items():
            signal.signal(sig, previous)

    return restore


def _interruptible_sleep(stop_event: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if stop_event.wait(seconds):
            raise _Stopped()

    return sleep


def _iso(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
