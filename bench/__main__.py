"""``python -m bench``: the coinlake benchmark (docs/BENCHMARKS.md).

Sections, all in one process and one SparkSession:

* throughput: (a) the bare-stream ceiling, (b) the full pipeline without warehouse, (c) with the
  warehouse emulator, and (s) the silver floor (no stage after silver), over copies of the same
  generated bronze; ratios b/a and c/a, and s/a for reference;
* steady state: one snapshot of ``--steady-coins`` coins per batch on an empty lakehouse, a
  backfill to a large silver history, then the same batches again: p50/p95, end/start and the
  Spark jobs each batch ran; the silver floor's and the bare stream's p50 over the start phase's
  snapshots, and the start p50 over the bare stream's;
* scale: a whole CoinGecko snapshot (``--scale-coins`` x ``--scale-currencies``) in ONE batch,
  ``--scale-repeats`` times: p50 and its ratio to the steady start phase's p50; then the same
  snapshots with every batch's kernels on the executors (``kernel_driver_max_rows=0``), reported;
* warehouse: SQL statements and round trips per batch for 10, 1,000 and 10,000 changed rows;
* ingest: API calls per cycle for 10,000 coins and the 429s our own client caused;
* age (only when asked: ``--sections age``): idle trigger time over ``--age-sizes`` bronze files
  already processed, checkpoint bytes per 100 batches, and the freshness of a new snapshot on the
  oldest lake against a fresh one; the file source (before) beside the listing source (after);
* soak (only when asked: ``--sections soak``): ``--soak-batches`` interval-trigger batches of one
  small snapshot each, sampling driver memory, descriptors, the checkpoint and the Delta logs;
  growth per 100 batches after the warm-up (reported, not a target).

Prints a table, writes the numbers as JSON (``--out``), and exits 1 when a target is missed, so
the numbers cannot silently rot. ``--smoke`` runs every section at toy sizes and checks only that
the harness works (targets are reported, not enforced).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime

from bench import sections
from bench.report import Report

DEFAULT_SECTIONS = ("throughput", "steady", "scale", "warehouse", "ingest")
SECTIONS = (*DEFAULT_SECTIONS, "soak", "age")
SPARK_SECTIONS = {"throughput", "steady", "scale", "soak", "age"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        epilog=_targets(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
    p.add_argument(
        "--scale-coins",
        type=int,
        default=17_000,
        help="scale: coins in the one-batch snapshot (about all of CoinGecko's)",
    )
    p.add_argument(
        "--scale-currencies",
        default="usd,eur,btc",
        help="scale: comma-separated vs currencies of the snapshot (with 17,000 coins: ~51,000 records)",
    )
    p.add_argument("--scale-repeats", type=int, default=3, help="scale: successive snapshots, one batch each")
    p.add_argument("--ingest-coins", type=int, default=10_000, help="ingest: universe size")
    p.add_argument("--soak-coins", type=int, default=20, help="soak: coins per batch (one bronze file)")
    p.add_argument("--soak-batches", type=int, default=200, help="soak: interval-trigger batches")
    p.add_argument("--soak-sample-every", type=int, default=10, help="soak: sample every N batches")
    p.add_argument(
        "--soak-warmup",
        type=int,
        default=110,
        help="soak: batches left out of the growth (Spark keeps the checkpoint files of the last 100 "
        "batches, spark.sql.streaming.minBatchesToRetain, so their count is flat only after that)",
    )
    p.add_argument(
        "--soak-age-logs-at",
        type=int,
        default=100,
        help="soak: after this batch, move the Delta logs' file times a month back so that the "
        "next checkpoints must delete them (Delta keeps 30 days of log); 0: never",
    )
    p.add_argument("--soak-interval", default="1s", help="soak: trigger interval")
    p.add_argument(
        "--age-sizes",
        default="0,14400,100000,500000",
        help="age: bronze files already processed (zero-byte, one a minute: 500,000 is about a year)",
    )
    p.add_argument(
        "--age-before-max",
        type=int,
        default=14_400,
        help="age: largest size the file source (before) is measured at (its idle trigger lists all of "
        "bronze: 22.5 s at 14,400 files in the issue's probe)",
    )
    p.add_argument("--age-triggers", type=int, default=5, help="age: idle triggers measured per size")
    p.add_argument(
        "--age-growth-batches",
        type=int,
        default=300,
        help="age: one-file batches for checkpoint growth (0: skip)",
    )
    p.add_argument(
        "--age-growth-warmup",
        type=int,
        default=170,
        help="age: batches before the first checkpoint size: Spark keeps the last 100 batches' offsets and "
        "commits, and the listing source's offset grows until its window holds COINLAKE_BRONZE_LATE_MINUTES "
        "(60) of the one-a-minute files, so its size is steady from batch 160 on",
    )
    p.add_argument("--age-coins", type=int, default=1000, help="age: records of the freshness snapshot")
    p.add_argument("--age-snapshots", type=int, default=3, help="age: measured snapshots per lake (p50)")
    p.add_argument(
        "--age-no-freshness", dest="age_freshness", action="store_false", help="age: skip the pipeline runs"
    )
    p.add_argument("--master", default="local[2]", help="Spark master")
    p.add_argument("--shuffle-partitions", type=int, default=2)
    p.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    p.add_argument("--smoke", action="store_true", help="toy sizes; report targets but never fail on them")
    return p


def _targets() -> str:
    t = sections
    return (
        f"Targets (exit 1 when one is missed): throughput b/a >= {t.TARGET_B_OVER_A}, "
        f"c/a >= {t.TARGET_C_OVER_A}; steady p50 <= {t.TARGET_OVER_BARE}x the bare stream's p50 over "
        "the same snapshots (same run), "
        f"end/start <= {t.TARGET_END_OVER_START} with silver >= 1M rows, "
        f"<= {t.TARGET_JOBS_PER_BATCH} Spark jobs per batch (start p50); scale p50 <= "
        f"{t.TARGET_SCALE_RATIO}x the steady start p50; warehouse statements constant; ingest "
        "40 calls per vs currency for 10,000 coins, 0 self-caused 429s; age (listing source): idle "
        f"trigger <= {t.TARGET_IDLE_TRIGGER_SECONDS} s at every size, checkpoint <= "
        f"{t.TARGET_CHECKPOINT_KB_PER_100} KB per 100 batches, freshness <= {t.TARGET_FRESHNESS_RATIO}x a fresh lake."
    )


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """The chosen sections; a bad option value stops with a usage error before any work."""
    from app.sources.market_model import SUPPORTED_VS

    chosen = {s.strip() for s in args.sections.split(",") if s.strip()}
    if chosen - set(SECTIONS):
        unknown = ",".join(sorted(chosen - set(SECTIONS)))
        parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    currencies = [c.strip().lower() for c in args.scale_currencies.split(",") if c.strip()]
    if not currencies or set(currencies) - set(SUPPORTED_VS):
        parser.error(
            f"--scale-currencies: expected some of {','.join(SUPPORTED_VS)}, found {args.scale_currencies!r}"
        )
    if min(args.scale_coins, args.scale_repeats) < 1:
        parser.error("--scale-coins and --scale-repeats must be positive")
    if (
        0 < args.age_growth_batches <= args.age_growth_warmup
        or min(args.age_triggers, args.age_snapshots) < 1
    ):
        parser.error(
            "--age-growth-batches must be 0 (skip) or exceed --age-growth-warmup; "
            "--age-triggers and --age-snapshots positive"
        )
    if args.soak_age_logs_at < 0:
        parser.error("--soak-age-logs-at must be 0 (never) or a batch number")
    if not 1 <= args.soak_coins <= 250 or min(args.soak_batches, args.soak_sample_every) < 1:
        parser.error(
            "--soak-coins must be 1..250 (one file per batch); --soak-batches and --soak-sample-every positive"
        )
    return chosen


def _smoke(args: argparse.Namespace) -> None:
    args.coins, args.snapshots, args.max_files_per_trigger = 20, 2, 2
    args.steady_coins, args.steady_batches, args.history_snapshots = 20, 1, 1
    args.scale_coins, args.scale_currencies, args.scale_repeats = 200, "usd,eur", 2
    args.ingest_coins = 600
    args.soak_coins, args.soak_batches, args.soak_sample_every, args.soak_warmup = 5, 3, 1, 1
    args.soak_age_logs_at = 2
    args.age_sizes, args.age_before_max, args.age_triggers = "0,200", 200, 2
    args.age_growth_batches, args.age_growth_warmup, args.age_coins, args.age_snapshots = 12, 4, 20, 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.smoke:
        _smoke(args)
    chosen = _check_args(parser, args)
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    report = Report()
    report.results.update(
        started_at=datetime.now(UTC).isoformat(),
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "master": args.master},
        args=vars(args),
    )

    if chosen & SPARK_SECTIONS:
        from app.spark import build_spark

        spark = build_spark(
            app_name="coinlake-bench", master=args.master, shuffle_partitions=args.shuffle_partitions
        )
    steady = None
    if "throughput" in chosen:
        sections.throughput(spark, args, work, report)
    if "steady" in chosen:
        steady = sections.steady(spark, args, work, report)
    if "scale" in chosen:
        sections.scale(spark, args, work, report, steady)
    if "warehouse" in chosen:
        sections.warehouse(args, work, report)
    if "ingest" in chosen:
        sections.ingest(args, work, report)
    if "soak" in chosen:
        sections.soak(spark, args, work, report)
    if "age" in chosen:
        sections.age(spark, args, work, report)

    report.results["finished_at"] = datetime.now(UTC).isoformat()
    print("\n".join(report.lines))
    print()
    print(report.table())
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(report.to_json(), fh, indent=2, default=str)
    if report.missed and not args.smoke:
        print(f"\nMISSED: {', '.join(report.missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    print(f"\n(bench took {time.monotonic() - t0:.0f} s)")
    sys.exit(code)
