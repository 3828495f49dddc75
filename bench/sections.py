"""The bench's sections: each runs its measurement, then adds lines, checks and JSON to the report.

The targets are those of docs/BENCHMARKS.md ("What is measured"); a missed one makes
``python -m bench`` exit 1.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING

from app.tables import SILVER
from bench.report import Report
from bench.spark_runs import p50

if TYPE_CHECKING:
    import argparse

    from pyspark.sql import SparkSession

    from bench.steady import SteadyResult

TARGET_B_OVER_A = 0.5
TARGET_C_OVER_A = 0.4
TARGET_OVER_BARE = 2.0
TARGET_END_OVER_START = 1.5
TARGET_JOBS_PER_BATCH = 30
TARGET_SCALE_RATIO = 3.0


def _jobs(jobs: list[int]) -> str:
    return f"jobs/batch p50 {p50(jobs):g}, max {max(jobs)}" if jobs else "jobs/batch n/a"


def throughput(spark: SparkSession, args: argparse.Namespace, work: str, report: Report) -> None:
    """(a) ceiling, (b) full pipeline, (c) with the warehouse emulator, (s) silver floor."""
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
            raise SystemExit(f"bench: {r.name} read {r.records} records, the workload has {workload.records}")
    ba, ca = b.records_per_second / a.records_per_second, c.records_per_second / a.records_per_second
    sa = floor.records_per_second / a.records_per_second
    report.results["throughput"] = {
        "workload": asdict(workload),
        "runs": [dict(asdict(r), records_per_second=r.records_per_second) for r in (a, b, c, floor)],
        "b_over_a": ba,
        "c_over_a": ca,
        "s_over_a": sa,
    }
    report.line(
        f"Throughput: {workload.coins} coins x {workload.snapshots} snapshots = {workload.records:,} records, {mfpt} files/batch"
    )
    for r in (a, b, c, floor):
        jobs = f"  {_jobs(r.batch_jobs)}" if r.batch_jobs else ""
        report.line(
            f"  {r.name:<40} {r.seconds:8.1f} s  {r.records_per_second:9.1f} rec/s  {len(r.batch_seconds)} batches{jobs}"
        )
    report.at_least("throughput b/a", ba, TARGET_B_OVER_A)
    report.at_least("throughput c/a", ca, TARGET_C_OVER_A)
    report.check("throughput s/a floor (reported)", sa)


def steady(spark: SparkSession, args: argparse.Namespace, work: str, report: Report) -> SteadyResult:
    """One snapshot per batch at the start and at the end of a growing silver history."""
    from bench.steady import run_steady_state

    st = run_steady_state(
        spark,
        os.path.join(work, "steady"),
        coins=args.steady_coins,
        batches=args.steady_batches,
        history_snapshots=args.history_snapshots,
        shuffle_partitions=args.shuffle_partitions,
    )
    jobs = st.jobs_summary()
    report.results["steady"] = dict(
        asdict(st),
        p50_start=st.p50_start,
        p95_start=st.p95_start,
        p50_end=st.p50_end,
        p95_end=st.p95_end,
        end_over_start=st.ratio,
        p50_floor=st.p50_floor,
        p50_bare=st.p50_bare,
        over_bare=st.over_bare,
        **jobs,
    )
    report.line(
        f"Steady state: {st.coins} coins/batch; silver {st.silver_rows_start:,} -> {st.silver_rows_end:,} rows "
        f"(backfill {st.backfill_records:,} records in {st.backfill_seconds:.0f} s)"
    )
    report.line(f"  start p50 {st.p50_start:6.2f} s  p95 {st.p95_start:6.2f} s  {_jobs(st.start_jobs)}")
    report.line(
        f"  end   p50 {st.p50_end:6.2f} s  p95 {st.p95_end:6.2f} s  {_jobs(st.end_jobs)}  end/start {st.ratio:.2f}"
    )
    report.line(
        f"  silver floor (start snapshots, no stage after silver) p50 {st.p50_floor:6.2f} s  {_jobs(st.floor_jobs)}"
    )
    report.line(f"  bare stream (same snapshots, read + explode + append) p50 {st.p50_bare:6.2f} s")
    report.check("steady p50 start (s, reported)", st.p50_start)
    report.check("steady bare p50 (s, reported)", st.p50_bare)
    report.at_most("steady p50 start / bare", st.over_bare, TARGET_OVER_BARE)
    report.check("steady p50 floor (reported)", st.p50_floor)
    report.at_most("steady end/start", st.ratio, TARGET_END_OVER_START)
    report.check("silver rows at end", st.silver_rows_end, ">= 1,000,000", st.silver_rows_end >= 1_000_000)
    report.at_most("steady jobs/batch start p50", jobs["jobs_p50_start"], TARGET_JOBS_PER_BATCH)
    report.check("steady jobs/batch end (reported)", jobs["jobs_p50_end"])
    return st


def scale(
    spark: SparkSession,
    args: argparse.Namespace,
    work: str,
    report: Report,
    steady_result: SteadyResult | None,
) -> None:
    """A whole snapshot per batch, against the steady start phase's p50 (or its own run of it)."""
    from bench.scale import run_reference, run_scale

    currencies = [c.strip().lower() for c in args.scale_currencies.split(",") if c.strip()]
    sc = run_scale(
        spark,
        os.path.join(work, "scale"),
        coins=args.scale_coins,
        vs_currencies=currencies,
        repeats=args.scale_repeats,
        shuffle_partitions=args.shuffle_partitions,
    )
    if steady_result is not None:
        sc.reference = f"steady start phase ({steady_result.coins:,} coins x 1 currency per batch)"
        sc.reference_batches = steady_result.start_batches
    else:
        ref = run_reference(
            spark,
            os.path.join(work, "scale-reference"),
            coins=args.steady_coins,
            batches=args.steady_batches,
            shuffle_partitions=args.shuffle_partitions,
        )
        shutil.rmtree(os.path.join(work, "scale-reference"), ignore_errors=True)
        sc.reference = (
            f"own run of the steady start phase ({args.steady_coins:,} coins x 1 currency per batch)"
        )
        sc.reference_batches = ref.batch_seconds
    report.results["scale"] = dict(
        asdict(sc),
        p50=sc.p50,
        p50_jobs=sc.p50_jobs,
        max_jobs=sc.max_jobs,
        reference_p50=sc.reference_p50,
        ratio=sc.ratio,
        executors_p50=sc.executors_p50,
    )
    report.line(
        f"Scale: one snapshot of {sc.coins:,} coins x {len(currencies)} currencies ({','.join(currencies)}) "
        f"= {sc.records_per_batch:,} records in {sc.files_per_batch} files per batch, {len(sc.batch_seconds)} batches; "
        f"silver {sc.silver_rows:,} rows"
    )
    batches = ", ".join(f"{s:.1f}" for s in sc.batch_seconds)
    report.line(f"  p50 {sc.p50:6.2f} s  (batches {batches} s)  {_jobs(sc.batch_jobs)}")
    report.line(f"  reference: {sc.reference}, p50 {sc.reference_p50:.2f} s; ratio {sc.ratio:.2f}")
    report.line(f"  kernels ran on: {_placement_summary(sc.placements)}")
    on_executors = ", ".join(f"{s:.1f}" for s in sc.executors_batch_seconds)
    report.line(
        f"  same snapshots, COINLAKE_KERNEL_DRIVER_MAX_ROWS=0: p50 {sc.executors_p50:6.2f} s "
        f"(batches {on_executors} s), kernels ran on: {_placement_summary(sc.executors_placements)}"
    )
    report.check("scale p50 (reported)", sc.p50)
    report.check("scale p50 on executors (reported)", sc.executors_p50)
    report.at_most("scale p50 / 1,000-coin p50", sc.ratio, TARGET_SCALE_RATIO)


