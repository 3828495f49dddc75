"""The offline demo: simulator → ingest cycles on a simulated clock → stream → warehouse → report.

Everything runs on this machine: the CoinGecko-compatible simulator listens on an ephemeral
loopback port, the warehouse is the embedded Snowflake emulator (unless settings say otherwise).
A re-run continues the same simulated market from where the previous run stopped (the state is
kept in ``<root>/logs/demo_state.json``); ``fresh=True`` starts from an empty data root.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from app.config import Settings, load_settings
from app.errors import PipelineError
from app.paths import Layout, local_path
from app.tables import ANOMALIES, QUARANTINE

logger = logging.getLogger(__name__)

STATE_FILE = "demo_state.json"
# What --fresh may delete under the data root: only what coinlake itself creates.
MANAGED_DIRS = ("bronze", "tables", "checkpoints", "warehouse", "logs", "reports")


@dataclass(frozen=True)
class DemoOptions:
    """Size of the demo run.

    Attributes:
        coins: simulated universe size.
        cycles: ingest cycles in this run.
        step_seconds: simulated time between two cycles.
        seed: market seed.
        fresh: empty the data root first.
    """

    coins: int = 300
    cycles: int = 120
    step_seconds: int = 300
    seed: int = 7
    fresh: bool = False


@dataclass
class DemoSummary:
    """What the demo did, for the closing summary."""

    data_dir: str
    cycles: int = 0
    pages_ok: int = 0
    pages_failed: int = 0
    batches: int = 0
    records_read: int = 0
    table_rows: dict[str, int] = field(default_factory=dict)
    anomalies: int = 0
    quarantined: int = 0
    warehouse: str = "none"
    warehouse_rows: dict[str, int] = field(default_factory=dict)
    report_path: str = ""
    elapsed_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each phase, in the order they ran (see :data:`PHASES`)."""


# The phases of a demo run, in order, as the summary names them.
PHASES = (
    "setup",  # --fresh, the saved market replayed to where the last run stopped
    "simulator start",
    "ingest cycles",
    "spark start",
    "stream",
    "table counts",  # Delta and warehouse row counts for the summary
    "report",
)


@contextmanager
def _phase(summary: DemoSummary, name: str) -> Iterator[None]:
    """Add the wall time of the ``with`` body to ``summary.phase_seconds[name]``."""
    started = time.monotonic()
    try:
        yield
    finally:
        summary.phase_seconds[name] = summary.phase_seconds.get(name, 0.0) + time.monotonic() - started


