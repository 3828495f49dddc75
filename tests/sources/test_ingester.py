from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from app.cli import main
from app.config import load_settings
from app.paths import Layout
from app.sources.coingecko import CoinGeckoClient
from app.sources.ingester import next_slot, plan_pages, poll_forever, read_run_log, run_cycle
from app.sources.ratelimit import RateLimiter
from app.sources.simulator import Faults, start_simulator

WRONG_KEY = "CG-wrongKeyZZZ987654321"


class FakeClock:
    """One simulated clock for the client's limiter, its retry waits and the server's limit."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def fake_client(settings, clock: FakeClock) -> CoinGeckoClient:
    limiter = RateLimiter(settings.rate_limit_per_minute, clock=clock, sleep=clock.sleep)
    return CoinGeckoClient(settings, limiter=limiter, sleep=clock.sleep, clock=clock)


def bronze_files(root) -> list[str]:
    return sorted(glob.glob(os.path.join(str(root), "bronze/crypto/coins_markets/dt=*/*.json")))


def all_files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(str(root)) for f in names]


def test_plan_pages_covers_the_universe_with_the_fewest_calls():
    assert plan_pages(load_settings(top_n=1000, per_page=250)) == (4, 250, None)
    assert plan_pages(load_settings(top_n=300, per_page=250)) == (2, 150, None)
    assert plan_pages(load_settings(coins="bitcoin,ethereum", per_page=250)) == (
        1,
        2,
        ["bitcoin", "ethereum"],
    )


def test_next_slot_is_aligned_and_skips_missed_slots():
    assert next_slot(100.0, 60.0, 100.0) == 160.0
    assert next_slot(100.0, 60.0, 159.9) == 160.0
    assert next_slot(100.0, 60.0, 290.0) == 340.0  # an overrun skips slots rather than drifting


def test_1000_coins_take_4_calls_per_vs_currency(tmp_path):
    with start_simulator(coins=1000, seed=5) as sim:
        settings = load_settings(api_base_url=sim.base_url, top_n=1000, per_page=250, vs_currencies="usd,eur")
        result = run_cycle(
            settings, Layout.from_root(str(tmp_path)), client=fake_client(settings, FakeClock())
        )
        assert sim.stats.by_path["/api/v3/coins/markets"] == 8
    assert (result.status, result.pages_ok, result.calls, result.records) == ("ok", 8, 8, 2000)
    docs = [json.load(open(p)) for p in bronze_files(tmp_path)]
    for vs in ("usd", "eur"):
        mine = [d for d in docs if d["request"]["vs_currency"] == vs]
        assert sorted(d["page"] for d in mine) == [1, 2, 3, 4]
        assert len({r["id"] for d in mine for r in d["data"]}) == 1000


def test_faults_every_page_lands_once_or_is_reported_and_no_429_is_ours(tmp_path):
    clock = FakeClock()
    faults = Faults(rate_limit_per_minute=30, error_rate=0.2, slow_rate=0.1, slow_seconds=0.6, seed=11)
    layout = Layout.from_root(str(tmp_path))
    with start_simulator(coins=200, seed=1, faults=faults, clock=clock) as sim:
        settings = load_settings(
            api_base_url=sim.base_url,
            top_n=200,
            per_page=50,
            vs_currencies="usd,eur",
            rate_limit_per_minute=30,
            http_timeout_seconds=0.25,
            max_attempts=6,
        )
        client = fake_client(settings, clock)
        results = []
        for _ in range(4):
            results.append(run_cycle(settings, layout, client=client))
            sim.advance(60)
            clock.now += 60
        stats = sim.stats
    assert stats.rate_limited == 0  # the client never caused a 429
    assert stats.server_errors > 0 and stats.slow > 0
    assert sum(r.calls for r in results) == stats.calls > 30  # the limiter really had to hold calls back
    files = bronze_files(tmp_path)
    assert not [f for f in all_files(tmp_path) if os.path.basename(f).startswith(".")]
    docs = [json.load(open(f)) for f in files]  # every file parses
    for result in results:
        landed = Counter(
            (d["request"]["vs_currency"], d["page"]) for d in docs if d["run_id"] == result.run_id
        )
        failed = {(f.vs_currency, f.page) for f in result.pages_failed}
        assert all(n == 1 for n in landed.values())
        assert set(landed) | failed == {(vs, p) for vs in ("usd", "eur") for p in (1, 2, 3, 4)}
        assert not set(landed) & failed
        assert result.pages_ok == len(landed)
    assert len(read_run_log(layout)) == 4


def test_recovers_from_a_429_storm_by_honouring_retry_after(tmp_path):
    clock = FakeClock()
    with start_simulator(coins=100, seed=2, clock=clock) as sim:
        settings = load_settings(api_base_url=sim.base_url, top_n=100, per_page=50, vs_currencies="usd")
        client = fake_client(settings, clock)
        sim.inject_429_storm(45)
        result = run_cycle(settings, Layout.from_root(str(tmp_path)), client=client)
        stats = sim.stats
    assert result.status == "ok" and result.pages_ok == 2
    assert stats.storm_429 == 1 and result.http_429 == 1  # one 429, then it waited long enough
    assert any(45 <= s <= 46 for s in clock.sleeps)


def test_short_page_ends_paging_and_bad_currency_is_reported(tmp_path):
    with start_simulator(coins=120, seed=3) as sim:
        settings = load_settings(api_base_url=sim.base_url, top_n=200, per_page=50, vs_currencies="usd,xyz")
        result = run_cycle(
            settings, Layout.from_root(str(tmp_path)), client=fake_client(settings, FakeClock())
        )
    assert result.pages_ok == 3 and result.records == 120
    assert [(f.vs_currency, f.page) for f in result.pages_failed] == [("xyz", 1)]
    assert "invalid vs_currency" in result.pages_failed[0].reason
    assert result.status == "partial" and result.calls == 4


def test_run_log_row_has_the_cycle_fields(tmp_path, simulator):
    settings = load_settings(api_base_url=simulator.base_url, top_n=50, per_page=25)
    layout = Layout.from_root(str(tmp_path))
    result = run_cycle(settings, layout, client=fake_client(settings, FakeClock()))
    (row,) = read_run_log(layout)
    assert row["run_id"] == result.run_id
    for key in (
        "started_at",
        "finished_at",
        "pages_ok",
        "pages_failed",
        "records",
        "calls",
        "http_429",
        "duration_seconds",
        "status",
    ):
        assert key in row
    assert (row["pages_ok"], row["records"], row["calls"], row["http_429"]) == (2, 50, 2, 0)


def test_invalid_key_fails_the_cycle_in_one_call_and_never_leaks(tmp_path, monkeypatch, capsys, caplog):
    with start_simulator(coins=20, faults=Faults(api_key="CG-right", plan="demo")) as sim:
        monkeypatch.setenv("COINLAKE_API_BASE_URL", sim.base_url)
        monkeypatch.setenv("COINLAKE_API_PLAN", "demo")
        monkeypatch.setenv("COINLAKE_API_KEY", WRONG_KEY)
        monkeypatch.setenv("COINLAKE_VS_CURRENCIES", "usd,eur")
        monkeypatch.setenv("COINLAKE_LOG_FORMAT", "json")
        code = main(["--data-dir", str(tmp_path), "ingest", "--once"])
        calls = sim.stats.calls
        check = main(["--data-dir", str(tmp_path), "ingest", "--check"])
    out, err = capsys.readouterr()
    assert code == 2 and check == 2 and calls == 1
    assert "API key missing or invalid" in err and "10002" in err
    (row,) = read_run_log(Layout.from_root(str(tmp_path)))
    assert row["status"] == "failed" and row["calls"] == 1
    texts = [out, err, caplog.text] + [open(p, errors="replace").read() for p in all_files(tmp_path)]
    assert not any(WRONG_KEY in t for t in texts)
    assert bronze_files(tmp_path) == []


def test_stop_event_stops_before_the_next_page(tmp_path, simulator):
    settings = load_settings(api_base_url=simulator.base_url, top_n=50, per_page=25)
    stop = threading.Event()
    stop.set()
    result = run_cycle(
        settings, Layout.from_root(str(tmp_path)), client=fake_client(settings, FakeClock()), stop_event=stop
    )
    assert (result.status, result.calls, result.pages_ok) == ("stopped", 0, 0)


class RecordingStop(threading.Event):
    """A stop event whose waits are recorded and advance a fake clock instead of blocking."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.clock.now += timeout or 0.0
        return self.is_set()