def _placement_summary(placements: list[str]) -> str:
    """``driver x2, executors x1`` from each batch's placement."""
    counts = Counter(placements)
    return ", ".join(f"{name} x{n}" for name, n in counts.items()) or "n/a"


def warehouse(args: argparse.Namespace, work: str, report: Report) -> None:
    """SQL statements and round trips per batch for 10, 1,000 and 10,000 changed rows."""
    from bench.warehouse_io import count_statements

    counts = count_statements(os.path.join(work, "warehouse"))
    report.results["warehouse"] = [dict(asdict(c), round_trips=c.round_trips) for c in counts]
    report.line("Warehouse per batch (every target table):")
    for c in counts:
        report.line(
            f"  {c.rows:>6,} rows: {c.statements} statements, {c.bulk_calls} bulk loads, {c.connections} connections = {c.round_trips} round trips"
        )
    constant = len({(c.statements, c.bulk_calls, c.connections) for c in counts}) == 1
    report.check("warehouse statements constant", counts[-1].statements, "same for all sizes", constant)


def ingest(args: argparse.Namespace, work: str, report: Report) -> None:
    """API calls per cycle for a large universe, and the 429s our own client caused."""
    from bench import ingest_calls  # looked up at call time: the tests replace measure_ingest

    ing = ingest_calls.measure_ingest(os.path.join(work, "ingest"), coins=args.ingest_coins)
    report.results["ingest"] = asdict(ing)
    report.line(
        f"Ingest: {ing.coins:,} coins -> {ing.calls_per_vs_currency:.0f} /coins/markets calls per vs currency, "
        f"{ing.records:,} records in {ing.seconds:.1f} s at {ing.rate_limit_per_minute}/min; self-caused 429s: {ing.self_caused_429}"
    )
    expected = math.ceil(ing.coins / 250)  # 40 for 10,000 coins at 250 per page
    report.check(
        "ingest calls per vs currency",
        ing.calls_per_vs_currency,
        f"== {expected}",
        ing.calls_per_vs_currency == expected,
    )
    report.check("ingest self-caused 429s", ing.self_caused_429, "== 0", ing.self_caused_429 == 0)


