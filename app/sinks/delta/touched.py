"""SQL literals for the bounded reads and MERGE conditions built from a batch's touched set.

The handler hands later stages ``touched_df(coin_id, vs_currency, from_ts, to_ts)`` (docs/DESIGN.md,
section 4) and a few per-batch summaries of it (the touched currencies, each one's first day, the
earliest ``from_ts``). Those summaries become literal predicates in reads and in the target-only
conditions of MERGEs (Delta file skipping and partition pruning), built with these helpers.

Timestamps travel as UTC text formatted by Spark itself (the session time zone is UTC), never as
Python ``datetime`` objects, whose conversion depends on the driver's local time zone.
"""

from __future__ import annotations

TS_FORMAT = "yyyy-MM-dd HH:mm:ss.SSSSSS"


def sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ts(text: str) -> str:
    """A SQL timestamp literal from UTC text (the session time zone is UTC)."""
    return f"TIMESTAMP {sql_str(text)}"
