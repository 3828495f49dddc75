"""Named crash points for the fault harness: switched on only by ``COINLAKE_CRASH_AT``.

``COINLAKE_CRASH_AT=after_silver_merge`` makes the process die (``os._exit``, no cleanup, like a
``kill -9``) the first time it reaches that point. ``COINLAKE_CRASH_AT=after_silver_merge:3`` dies
the third time. Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import sys

CRASH_ENV = "COINLAKE_CRASH_AT"
CRASH_EXIT_CODE = 137

CRASH_POINTS = (
    "ingest_before_rename",
    "after_parse",
    "after_silver_merge",
    "after_anomalies",
    "after_gold",
    "after_warehouse_staging",
    "after_warehouse_merge",
    "after_warehouse_commit",
)

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here if ``COINLAKE_CRASH_AT`` names this point (and its hit count is reached)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        sys.stderr.write(f"coinlake: crash point {name} reached, exiting\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