def soak(spark: SparkSession, args: argparse.Namespace, work: str, report: Report) -> None:
    """A long interval-trigger stream: driver memory, descriptors, checkpoint and Delta logs per 100 batches."""
    from bench.soak import run_soak

    def progress(sample):  # type: ignore[no-untyped-def]
        # One JSON line per sample, so a run stopped early still leaves its figures.
        print("soak sample " + json.dumps(asdict(sample)), flush=True)

    res = run_soak(
        spark,
        os.path.join(work, "soak"),
        coins=args.soak_coins,
        batches=args.soak_batches,
        sample_every=args.soak_sample_every,
        warmup=args.soak_warmup,
        interval=args.soak_interval,
        age_logs_at=args.soak_age_logs_at,
        shuffle_partitions=args.shuffle_partitions,
        on_sample=progress,
    )
    report.results["soak"] = res.as_dict()
    report.line(
        f"Soak: {res.batches} interval batches ({res.interval}) of {res.coins} coins, sampled every "
        f"{res.sample_every}; growth per 100 batches after the first {res.warmup} (first -> last):"
    )
    for metric in res.metrics():
        first, last = res.span(metric)
        report.line(f"  {metric:<44} {res.growth_per_100(metric):+12.2f}   ({first:,.1f} -> {last:,.1f})")
    for metric, label in (
        ("jvm_heap_after_gc_mb", "heap MB"),
        ("jvm_fds", "JVM fds"),
        ("checkpoint_files", "ckpt files"),
    ):
        report.check(f"soak {label}/100 batches", res.growth_per_100(metric))
    cleanup = res.log_cleanup()
    if cleanup:
        report.line(
            f"  Delta logs aged {res.logs_aged_days} days after batch {res.logs_aged_after}; "
            "files then -> lowest after (Delta's cleanup at the next checkpoint):"
        )
        for table, (then, lowest) in cleanup.items():
            report.line(f"    {table:<42} {then:>6} -> {lowest:>6}")
    if SILVER in cleanup and res.batches - res.logs_aged_after >= 10:  # silver checkpoints every 10 commits
        then, lowest = cleanup[SILVER]
        report.check("soak silver logs after cleanup", lowest, f"< {then} (aged)", lowest < then)


