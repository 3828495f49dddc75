"""``python -m bench``: the coinlake benchmark (docs/BENCHMARKS.md).

Sections, all in one process and one SparkSession:

* throughput: (a) the bare-stream ceiling, (b) the full pipeline without warehouse, (c) with the
  warehouse emulator, and (s) the silver floor (no stage after silver), over copies of the same
  generated bronze; ratios b/a and c/a, and s/a for reference;
* steady state: one snapshot of ``--steady-coins`` coins per batch on an empty lakehouse, a
  backfill to a large silver history, then the same batches again: p50/p95 and end/start; and the
  silver floor's p50 over the start phase's snapshots;
* warehouse: SQL statements and round trips per batch for 10, 1,000 and 10,000 changed rows;
* ingest: API calls per cycle for 10,000 coins and the 429s our own client caused.

Prints a table, writes the numbers as JSON (``--out``), and exits 1 when a target is missed, so
the numbers cannot silently rot. ``--smoke`` runs every section at toy sizes and checks only that
the harness works (targets are reported, not enforced).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

TARGET_B_OVER_A = 0.5
TARGET_P50_SECONDS = 5.0
TARGET_END_OVER_START = 1.5


@dataclass
class Check:
    name: str
    value: float
    target: str
    ok: bool


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", default=os.path.join("data", "bench"), help="scratch folder (wiped)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--coins", type=int, default=1000, help="throughput workload: coins per snapshot")
    p.add_argument("--snapshots", type=int, default=60, help="throughput workload: snapshots")
    p.add_argument(
        "--max-files-per-trigger", type=int, default=100, help="bronze files per batch (throughput)"
    )
    p.add_argument("--steady-coins", type=int, default=1000, help="steady state: coins per batch")
    p.add_argument("--steady-batches", type=int, default=8, help="steady state: measured batches per phase")
    p.add_argument(
        "--history-snapshots",
        type=int,
        default=1200,
        help="steady state: backfilled snapshots between phases (1,000 gave 914k silver rows, as "
        "unchanged snapshots collapse; at that rate 1,200 give about 1.1M, past the 1M asked for)",
    )
    p.add_argument("--ingest-coins", type=int, default=10_000, help="ingest: universe size")
    p.add_argument("--master", default="local[2]", help="Spark master")
    p.add_argument("--shuffle-partitions", type=int, default=2)
    p.add_argument(
        "--sections",
        default="throughput,steady,warehouse,ingest",
        help="comma-separated subset of throughput,steady,warehouse,ingest",
    )
    p.add_argument("--smoke", action="store_true", help="toy sizes; report targets but never fail on them")
    return p


def _smoke(args: argparse.Namespace) -> None:
    args.coins, args.snapshots, args.max_files_per_trigger = 20, 2, 2
    args.steady_coins, args.steady_batches, args.history_snapshots = 20, 1, 1
    args.ingest_coins = 600


def _fmt(v: float, unit: str = "") -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    return f"{v:,.2f}{unit}" if isinstance(v, float) else f"{v:,}{unit}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        _smoke(args)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    results: dict[str, object] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "master": args.master},
        "args": vars(args),
    }
    checks: list[Check] = []
    lines: list[str] = []

    if sections & {"throughput", "steady"}:
        from app.spark import build_spark

        spark = build_spark(
            app_name="coinlake-bench", master=args.master, shuffle_partitions=args.shuffle_partitions
        )

    if "throughput" in sections:
        import shutil

        from app.paths import Layout
        from bench.spark_runs import SILVER_ALONE, copy_bronze, pipeline_settings, run_ceiling, run_pipeline
        from bench.workload import generate

        src = Layout.from_root(os.path.join(work, "workload"))
        shutil.rmtree(src.root, ignore_errors=True)
        workload = generate(src, coins=args.coins, snapshots=args.snapshots)
        mfpt = args.max_files_per_trigger
        a = run_ceiling(spark, copy_bronze(src, os.path.join(work, "a")), max_files_per_trigger=mfpt)

        def over_copy(run: str, name: str, warehouse: str, stages=None):  # type: ignore[no-untyped-def]
            layout = copy_bronze(src, os.path.join(work, run))
            settings = pipeline_settings(
                layout,
                warehouse=warehouse,
                max_files_per_trigger=mfpt,
                shuffle_partitions=args.shuffle_partitions,
            )
            return run_pipeline(spark, layout, settings, name=name, stages=stages)

        b = over_copy("b", "b: full pipeline, no warehouse", "none")
        c = over_copy("c", "c: full pipeline + warehouse emulator", "emulator")
        floor = over_copy("s", "s: silver floor (no stage after silver)", "none", SILVER_ALONE)
        for r in (a, b, c, floor):
            if r.records != workload.records:
                raise SystemExit(
                    f"bench: {r.name} read {r.records} records, the workload has {workload.records}"
                )
        ba, ca = b.records_per_second / a.records_per_second, c.records_per_second / a.records_per_second
        sa = floor.records_per_second / a.records_per_second
        results["throughput"] = {
            "workload": asdict(workload),
            "runs": [dict(asdict(r), records_per_second=r.records_per_second) for r in (a, b, c, floor)],
            "b_over_a": ba,
            "c_over_a": ca,
            "s_over_a": sa,
        }
        lines.append(
            f"Throughput: {workload.coins} coins x {workload.snapshots} snapshots = {workload.records:,} records, {mfpt} files/batch"
        )
        for r in (a, b, c, floor):
            lines.append(
                f"  {r.name:<40} {r.seconds:8.1f} s  {r.records_per_second:9.1f} rec/s  {len(r.batch_seconds)} batches"
            )
        checks.append(Check("throughput b/a", ba, f">= {TARGET_B_OVER_A}", ba >= TARGET_B_OVER_A))
        checks.append(Check("throughput c/a (reported)", ca, "-", True))
        checks.append(Check("throughput s/a floor (reported)", sa, "-", True))

    if "steady" in sections:
        from bench.spark_runs import run_steady_state

        steady = run_steady_state(
            spark,
            os.path.join(work, "steady"),
            coins=args.steady_coins,
            batches=args.steady_batches,
            history_snapshots=args.history_snapshots,
            shuffle_partitions=args.shuffle_partitions,
        )
        results["steady"] = dict(
            asdict(steady),
            p50_start=steady.p50_start,
            p95_start=steady.p95_start,
            p50_end=steady.p50_end,
            p95_end=steady.p95_end,
            end_over_start=steady.ratio,
            p50_floor=steady.p50_floor,
        )
        lines.append(
            f"Steady state: {steady.coins} coins/batch; silver {steady.silver_rows_start:,} -> {steady.silver_rows_end:,} rows "
            f"(backfill {steady.backfill_records:,} records in {steady.backfill_seconds:.0f} s)"
        )
        lines.append(f"  start p50 {steady.p50_start:6.2f} s  p95 {steady.p95_start:6.2f} s")
        lines.append(
            f"  end   p50 {steady.p50_end:6.2f} s  p95 {steady.p95_end:6.2f} s  end/start {steady.ratio:.2f}"
        )
        lines.append(f"  silver floor (start snapshots, no stage after silver) p50 {steady.p50_floor:6.2f} s")
        checks.append(
            Check(
                "steady p50 start (s)",
                steady.p50_start,
                f"<= {TARGET_P50_SECONDS}",
                steady.p50_start <= TARGET_P50_SECONDS,
            )
        )
        checks.append(
            Check(
                "steady p50 end (s)",
                steady.p50_end,
                f"<= {TARGET_P50_SECONDS}",
                steady.p50_end <= TARGET_P50_SECONDS,
            )
        )
        checks.append(Check("steady p50 floor (reported)", steady.p50_floor, "-", True))
        checks.append(
            Check(
                "steady end/start",
                steady.ratio,
                f"<= {TARGET_END_OVER_START}",
                steady.ratio <= TARGET_END_OVER_START,
            )
        )
        checks.append(
            Check(
                "silver rows at end",
                float(steady.silver_rows_end),
                ">= 1,000,000",
                steady.silver_rows_end >= 1_000_000,
            )
        )

    if "warehouse" in sections:
        from bench.warehouse_io import count_statements

        counts = count_statements(os.path.join(work, "warehouse"))
        results["warehouse"] = [dict(asdict(c), round_trips=c.round_trips) for c in counts]
        lines.append("Warehouse per batch (every target table):")
        for c in counts:
            lines.append(
                f"  {c.rows:>6,} rows: {c.statements} statements, {c.bulk_calls} bulk loads, {c.connections} connections = {c.round_trips} round trips"
            )
        constant = len({(c.statements, c.bulk_calls, c.connections) for c in counts}) == 1
        checks.append(
            Check(
                "warehouse statements constant", float(counts[-1].statements), "same for all sizes", constant
            )
        )

    if "ingest" in sections:
        from bench.ingest_calls import measure_ingest

        ing = measure_ingest(os.path.join(work, "ingest"), coins=args.ingest_coins)
        results["ingest"] = asdict(ing)
        lines.append(
            f"Ingest: {ing.coins:,} coins -> {ing.calls_per_vs_currency:.0f} /coins/markets calls per vs currency, "
            f"{ing.records:,} records in {ing.seconds:.1f} s at {ing.rate_limit_per_minute}/min; self-caused 429s: {ing.self_caused_429}"
        )
        expected = math.ceil(ing.coins / 250)  # 40 for 10,000 coins at 250 per page
        checks.append(
            Check(
                "ingest calls per vs currency",
                ing.calls_per_vs_currency,
                f"== {expected}",
                ing.calls_per_vs_currency == expected,
            )
        )
        checks.append(
            Check("ingest self-caused 429s", float(ing.self_caused_429), "== 0", ing.self_caused_429 == 0)
        )

    results["checks"] = [asdict(c) for c in checks]
    results["finished_at"] = datetime.now(UTC).isoformat()
    print("\n".join(lines))
    print()
    print(f"{'check':<34} {'value':>14}  {'target':<20} result")
    for c in checks:
        print(f"{c.name:<34} {_fmt(c.value):>14}  {c.target:<20} {'ok' if c.ok else 'MISSED'}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=str)
    missed = [c.name for c in checks if not c.ok]
    if missed and not args.smoke:
        print(f"\nMISSED: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    print(f"\n(bench took {time.monotonic() - t0:.0f} s)")
    sys.exit(code)
