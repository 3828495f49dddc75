"""The uninterrupted reference run shared by the crash matrix and the fault tests."""

from __future__ import annotations

import pytest

from app.paths import Layout
from tests.reliability.harness import (
    STREAM,
    delta_snapshot,
    ledger_rows,
    run_cli,
    tail,
    warehouse_snapshot,
    write_fixed_bronze,
)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, spark):
    """``stream`` over the fixed bronze set, uninterrupted: layout, Delta, warehouse and ledger snapshots."""
    root = tmp_path_factory.mktemp("reference") / "data"
    layout = Layout.from_root(str(root))
    write_fixed_bronze(layout)
    run = run_cli(*STREAM, data_dir=root)
    assert run.returncode == 0, tail(run)
    return layout, delta_snapshot(spark, layout), warehouse_snapshot(layout), ledger_rows(layout)
