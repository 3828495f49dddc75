"""``coinlake demo [--fresh]``: the whole pipeline offline, on the embedded defaults."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.commands.common import settings_from_args


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole pipeline offline (simulator, ingest, stream, warehouse emulator, report)",
        description=(
            "Starts the CoinGecko simulator on a loopback port, runs ingest cycles on a simulated "
            "clock, runs the stream available-now (silver, anomalies, gold, warehouse), writes the "
            "report and prints a summary. A re-run continues the same market; --fresh starts clean."
        ),
    )
    parser.add_argument("--fresh", action="store_true", help="empty the data root's coinlake folders first")
    parser.add_argument("--coins", type=int, default=300, help="simulated coins (default 300)")
    parser.add_argument("--cycles", type=int, default=120, help="ingest cycles (default 120)")
    parser.add_argument(
        "--step-seconds", type=int, default=300, help="simulated seconds between cycles (default 300)"
    )
    parser.add_argument("--seed", type=int, default=7, help="market seed (default 7)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from app.demo import DemoOptions, format_summary, run_demo

    if args.coins < 1 or args.cycles < 1 or args.step_seconds < 1:
        raise SystemExit("coinlake: error: --coins, --cycles and --step-seconds must be positive")
    settings = settings_from_args(args)
    if args.fresh:  # before the log file opens: --fresh empties logs/ too
        from app.demo import reset_data_root
        from app.paths import Layout

        reset_data_root(Layout.from_root(settings.data_dir))
    log_path = _log_to_file(settings)
    print(f"coinlake demo: data root {settings.data_dir}; logs in {log_path}")
    options = DemoOptions(
        coins=args.coins,
        cycles=args.cycles,
        step_seconds=args.step_seconds,
        seed=args.seed,
    )
    summary = run_demo(settings, options, out=sys.stdout)
    print(format_summary(summary))
    print(f"  logs             {log_path}")
    return 0


def _log_to_file(settings: Any) -> str:
    """Send the structured logs to ``<root>/logs/demo.log``: the terminal keeps progress and summary."""
    import os

    from app.logs import configure_logging
    from app.paths import Layout, local_path

    folder = local_path(Layout.from_root(settings.data_dir).logs_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "demo.log")
    configure_logging("json", settings.log_level, stream=open(path, "a", encoding="utf-8"))  # noqa: SIM115
    return path
