"""``coinlake simulate``: the CoinGecko-compatible server on loopback, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import UTC, datetime
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate",
        help="serve a CoinGecko-compatible API on loopback (with optional faults)",
        description=(
            "Serve /api/v3/ping, /api/v3/coins/markets and /api/v3/simple/price from a seeded "
            "market that moves with wall time. Point the ingester at it with "
            "COINLAKE_API_BASE_URL=http://127.0.0.1:PORT/api/v3."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8787, help="TCP port (0: any free port)")
    parser.add_argument("--coins", type=int, default=1000, help="universe size")
    parser.add_argument("--seed", type=int, default=42, help="market seed")
    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--rate-limit", type=int, default=None, metavar="N", help="enforce N calls/minute (429)"
    )
    faults.add_argument(
        "--retry-after", type=int, default=None, metavar="S", help="fixed Retry-After seconds"
    )
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="F", help="fraction of 500/502/503")
    faults.add_argument(
        "--slow-rate", type=float, default=0.0, metavar="F", help="fraction of slow responses"
    )
    faults.add_argument(
        "--slow-seconds", type=float, default=35.0, metavar="S", help="delay of a slow response"
    )
    faults.add_argument(
        "--truncate-rate", type=float, default=0.0, metavar="F", help="fraction of cut bodies"
    )
    faults.add_argument(
        "--html-rate", type=float, default=0.0, metavar="F", help="fraction of HTML error pages"
    )
    faults.add_argument("--empty-rate", type=float, default=0.0, metavar="F", help="fraction of empty pages")
    faults.add_argument(
        "--require-key", default=None, metavar="KEY", help="demand this API key (401 10002 else)"
    )
    faults.add_argument("--plan", choices=("demo", "pro"), default="demo", help="which key header to expect")
    parser.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from app.logs import configure_logging
    from app.sources.simulator import Faults, start_simulator

    configure_logging("text", "INFO")
    faults = Faults(
        rate_limit_per_minute=args.rate_limit,
        retry_after=args.retry_after,
        error_rate=args.error_rate,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        truncate_rate=args.truncate_rate,
        html_rate=args.html_rate,
        empty_rate=args.empty_rate,
        api_key=args.require_key,
        plan=args.plan,
    )
    handle = start_simulator(
        host=args.host,
        port=args.port,
        coins=args.coins,
        seed=args.seed,
        faults=faults,
        realtime=True,
        start=datetime.now(UTC),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"CoinGecko simulator: {handle.base_url}  ({args.coins} coins, seed {args.seed}); Ctrl-C stops")
    print(f"  export COINLAKE_API_BASE_URL={handle.base_url}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        stats = handle.stats
        handle.stop()
        print(f"served {stats.calls} calls, {stats.rate_limited} rate-limited, {stats.storm_429} storm 429s")
    return 0
