"""The uninterrupted reference run shared by the crash matrix and the fault tests."""

from __future__ import annotations

import pytest

from app.paths import Layout
from tests.reliability.harness import (
    delta_snapshot,
    ledger_rows,
    stream_in_process,
    warehouse_snapshot,
    write_fixed_bronze,
)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, spark):
    """``stream`` over the fixed bronze set, uninterrupted (in this process): layout, Delta, warehouse and ledger snapshots."""
    root = tmp_path_factory.mktemp("reference") / "data"
    layout = Layout.from_root(str(root))
    write_fixed_bronze(layout)
    stream_in_process(spark, root)  # the crashed and faulted runs under test are subprocesses
    return layout, delta_snapshot(spark, layout), warehouse_snapshot(layout), ledger_rows(layout)
