"""``coinlake ingest [--once] [--check]``: land CoinGecko pages in bronze."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.common import layout_of, settings_from_args
from app.errors import SourceTerminalError, SourceTransientError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "ingest",
        help="poll CoinGecko /coins/markets and land every page in bronze",
        description=(
            "Fetch every page of /coins/markets for every configured vs currency and land each "
            "page as one immutable bronze file. Without --once, poll every "
            "COINLAKE_POLL_INTERVAL_SECONDS until SIGINT/SIGTERM."
        ),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one cycle and exit")
    mode.add_argument("--check", action="store_true", help="ping the API (reachability and key) and exit")
    parser.set_defaults(handler=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    from app.sources.ingester import check_source, poll_forever, run_cycle

    settings = settings_from_args(args)
    layout = layout_of(settings)
    if args.check:
        try:
            greeting = check_source(settings)
        except (SourceTerminalError, SourceTransientError) as exc:
            raise type(exc)(f"CoinGecko check failed at {settings.effective_api_base_url}: {exc}") from None
        print(f"ok: {settings.effective_api_base_url} says {greeting!r}")
        return 0
    if args.once:
        result = run_cycle(settings, layout)
        print(
            f"run {result.run_id[:8]}: {result.status}, pages ok {result.pages_ok}, "
            f"failed {len(result.pages_failed)}, records {result.records}, calls {result.calls}, "
            f"429s {result.http_429}, {result.duration_seconds:.1f}s"
        )
        if result.status == "failed":
            reason = result.error or (
                result.pages_failed[0].reason if result.pages_failed else "no page landed"
            )
            raise SourceTerminalError(f"ingest cycle failed: {reason}")
        return 0 if result.status == "ok" else 1
    results = poll_forever(settings, layout)
    print(f"stopped after {len(results)} cycle(s)")
    return 0
