"""Databricks / spark-submit entry point: land CoinGecko pages in bronze (one cycle or forever).

python jobs/ingest.py [--data-dir ROOT] [--once]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the ingest job."""
    parser = argparse.ArgumentParser(
        prog="jobs/ingest.py",
        description="Poll CoinGecko /coins/markets and land each page as a bronze file.",
    )
    parser.add_argument("--data-dir", help="data root (overrides COINLAKE_DATA_DIR)")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit (default: poll forever)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load settings, run the ingester."""
    args = build_parser().parse_args(argv)
    from app.config import load_settings
    from app.logs import configure_logging
    from app.paths import Layout
    from app.sources.ingester import poll_forever, run_cycle

    settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    configure_logging(settings.log_format, settings.log_level)
    layout = Layout.from_root(settings.data_dir)
    if args.once:
        result = run_cycle(settings, layout)
        return 0 if result.status == "ok" else 1
    poll_forever(settings, layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