def test_poll_forever_runs_aligned_cycles(tmp_path, simulator):
    settings = load_settings(
        api_base_url=simulator.base_url, top_n=20, per_page=20, poll_interval_seconds=0.2
    )
    clock = FakeClock()
    stop = RecordingStop(clock)
    results = poll_forever(
        settings,
        Layout.from_root(str(tmp_path)),
        client=fake_client(settings, clock),
        stop_event=stop,
        max_cycles=3,
        clock=clock,
    )
    assert [r.status for r in results] == ["ok"] * 3
    assert stop.waits == pytest.approx([0.2, 0.2])  # one wait between cycles, none after the last
    assert len(bronze_files(tmp_path)) == 3


def test_poll_forever_skips_the_slots_an_overrunning_cycle_missed(tmp_path, simulator, monkeypatch):
    import app.sources.ingester as ingester

    settings = load_settings(
        api_base_url=simulator.base_url, top_n=20, per_page=20, poll_interval_seconds=1.0
    )
    clock = FakeClock()
    real_cycle = ingester.run_cycle

    def slow_cycle(*args, **kwargs):
        result = real_cycle(*args, **kwargs)
        clock.now += 2.5  # the cycle overruns two and a half intervals
        return result

    monkeypatch.setattr(ingester, "run_cycle", slow_cycle)
    stop = RecordingStop(clock)
    poll_forever(
        settings,
        Layout.from_root(str(tmp_path)),
        client=fake_client(settings, clock),
        stop_event=stop,
        max_cycles=2,
        clock=clock,
    )
    assert stop.waits == pytest.approx([0.5])  # to the slot at 3.0, not 1.0 later than the end


