from __future__ import annotations

import json
import re

import requests

from app.sources.market_model import MarketModel
from app.sources.simulator import Faults, start_simulator

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FIELDS = [
    "id",
    "symbol",
    "name",
    "image",
    "current_price",
    "market_cap",
    "market_cap_rank",
    "fully_diluted_valuation",
    "total_volume",
    "high_24h",
    "low_24h",
    "price_change_24h",
    "price_change_percentage_24h",
    "market_cap_change_24h",
    "market_cap_change_percentage_24h",
    "circulating_supply",
    "total_supply",
    "max_supply",
    "ath",
    "ath_change_percentage",
    "ath_date",
    "atl",
    "atl_change_percentage",
    "atl_date",
    "roi",
    "last_updated",
]


def get(sim, path, **params):
    return requests.get(sim.base_url + path, params=params, timeout=5)


def test_ping(simulator):
    assert simulator.base_url.endswith("/api/v3")
    assert get(simulator, "/ping").json() == {"gecko_says": "(V3) To the Moon!"}


def test_markets_has_every_field_in_order_with_requested_changes(simulator):
    resp = get(
        simulator,
        "/coins/markets",
        vs_currency="usd",
        per_page=10,
        page=1,
        price_change_percentage="1h,24h,7d,30d",
    )
    records = resp.json()
    assert resp.status_code == 200 and len(records) == 10
    assert list(records[0]) == FIELDS + [
        f"price_change_percentage_{tf}_in_currency" for tf in ("1h", "24h", "7d", "30d")
    ]
    assert all(ISO_MS.match(r["last_updated"]) and ISO_MS.match(r["ath_date"]) for r in records)


def test_market_model_quirks_are_present():
    model = MarketModel(300, seed=3)
    records = model.markets_page("usd", 1, 250) + model.markets_page("usd", 2, 250)
    assert len(records) == 300
    assert model.markets_page("usd", 3, 250) == []
    raw = json.dumps(records)
    assert re.search(r'"current_price": \d+\.?\d*e-\d+', raw)  # scientific notation for tiny prices
    assert any(isinstance(r["current_price"], int) for r in records)  # ints where floats are usual
    assert any(isinstance(r["market_cap"], int) for r in records)
    for key in ("max_supply", "total_supply", "roi", "fully_diluted_valuation"):
        assert any(r[key] is None for r in records), key
    assert any(r["price_change_24h"] is None for r in records)
    ranks = [r["market_cap_rank"] for r in records if r["market_cap_rank"] is not None]
    assert ranks != sorted(ranks)  # not monotonic in array order
    assert max(ranks) > len(ranks)  # gaps
    caps = [r["market_cap"] for r in records]
    assert caps == sorted(caps, reverse=True)


def test_market_model_is_deterministic_and_advances():
    a, b = MarketModel(50, seed=9), MarketModel(50, seed=9)
    assert a.markets_page("eur", 1, 50) == b.markets_page("eur", 1, 50)
    before = a.markets_page("usd", 1, 50)
    a.advance(60)
    b.advance(60)
    after = a.markets_page("usd", 1, 50)
    assert after == b.markets_page("usd", 1, 50)
    assert max(r["last_updated"] for r in after) > max(r["last_updated"] for r in before)
    assert MarketModel(50, seed=10).markets_page("usd", 1, 50) != MarketModel(50, seed=9).markets_page(
        "usd", 1, 50
    )


def test_market_model_injects_jumps():
    model = MarketModel(40, seed=1, jump_rate_per_day=24.0)
    for _ in range(30):
        model.advance(300)
    assert model.jumps and all(abs(j) >= 0.15 for _, _, j in model.jumps)


def test_markets_ids_and_invalid_currency(simulator):
    records = get(simulator, "/coins/markets", vs_currency="usd", ids="ethereum,bitcoin,nope").json()
    assert [r["id"] for r in records] == ["bitcoin", "ethereum"]
    resp = get(simulator, "/coins/markets", vs_currency="usdt")
    assert resp.status_code == 400 and resp.json() == {"error": "invalid vs_currency"}


def test_simple_price_drops_unknown_ids(simulator):
    body = get(
        simulator,
        "/simple/price",
        ids="bitcoin,nope",
        vs_currencies="usd,eur",
        include_24hr_change="true",
        include_last_updated_at="true",
    ).json()
    assert list(body) == ["bitcoin"]
    assert list(body["bitcoin"]) == ["usd", "usd_24h_change", "eur", "eur_24h_change", "last_updated_at"]
    assert isinstance(body["bitcoin"]["last_updated_at"], int)
    assert get(simulator, "/simple/price", ids="nope", vs_currencies="usd").json() == {}


def test_enforced_rate_limit_answers_429_with_retry_after_and_the_real_body():
    clock = [0.0]
    with start_simulator(coins=5, faults=Faults(rate_limit_per_minute=3), clock=lambda: clock[0]) as sim:
        codes = [get(sim, "/coins/markets", vs_currency="usd").status_code for _ in range(4)]
        resp = get(sim, "/coins/markets", vs_currency="usd")
        assert codes == [200, 200, 200, 429] and resp.status_code == 429
        assert resp.headers["Retry-After"] == "60"
        assert resp.json()["status"]["error_code"] == 429
        clock[0] = 60.5
        assert get(sim, "/coins/markets", vs_currency="usd").status_code == 200
        assert sim.stats.rate_limited == 2