def reset_data_root(layout: Layout) -> None:
    """Delete what coinlake created under the data root (never anything else)."""
    root = local_path(layout.root)
    for name in MANAGED_DIRS:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _load_state(layout: Layout) -> dict[str, Any] | None:
    path = os.path.join(local_path(layout.logs_dir), STATE_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def _save_state(layout: Layout, state: dict[str, Any]) -> None:
    folder = local_path(layout.logs_dir)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{STATE_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
    os.replace(tmp, os.path.join(folder, STATE_FILE))


def _market_state(layout: Layout, options: DemoOptions) -> dict[str, Any]:
    """The saved market (seed, size, start, cycles so far), or a new one ending about now."""
    state = _load_state(layout)
    if state is not None:
        if state["coins"] != options.coins or state["seed"] != options.seed:
            raise PipelineError(
                f"the data root holds a demo market with {state['coins']} coins and seed {state['seed']}; "
                "run 'coinlake demo --fresh' to start another"
            )
        return state
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(seconds=options.cycles * options.step_seconds)
    return {
        "coins": options.coins,
        "seed": options.seed,
        "start": start.isoformat(),
        "step_seconds": options.step_seconds,
        "cycles_done": 0,
    }


def run_demo(settings: Settings, options: DemoOptions, *, out: TextIO) -> DemoSummary:
    """Run the whole pipeline offline and return its summary.

    Args:
        settings: base settings (data root, warehouse, detector); the source settings are
            replaced by the simulator's.
        options: size of the run.
        out: where progress goes.

    Returns:
        The summary of the run.

    Raises:
        PipelineError: a stage failed (the message says which).
    """
    from app.progress import Progress
    from app.sources.ingester import run_cycle
    from app.sources.market_model import MarketModel
    from app.sources.simulator import start_simulator

    started = time.monotonic()
    layout = Layout.from_root(settings.data_dir)
    summary = DemoSummary(data_dir=layout.root)
    with _phase(summary, "setup"):
        if options.fresh:
            reset_data_root(layout)
        state = _market_state(layout, options)
        model = MarketModel(state["coins"], state["seed"], start=datetime.fromisoformat(state["start"]))
        for _ in range(state["cycles_done"]):  # replay the walk: the same seed gives the same market
            model.advance(state["step_seconds"])

    sim_started = time.monotonic()
    with start_simulator(model=model) as sim:
        summary.phase_seconds["simulator start"] = time.monotonic() - sim_started
        ingest_settings = load_settings(
            data_dir=settings.data_dir,
            api_base_url=sim.base_url,
            api_plan="public",
            top_n=state["coins"],
            vs_currencies=",".join(settings.vs_currencies),
            rate_limit_per_minute=100000,
            http_timeout_seconds=10,
        )
        with _phase(summary, "ingest cycles"), Progress("ingest", total=options.cycles, stream=out) as bar:
            for _ in range(options.cycles):
                sim.advance(state["step_seconds"])
                result = run_cycle(ingest_settings, layout)
                state["cycles_done"] += 1
                summary.cycles += 1
                summary.pages_ok += result.pages_ok
                summary.pages_failed += len(result.pages_failed)
                bar.advance(note=f"{result.records} records")
        _save_state(layout, state)

    _run_lakehouse(settings, layout, summary, out)
    summary.elapsed_seconds = time.monotonic() - started
    return summary


def _run_lakehouse(settings: Settings, layout: Layout, summary: DemoSummary, out: TextIO) -> None:
    from app.commands.common import spark_from_settings
    from app.progress import Progress
    from app.report import build_report
    from app.stream import run_stream

    with _phase(summary, "spark start"), Progress("spark", total=1, stream=out) as bar:
        spark = spark_from_settings(settings, app_name="coinlake-demo")
        bar.advance(note="session ready")
    with _phase(summary, "stream"):
        total_batches = _expected_batches(layout, settings.max_files_per_trigger)
        with Progress("stream", total=total_batches, stream=out) as bar:
            result = run_stream(
                spark,
                settings,
                layout,
                trigger="available-now",
                on_batch=lambda meta: bar.advance(note=f"batch {meta.batch_id}: {meta.records_read} records"),
            )
        summary.batches = result.batch_count
        summary.records_read = result.records_read
    with _phase(summary, "table counts"):
        _count_tables(spark, layout, summary)
        summary.warehouse = settings.effective_warehouse
        summary.warehouse_rows = _warehouse_counts(settings, layout)
    with _phase(summary, "report"), Progress("report", total=1, stream=out) as bar:
        summary.report_path = build_report(
            spark,
            layout,
            zscore_window=settings.zscore_window,
            zscore_min_periods=settings.zscore_min_periods,
            zscore_threshold=settings.zscore_threshold,
            dq_min_score=settings.dq_min_score,
        )
        bar.advance()


def _expected_batches(layout: Layout, max_files_per_trigger: int) -> int:
    """Batches an available-now run will take: bronze files the stream has not planned, by batch size."""
    from app.status import bronze_inventory, stream_progress

    paths = set(bronze_inventory(layout).get("paths", ()))
    pending = stream_progress(layout, paths)["pending_files"] if paths else 0
    return max(1, -(-pending // max_files_per_trigger))


def _count_tables(spark: Any, layout: Layout, summary: DemoSummary) -> None:
    from delta.tables import DeltaTable

    from app.tables import TABLE_NAMES

    for name in TABLE_NAMES:
        path = layout.table(name)
        if DeltaTable.isDeltaTable(spark, path):
            summary.table_rows[name] = spark.read.format("delta").load(path).count()
    summary.anomalies = summary.table_rows.get(ANOMALIES, 0)
    summary.quarantined = summary.table_rows.get(QUARANTINE, 0)


def _warehouse_counts(settings: Settings, layout: Layout) -> dict[str, int]:
    """Row counts of the warehouse tables, or an empty dict when there is no warehouse."""
    from app.sinks.warehouse.connector import connector_from_settings
    from app.sinks.warehouse.sql import WAREHOUSE_TABLE_NAMES as WAREHOUSE_TABLES
    from app.sinks.warehouse.sql import quote_ident

    connector = connector_from_settings(settings, layout)
    if connector is None:
        return {}
    loader = connector.loader()
    counts: dict[str, int] = {}
    try:
        for name in WAREHOUSE_TABLES:
            _, rows = loader.query(f"SELECT COUNT(*) FROM {quote_ident(name)}")
            counts[name] = int(rows[0][0])
    except PipelineError as exc:
        logger.warning("warehouse counts unavailable: %s", exc)
    return counts


def format_phases(summary: DemoSummary) -> list[str]:
    """The summary's timing block: wall seconds per phase, then the total."""
    lines = ["  time per phase:"]
    lines += [
        f"    {name:<22} {summary.phase_seconds[name]:>7.1f} s"
        for name in PHASES
        if name in summary.phase_seconds
    ]
    lines.append(f"    {'total':<22} {summary.elapsed_seconds:>7.1f} s")
    return lines


def format_summary(summary: DemoSummary) -> str:
    """The closing summary, in plain text."""
    lines = [
        "",
        "coinlake demo finished",
        f"  data root        {summary.data_dir}",
        f"  ingest           {summary.cycles} cycles, {summary.pages_ok} pages landed, "
        f"{summary.pages_failed} failed",
        f"  stream           {summary.batches} batches, {summary.records_read} records read",
        f"  anomalies        {summary.anomalies}",
        f"  quarantined      {summary.quarantined}",
        "  Delta tables:",
    ]
    lines += [f"    {name:<22} {rows:>9,} rows" for name, rows in summary.table_rows.items()]
    if summary.warehouse_rows:
        lines.append(f"  warehouse ({summary.warehouse}):")
        lines += [f"    {name:<22} {rows:>9,} rows" for name, rows in summary.warehouse_rows.items()]
    else:
        lines.append(f"  warehouse        {summary.warehouse}")
    lines.append(f"  report           {summary.report_path}")
    lines += format_phases(summary)
    lines += [
        "",
        "Next: coinlake status | coinlake report --coin <id> | "
        'coinlake sql "SELECT * FROM crypto_anomalies LIMIT 10" | '
        'coinlake sql --warehouse "SELECT COUNT(*) FROM SILVER_CRYPTO_CLEAN"',
    ]
    return "\n".join(lines)