TARGET_IDLE_TRIGGER_SECONDS = 0.5
TARGET_FRESHNESS_RATIO = 1.2
TARGET_CHECKPOINT_KB_PER_100 = 10.0


def age(spark: SparkSession, args: argparse.Namespace, work: str, report: Report) -> None:
    """Idle trigger, freshness and checkpoint growth on an old lake: the file source (before) and
    the listing source (after), in the same run (bench/age.py)."""
    from bench.age import checkpoint_growth, freshness, idle_triggers
    from bench.spark_runs import p50

    sizes = [int(s) for s in args.age_sizes.split(",") if s.strip()]
    results: dict[str, object] = {"sizes": sizes, "idle": [], "growth": {}, "freshness": {}}
    report.line(
        f"Age: idle triggers ({args.age_triggers} each; file source up to {args.age_before_max:,} files):"
    )
    for files in sizes:
        for source in ("files", "listing"):
            if source == "files" and files > args.age_before_max:
                continue
            res = idle_triggers(
                spark,
                os.path.join(work, "age", f"lake_{files}"),
                files,
                source=source,
                triggers=args.age_triggers,
            )
            results["idle"].append(asdict(res))  # type: ignore[attr-defined]
            trigger, listing = p50(res.trigger_s), p50(res.listing_s)
            report.line(
                f"  {source:<8} {files:>9,} files processed: idle trigger p50 {trigger:.3f} s (listing {listing:.3f} s)"
            )
            name = f"age idle {source} {f'{files // 1000}k' if files >= 1000 else files}"
            if source == "listing":
                report.at_most(name, trigger, TARGET_IDLE_TRIGGER_SECONDS)
            else:
                report.check(f"{name} (before)", trigger)
    for source in ("files", "listing") if args.age_growth_batches else ():
        before, after, per_100 = checkpoint_growth(
            spark,
            os.path.join(work, "age", "growth"),
            source=source,
            batches=args.age_growth_batches,
            warmup=args.age_growth_warmup,
        )
        results["growth"][source] = {
            "bytes_after_warmup": before,
            "bytes_at_end": after,
            "kb_per_100": per_100 / 1024,
        }  # type: ignore[index]
        report.line(
            f"  checkpoint {source:<8} {before:,} -> {after:,} bytes over batches "
            f"{args.age_growth_warmup}..{args.age_growth_batches}: {per_100 / 1024:+.2f} KB per 100 batches"
        )
        name = f"age ckpt KB/100 {source}"
        if source == "listing":
            report.at_most(name, per_100 / 1024, TARGET_CHECKPOINT_KB_PER_100)
        else:
            report.check(f"{name} (before)", per_100 / 1024)
    if args.age_freshness:
        aged = max(sizes)
        fresh = freshness(
            spark,
            os.path.join(work, "age", "lake_0"),
            processed=0,
            coins=args.age_coins,
            shuffle_partitions=args.shuffle_partitions,
            snapshots=args.age_snapshots,
        )
        old = freshness(
            spark,
            os.path.join(work, "age", f"lake_{aged}"),
            processed=aged,
            coins=args.age_coins,
            shuffle_partitions=args.shuffle_partitions,
            snapshots=args.age_snapshots,
        )
        results["freshness"] = {"fresh_s": fresh, "aged_s": old, "aged_files": aged}
        report.line(
            f"  freshness ({args.age_coins:,} records landed -> batch done, p50 of {len(fresh)}): "
            f"fresh lake {p50(fresh):.2f} s {[round(x, 1) for x in fresh]}, "
            f"{aged:,} files processed {p50(old):.2f} s {[round(x, 1) for x in old]}"
        )
        report.at_most("age freshness aged/fresh", p50(old) / p50(fresh), TARGET_FRESHNESS_RATIO)
    report.results["age"] = results
