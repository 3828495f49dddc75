"""``coinlake verify [--from DATE] [--repair] [--json]``: reconcile the derived tables with silver.

Exit status: 0 when nothing differs (or every difference was repaired), 1 when differences were
found and not repaired (a scheduler can alert on it), 2 on an error such as an invalid ``--from``.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import date
from typing import TYPE_CHECKING, Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings
from app.errors import ConfigError

if TYPE_CHECKING:
    from app.batch.verify import TableReport

WAREHOUSE_NOTE = (
    "the Snowflake mirror is not repaired by this command; "
    "it is refreshed for the ranges that later batches touch"
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "verify",
        help="recompute anomalies and gold from silver for a range; report (and --repair) any drift",
        description=(
            "Recompute crypto_anomalies, gold_coin_ohlc and gold_crypto_metrics from "
            "silver_crypto_clean with the current detector settings and report rows missing, extra "
            "or differing (value columns only; doubles within 1e-9). Exit status 1 when differences "
            f"remain. Note: {WAREHOUSE_NOTE}."
        ),
    )
    parser.add_argument(
        "--from",
        dest="from_date",
        metavar="DATE",
        help="only rows on or after this UTC day (YYYY-MM-DD): observed_at, bucket_start, metric_date",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="apply the differences, one MERGE per table (inserted rows get batch id -1)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_verify)


def parse_day(value: str | None, *, command: str = "verify") -> date | None:
    """``YYYY-MM-DD`` as a date; None stays None.

    Args:
        value: the ``--from`` argument.
        command: the command named in the error message.

    Raises:
        ConfigError: anything else.
    """
    if value is None:
        return None
    try:
        if not _DAY.match(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{command}: --from expects a UTC day YYYY-MM-DD, got {value!r}") from None


def _verify(args: argparse.Namespace) -> int:
    from app.batch.verify import verify_lake

    from_date = parse_day(args.from_date)
    settings = settings_from_args(args)
    spark = spark_from_settings(settings, app_name="coinlake-verify")
    reports = verify_lake(
        spark,
        layout_of(settings),
        from_date=from_date,
        window=settings.zscore_window,
        min_periods=settings.zscore_min_periods,
        threshold=settings.zscore_threshold,
        repair=args.repair,
    )
    differences = sum(r.differences for r in reports)
    repaired = args.repair
    if args.json:
        payload = {
            "from": from_date.isoformat() if from_date else None,
            "repair": repaired,
            "differences": differences,
            "tables": [r.as_dict() for r in reports],
            "warehouse": WAREHOUSE_NOTE,
        }
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(format_reports(reports, from_date=from_date, repair=repaired))
    return 1 if differences and not repaired else 0


def _key_text(key: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in key.items())


def format_reports(reports: list[TableReport], *, from_date: date | None, repair: bool) -> str:
    """Human-readable verify output: one line per table, examples indented, a closing verdict."""
    scope = f"from {from_date.isoformat()} (UTC)" if from_date else "every row"
    lines = [f"verify: derived tables against silver_crypto_clean, {scope}"]
    for r in reports:
        c = r.counts
        lines.append(
            f"{r.table:<20} {r.expected_rows:>8} expected: "
            f"{c['missing']} missing, {c['extra']} extra, {c['differing']} differing"
        )
        for kind, examples in r.examples.items():
            more = c[kind] - len(examples)
            for example in examples:
                detail = ""
                if "columns" in example:
                    detail = ": " + ", ".join(
                        f"{name} stored {v['stored']!r} expected {v['expected']!r}"
                        for name, v in example["columns"].items()
                    )
                lines.append(f"  {kind:<9} {_key_text(example['key'])}{detail}")
            if more > 0:
                lines.append(f"  {kind:<9} ... and {more} more")
        if r.repaired is not None:
            lines.append(
                f"  repaired: {r.repaired['insert']} inserted, {r.repaired['update']} updated, "
                f"{r.repaired['delete']} deleted"
            )
    total = sum(r.differences for r in reports)
    if not total:
        lines.append("verify: no differences")
    elif repair:
        lines.append(f"verify: {total} differences repaired (one MERGE per table that differed)")
    else:
        lines.append(f"verify: {total} differences, not repaired (run with --repair to fix them)")
    if total or repair:
        lines.append(f"note: {WAREHOUSE_NOTE}")
    return "\n".join(lines)
