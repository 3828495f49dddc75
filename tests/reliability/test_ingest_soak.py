"""Sustained ingest under the simulator's whole fault schedule, checked from both ends.

The real ingester cycle (:func:`app.sources.ingester.run_cycle`, the body of ``coinlake ingest``)
runs many times against the loopback simulator with every fault kind switched on at once: random
5xx, bursts of consecutive 5xx (longer than the retry budget, so pages fail), slow answers past the
client timeout, truncated bodies (honest and lying lengths), HTML error pages, empty pages, 429
storms with ``Retry-After``, and a window of calls refused 401 as if the key were revoked mid-run.

Backoffs are shortened and the rate limit is 8 calls per 1 s (the real :class:`RateLimiter`,
with a short period instead of a minute) so that the limiter binds many times in a ~40 s run.

Checked:
- no partial file: no dot-temp left, every bronze file is a complete envelope of a whole page;
- no duplicate: one file per (cycle, currency, page), and each complete 200 the server sent
  landed exactly once;
- the rate limit held at the server: no 1 s window holds more than 8 arrivals, and the
  limiter did have to wait (its sleeps are counted, not timed);
- retries stayed bounded: no page was asked for more than ``max_attempts`` times per cycle.
- every failed page is in ``logs/ingest_runs.jsonl``: per cycle, the pages the server saw
  requested are exactly the pages landed plus the pages reported failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from app.config import load_settings
from app.paths import Layout
from app.sources.coingecko import ClientConfig, CoinGeckoClient, source_retry_policy
from app.sources.ingester import read_run_log, run_cycle
from app.sources.ratelimit import RateLimiter
from app.sources.simulator import API_PREFIX, Faults, start_simulator

# A soak (30 cycles, ~40 s of wall time on its own): in CI, not in ./dev.sh test --quick.
pytestmark = pytest.mark.slow

SEED = 11
CYCLES = 30
LIMIT_CALLS, LIMIT_PERIOD = 8, 1.0
CURRENCIES = ("usd", "eur")
TOP_N, PER_PAGE = 60, 20  # 3 pages per currency, 6 per cycle
TIMEOUT_SECONDS, SLOW_SECONDS = 2.0, 2.5
FAULTS = Faults(
    error_rate=0.03,
    burst_rate=0.015,
    burst_length=5,  # more than max_attempts: the page fails
    slow_rate=0.012,
    slow_seconds=SLOW_SECONDS,
    truncate_rate=0.05,
    html_rate=0.03,
    empty_rate=0.015,
    storm_rate=0.012,
    storm_seconds=1.5,
    auth_outage_calls=(120, 123),
    seed=SEED,
)
RETRY = source_retry_policy(
    max_attempts=4, max_total_seconds=8.0, backoff_initial=0.05, backoff_max=0.4, jitter=0.05
)
ENVELOPE_KEYS = {"source", "endpoint", "request", "fetched_at", "http_status", "run_id", "page", "data"}
MARKETS = API_PREFIX + "/coins/markets"


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    root = tmp_path_factory.mktemp("soak") / "data"
    layout = Layout.from_root(str(root))
    sim = start_simulator(port=0, coins=200, seed=SEED, faults=FAULTS)
    settings = load_settings(
        data_dir=str(root),
        api_base_url=sim.base_url,
        vs_currencies=",".join(CURRENCIES),
        top_n=TOP_N,
        per_page=PER_PAGE,
        http_timeout_seconds=TIMEOUT_SECONDS,
        max_attempts=RETRY.max_attempts,
        max_retry_seconds=RETRY.max_total_seconds,
    )
    config = dataclasses.replace(ClientConfig.from_settings(settings), retry=RETRY)
    limiter_sleeps: list[float] = []

    def limiter_sleep(seconds: float) -> None:
        limiter_sleeps.append(seconds)
        time.sleep(seconds)

    limiter = RateLimiter(LIMIT_CALLS, LIMIT_PERIOD, sleep=limiter_sleep)
    client = CoinGeckoClient(config, limiter=limiter, rng=random.Random(SEED))
    cycles = []  # (result, wall start, wall end)
    try:
        for _ in range(CYCLES):
            start = time.time()
            result = run_cycle(settings, layout, client=client)
            cycles.append((result, start, time.time()))
            sim.advance(60)  # the market moves between cycles, as it does between real polls
    finally:
        client.close()
        sim.stop()
    return {
        "layout": layout,
        "cycles": cycles,
        "requests": sim.requests(),
        "stats": sim.stats,
        "limiter_sleeps": limiter_sleeps,
    }


def _bronze_files(layout: Layout) -> list[Path]:
    return sorted(p for p in Path(layout.bronze_root).rglob("*") if p.is_file())


def test_every_fault_kind_happened(soak):
    stats = soak["stats"]
    happened = {
        "5xx": stats.server_errors,
        "5xx bursts": stats.bursts,
        "timeouts": stats.slow,
        "truncated": stats.truncated,
        "html": stats.html,
        "empty pages": stats.empty,
        "429 storms": stats.storms,
        "auth refusals": stats.auth_failed,
    }
    assert all(happened.values()), happened
    assert stats.rate_limited == 0
    statuses = Counter(r.status for r, _, _ in soak["cycles"])
    assert statuses["partial"] and statuses["failed"] and statuses["ok"], statuses


def test_no_partial_files(soak):
    files = _bronze_files(soak["layout"])
    assert files
    assert [p for p in files if p.name.startswith(".") or p.suffix != ".json"] == []
    for path in files:
        envelope = json.loads(path.read_text(encoding="utf-8"))
        assert set(envelope) == ENVELOPE_KEYS, path
        assert envelope["http_status"] == 200 and envelope["source"] == "coingecko", path
        data = envelope["data"]
        # a whole page: the full page size, or [] (an empty page ends pagination)
        assert isinstance(data, list) and len(data) in (0, PER_PAGE), (path, len(data))
        assert len({rec["id"] for rec in data}) == len(data), path


def test_no_duplicate_files_and_every_complete_answer_landed_once(soak):
    keys = Counter()
    by_run = Counter()
    for path in _bronze_files(soak["layout"]):
        env = json.loads(path.read_text(encoding="utf-8"))
        keys[(env["run_id"], env["request"]["vs_currency"], int(env["page"]))] += 1
        by_run[env["run_id"]] += 1
    assert [k for k, n in keys.items() if n > 1] == []
    for result, _, _ in soak["cycles"]:
        assert by_run[result.run_id] == result.pages_ok == len(result.files), result.run_id
    complete = [
        r for r in soak["requests"] if r.path == MARKETS and r.status == 200 and r.fault in (None, "empty")
    ]
    assert len(complete) == sum(keys.values())


def test_the_rate_limit_held_at_the_server(soak):
    arrivals = sorted(r.clock_time for r in soak["requests"])
    assert len(arrivals) > 4 * LIMIT_CALLS
    busiest, j = 0, 0
    for i, t in enumerate(arrivals):
        while arrivals[j] <= t - LIMIT_PERIOD:
            j += 1
        busiest = max(busiest, i - j + 1)  # arrivals in (t - period, t]
    assert busiest <= LIMIT_CALLS, busiest
    # the limit was reached many times, not just never approached
    assert len(soak["limiter_sleeps"]) > CYCLES, len(soak["limiter_sleeps"])


def test_retries_stayed_within_the_attempt_cap(soak):
    per_page = Counter()
    for result, start, end in soak["cycles"]:
        for r in soak["requests"]:
            if r.path == MARKETS and start <= r.wall_time <= end:
                per_page[(result.run_id, r.vs_currency, int(r.page))] += 1
    assert per_page
    assert max(per_page.values()) <= RETRY.max_attempts, per_page.most_common(3)


def test_every_failed_page_is_in_the_run_log(soak):
    layout, cycles = soak["layout"], soak["cycles"]
    rows = {row["run_id"]: row for row in read_run_log(layout)}
    assert len(rows) == len(cycles) == CYCLES
    landed: dict[str, set] = {}
    for path in _bronze_files(layout):
        env = json.loads(path.read_text(encoding="utf-8"))
        landed.setdefault(env["run_id"], set()).add((env["request"]["vs_currency"], int(env["page"])))
    reasons = []
    for result, start, end in cycles:
        row = rows[result.run_id]
        requested = {
            (r.vs_currency, int(r.page))
            for r in soak["requests"]
            if r.path == MARKETS and start <= r.wall_time <= end
        }
        failed = {(f["vs_currency"], f["page"]) for f in row["pages_failed"]}
        ok = landed.get(result.run_id, set())
        assert not ok & failed, result.run_id
        assert requested == ok | failed, (result.run_id, requested, ok, failed)
        assert row["status"] == result.status and row["files_written"] == len(ok)
        assert (row["status"] == "ok") == (not failed), row
        reasons += [f["reason"] for f in row["pages_failed"]]
    assert all(reasons)
    assert any("gave up after 4 attempt(s)" in r for r in reasons), reasons
    assert any("API key missing or invalid" in r for r in reasons), reasons
    assert sum(row["http_429"] for row in rows.values()) > 0
    assert sum(row["retries"] for row in rows.values()) > 0


def test_no_temp_file_anywhere_under_the_data_root(soak):
    root = Path(soak["layout"].root)
    leftovers = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.startswith(".")]
    assert leftovers == []
