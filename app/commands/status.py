"""``coinlake status [--json]``: where everything stands for the data root.

Exit status: 0 when the lag is within every ``COINLAKE_STATUS_MAX_*`` limit, 1 when one is
exceeded (the ``lag.exceeded`` messages say which; the status is printed either way), 2 on an error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
from typing import TYPE_CHECKING, Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings
from app.lag import LagLimits
from app.paths import local_path
from app.status import LedgerReader, collect_status, record_time

if TYPE_CHECKING:
    from app.config import Settings
    from app.paths import Layout

WAREHOUSE_MODULE = "app.sinks.warehouse.connector"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="where everything stands: bronze, stream lag, batches, tables, ingest, warehouse",
        description=(
            "Exit status 0 when the lag is within COINLAKE_STATUS_MAX_LAG_SECONDS, "
            "COINLAKE_STATUS_MAX_LAG_FILES and COINLAKE_STATUS_MAX_INGEST_LAG_SECONDS; 1 when one is "
            "exceeded (a scheduler can alert on it); 2 on an error."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_status)


def ledger_reader_for(settings: Settings, layout: Layout) -> tuple[LedgerReader | None, str]:
    """A reader of the warehouse ledger position, or None and the reason it is unavailable.

    Uses ``app.sinks.warehouse.connector`` when present (``connector_from_settings(...).loader().check()``);
    an emulator that has never been loaded is reported as such rather than created.
    """
    if settings.effective_warehouse == "none":
        return None, "disabled (COINLAKE_WAREHOUSE=none)"
    if importlib.util.find_spec(WAREHOUSE_MODULE) is None:
        return None, f"unavailable ({WAREHOUSE_MODULE} is not installed)"
    if settings.effective_warehouse == "emulator" and not os.path.isdir(local_path(layout.warehouse_dir)):
        return None, "none yet (the emulator has not been loaded)"
    try:
        module = importlib.import_module(WAREHOUSE_MODULE)
        connector = module.connector_from_settings(settings, layout, read_only=True)
    except Exception as exc:  # a broken optional module must not break status
        return None, f"unavailable ({type(exc).__name__}: {str(exc).strip()[:200]})"
    if connector is None:
        return None, "disabled (COINLAKE_WAREHOUSE=none)"

    def read() -> list[dict[str, Any]]:
        ledger = connector.loader().check().get("ledger", [])
        return [
            {"app_id": r.get("app_id"), "batch_id": r.get("last_batch_id"), "loaded_at": r.get("loaded_at")}
            for r in ledger
        ]

    return read, ""


def _status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    layout = layout_of(settings)
    reader, reason = ledger_reader_for(settings, layout)
    status = collect_status(
        layout,
        spark_factory=lambda: spark_from_settings(settings, app_name="coinlake-status"),
        ledger_reader=reader,
        warehouse_reason=reason,
        lag_limits=LagLimits.from_settings(settings),
    )
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(format_status(status))
    return 1 if status["lag"]["exceeded"] else 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _pct(score: float | None) -> str:
    return "-" if score is None else f"{score:.2%}"


def format_quality(quality: dict[str, Any]) -> list[str]:
    """The data-quality lines of the status: last batch and last 24 h, worst rules first."""
    last, day = quality.get("last_batch"), quality.get("last_24h")
    lines = ["", "data quality (share of records passing every expectation)"]
    if not last:
        return [*lines, "  none yet"]
    lines.append(
        f"  last batch {last['batch_id']}  {_pct(last['score'])}  "
        f"({last['passed']} of {last['records']} records, {last['status']}, at {last['at']})"
    )
    lines += [f"    {rule:<32} {_pct(score):>8}" for rule, score in list(last["by_rule"].items())[:5]]
    if day:
        lines.append(
            f"  last 24 h      {_pct(day['score'])}  ({day['passed']} of {day['records']} records, "
            f"{day['batches']} batches)"
        )
        lines += [
            f"    {rule:<32} {_pct(day['by_rule'].get(rule)):>8} {n:>9} failed"
            for rule, n in list(day["failures_by_rule"].items())[:5]
        ]
    return lines


def format_status(status: dict[str, Any]) -> str:
    """Human-readable status, one section per concern, "none yet" where nothing exists."""
    lines = [f"data root   {status['data_root']}", ""]
    bronze = status["bronze"]
    lines.append(f"bronze      {bronze['files']} files, {_size(bronze['bytes'])}")
    for day in bronze["days"][-7:]:
        lines.append(f"  {day['day']}  {day['files']:>6} files  {_size(day['bytes']):>9}")
    if not bronze["days"]:
        lines.append("  none yet")
    stream = status["stream"]
    lines.append("")
    if not stream["exists"]:
        lines.append(f"stream      no checkpoint yet; {bronze['files']} bronze files waiting")
    else:
        lines.append(
            f"stream      last committed batch {stream['last_committed_batch']}; "
            f"files processed {stream['processed_files']}, in flight {stream['in_flight_files']}, "
            f"not yet processed {stream['pending_files']}"
        )
    lines += _format_lag(status["lag"])
    batches = status["batches"]
    if batches.get("last_batch_id") is None:
        lines.append("last batch  none yet")
    else:
        lines.append(
            f"last batch  {batches['last_batch_id']} at {batches['last_batch_at']} "
            f"({batches.get('last_status')}, {batches.get('last_records_read')} records)"
        )
    if batches.get("last_source_ms") is not None:
        lines.append(
            f"source      last trigger's bronze listing {batches['last_source_ms'] / 1000:.3f} s "
            f"at {batches['last_source_at']}"
        )
    lines += ["", "tables"]
    for name, info in status["tables"].items():
        if not info["exists"]:
            detail = "none yet"
        elif info["rows"] is None:
            detail = "exists (not counted)"
        else:
            latest = info["latest"] or "-"
            detail = f"{info['rows']:>9} rows  latest {info['latest_column']} {latest}"
        lines.append(f"  {name:<20} {detail}")
    by_rule = status.get("quarantine_by_rule") or {}
    if by_rule:
        lines += ["", "quarantined by rule"]
        lines += [f"  {rule:<32} {count:>9}" for rule, count in by_rule.items()]
    lines += format_quality(status.get("data_quality") or {})
    ingest = status["ingest"]
    lines.append("")
    if ingest["cycles"] == 0:
        lines.append("ingest      no cycles yet")
    else:
        last = ingest["last"] or {}
        lines.append(
            f"ingest      {ingest['cycles']} cycles; last at {record_time(last) or '?'} "
            f"status {last.get('status', '?')}"
        )
        if ingest["last_error"]:
            err = ingest["last_error"]
            message = err.get("error") or err.get("error_message") or err.get("status")
            lines.append(f"  last ingest error at {record_time(err) or '?'}: {message}")
    err = status["last_error"]
    lines.append(
        "last error  none"
        if not err
        else f"last error  {err['at']} {err['kind']} batch {err['batch_id']}: {err['message']}"
    )
    wh = status["warehouse"]
    if not wh["available"]:
        lines.append(f"warehouse   {wh['reason']}")
    else:
        lines.append(
            f"warehouse   ledger at batch {wh['ledger_last_batch']} (loaded {wh['ledger_loaded_at']}); "
            f"lakehouse at {wh['lakehouse_last_batch']}; behind by {wh['batches_behind']}"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if abs(value) < 120:
        return f"{value:.0f} s"
    if abs(value) < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _format_lag(lag: dict[str, Any]) -> list[str]:
    per_currency = ", ".join(
        f"{cur} {_seconds(info['lag_seconds']) if info['silver_newest'] else 'no silver'}"
        for cur, info in lag["by_currency"].items()
    )
    parts = [f"{lag['files_behind']} files behind"]
    if per_currency:
        parts.append(f"silver behind bronze: {per_currency}")
    if lag["ingest_last_at"]:
        parts.append(f"last ingest {_seconds(lag['ingest_lag_seconds'])} ago")
    lines = [f"lag         {'; '.join(parts)}"]
    lines += [f"  LAG EXCEEDED: {message}" for message in lag["exceeded"]]
    return lines