def _cli_env(sim, tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINLAKE_")}
    env.update(
        COINLAKE_API_BASE_URL=sim.base_url,
        COINLAKE_DATA_DIR=str(tmp_path),
        COINLAKE_TOP_N="100",
        COINLAKE_PER_PAGE="25",
        COINLAKE_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def test_kill_during_write_leaves_no_partial_file(tmp_path):
    with start_simulator(coins=100, seed=4) as sim:
        env = _cli_env(sim, tmp_path, COINLAKE_CRASH_AT="ingest_before_rename:2")
        proc = subprocess.run(
            [sys.executable, "-m", "app.cli", "ingest", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 137, proc.stderr[-2000:]
    visible = bronze_files(tmp_path)
    assert len(visible) == 1 and json.load(open(visible[0]))["page"] == 1
    hidden = [f for f in all_files(tmp_path) if os.path.basename(f).startswith(".")]
    name = os.path.basename(hidden[0]) if len(hidden) == 1 else ""
    assert "_p0002_" in name and name.endswith(".json.tmp")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_polling_cleanly(tmp_path):
    with start_simulator(coins=40, seed=6) as sim:
        env = _cli_env(
            sim, tmp_path, COINLAKE_POLL_INTERVAL_SECONDS="0.3", COINLAKE_TOP_N="40", COINLAKE_PER_PAGE="20"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "ingest"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while len(bronze_files(tmp_path)) < 4:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    out, err = proc.communicate()
                    pytest.fail(
                        f"expected 4 bronze files before SIGTERM, found {len(bronze_files(tmp_path))}"
                        f" (exit {proc.returncode}): {err[-2000:]}"
                    )
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped after" in out
    assert not [f for f in all_files(tmp_path) if os.path.basename(f).startswith(".")]
    for f in bronze_files(tmp_path):
        json.load(open(f))


def test_a_run_log_that_cannot_be_written_fails_the_cycle_without_raising(tmp_path, simulator, monkeypatch):
    import errno

    import app.sources.ingester as ingester

    def full_disk(layout, result):
        raise OSError(
            errno.ENOSPC, "No space left on device", os.path.join(layout.logs_dir, "ingest_runs.jsonl")
        )

    monkeypatch.setattr(ingester, "append_run_log", full_disk)
    settings = load_settings(api_base_url=simulator.base_url, top_n=50, per_page=25)
    result = run_cycle(settings, Layout.from_root(str(tmp_path)), client=fake_client(settings, FakeClock()))
    assert result.pages_ok == 2 and result.status == "failed"
    assert result.error.startswith("cannot write the ingest run log: No space left on device (")
    assert result.error.endswith("ingest_runs.jsonl)")