def test_auth_errors_match_the_real_api():
    with start_simulator(coins=5, faults=Faults(api_key="CG-right", plan="demo")) as sim:
        wrong = requests.get(sim.base_url + "/ping", headers={"x-cg-demo-api-key": "CG-wrong"}, timeout=5)
        assert wrong.status_code == 401 and wrong.json()["status"]["error_code"] == 10002
        assert requests.get(sim.base_url + "/ping", timeout=5).status_code == 401
        pro = requests.get(sim.base_url + "/ping", headers={"x-cg-pro-api-key": "CG-right"}, timeout=5)
        assert pro.status_code == 400 and pro.json()["error_code"] == 10010
        ok = requests.get(sim.base_url + "/ping", headers={"x-cg-demo-api-key": "CG-right"}, timeout=5)
        assert ok.status_code == 200


def test_fault_flags_produce_their_faults():
    faults = Faults(error_rate=0.25, truncate_rate=0.25, html_rate=0.25, empty_rate=0.25, seed=1)
    with start_simulator(coins=5, faults=faults) as sim:
        for _ in range(40):
            try:
                get(sim, "/coins/markets", vs_currency="usd")
            except requests.RequestException:
                pass
        stats = sim.stats
    assert stats.server_errors and stats.truncated and stats.html and stats.empty
    assert stats.calls == 40


def test_slow_responses_exceed_the_client_timeout():
    with start_simulator(coins=5, faults=Faults(slow_rate=1.0, slow_seconds=0.5)) as sim:
        try:
            requests.get(sim.base_url + "/coins/markets", params={"vs_currency": "usd"}, timeout=0.1)
            raise AssertionError("expected a timeout")
        except requests.Timeout:
            pass
        assert sim.stats.slow == 1


def _markets_status(sim) -> int:
    try:
        return get(sim, "/coins/markets", vs_currency="usd", per_page=2).status_code
    except requests.RequestException:
        return -1


def test_a_5xx_burst_answers_consecutive_requests_with_server_errors():
    with start_simulator(coins=5, faults=Faults(burst_rate=1.0, burst_length=4, seed=2)) as sim:
        first = [_markets_status(sim) for _ in range(4)]
        assert get(sim, "/ping").status_code == 200  # a ping is never part of a burst
        sim.set_faults(Faults(seed=2))  # no new burst can start
        after = [_markets_status(sim) for _ in range(2)]
        stats = sim.stats
    assert all(code in (500, 502, 503) for code in first), first
    assert after == [200, 200]
    assert stats.bursts == 1 and stats.server_errors == 4


def test_a_burst_in_progress_keeps_going_when_new_ones_cannot_start():
    with start_simulator(coins=5, faults=Faults(burst_rate=1.0, burst_length=3, seed=2)) as sim:
        assert _markets_status(sim) >= 500
        sim.set_faults(Faults(seed=2))
        codes = [_markets_status(sim) for _ in range(3)]
    assert [c >= 500 for c in codes] == [True, True, False]


def test_a_429_storm_answers_every_request_with_retry_after_until_it_ends():
    clock = [100.0]
    faults = Faults(storm_rate=1.0, storm_seconds=2.5, seed=3)
    with start_simulator(coins=5, faults=faults, clock=lambda: clock[0]) as sim:
        resp = get(sim, "/coins/markets", vs_currency="usd")
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
        assert resp.json()["status"]["error_code"] == 429
        sim.set_faults(Faults(seed=3))
        clock[0] = 101.6
        resp = get(sim, "/ping")
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
        clock[0] = 102.6
        assert get(sim, "/coins/markets", vs_currency="usd").status_code == 200
        stats = sim.stats
    assert stats.storms == 1 and stats.storm_429 == 2 and stats.rate_limited == 0


def test_an_auth_outage_refuses_a_window_of_calls_then_accepts_again():
    with start_simulator(coins=5, faults=Faults(auth_outage_calls=(2, 3))) as sim:
        codes = [get(sim, "/coins/markets", vs_currency="usd").status_code for _ in range(2)]
        codes += [get(sim, "/ping").status_code, get(sim, "/ping").status_code]
        stats = sim.stats
    assert codes == [200, 401, 401, 200]
    assert stats.auth_failed == 2


def test_the_request_log_records_each_request_with_its_fault():
    faults = Faults(error_rate=0.5, seed=1, auth_outage_calls=(1, 1))
    with start_simulator(coins=5, faults=faults) as sim:
        for page in range(1, 7):
            get(sim, "/coins/markets", vs_currency="usd", page=page, per_page=2)
        log = sim.requests()
    assert [r.page for r in log] == ["1", "2", "3", "4", "5", "6"]
    assert all(r.path == "/api/v3/coins/markets" and r.vs_currency == "usd" for r in log)
    assert (log[0].status, log[0].fault) == (401, "auth")
    assert {r.fault for r in log[1:]} == {"error", None}
    assert all((r.status >= 500) == (r.fault == "error") for r in log[1:])
    assert [r.wall_time for r in log] == sorted(r.wall_time for r in log)
