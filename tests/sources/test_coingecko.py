from __future__ import annotations

import json
import logging
import random
import traceback

import pytest
import requests
import requests_mock
from pydantic import SecretStr

from app.errors import SourceTerminalError, SourceTransientError
from app.sources.coingecko import (
    ClientConfig,
    CoinGeckoClient,
    SourceAuthError,
    auth_headers,
    markets_params,
    parse_error_body,
    parse_markets_body,
    source_retry_policy,
)
from app.sources.ratelimit import RateLimiter

BASE = "https://api.example.test/api/v3"
URL = BASE + "/coins/markets"
KEY = "CG-secretKEY123456789"
BODY_429 = {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit."}}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(sleeps: Sleeps, *, plan="demo", key=KEY, attempts=4, total=300.0) -> CoinGeckoClient:
    config = ClientConfig(
        base_url=BASE,
        plan=plan,
        api_key=SecretStr(key) if key else None,
        timeout_seconds=1.0,
        rate_limit_per_minute=1000,
        retry=source_retry_policy(
            max_attempts=attempts, max_total_seconds=total, backoff_initial=1.0, jitter=0.5
        ),
    )
    clock = [0.0]

    def sleep(seconds: float) -> None:
        sleeps(seconds)
        clock[0] += seconds

    limiter = RateLimiter(1000, clock=lambda: clock[0], sleep=sleep)
    return CoinGeckoClient(
        config, requests.Session(), limiter=limiter, sleep=sleep, clock=lambda: clock[0], rng=random.Random(1)
    )


def test_markets_params_builds_the_documented_query():
    params = markets_params("usd", 2, 250, ids=["bitcoin", "ethereum"])
    assert params == {
        "vs_currency": "usd",
        "order": "market_cap_desc",
        "ids": "bitcoin,ethereum",
        "per_page": 250,
        "page": 2,
        "price_change_percentage": "1h,24h,7d,30d",
    }


def test_markets_params_rejects_per_page_above_250():
    with pytest.raises(ValueError, match="per_page must be within 1..250, got 251"):
        markets_params("usd", 1, 251)


def test_auth_headers_by_plan():
    assert auth_headers("public", SecretStr(KEY)) == {}
    assert auth_headers("demo", SecretStr(KEY)) == {"x-cg-demo-api-key": KEY}
    assert auth_headers("pro", SecretStr(KEY)) == {"x-cg-pro-api-key": KEY}
    assert auth_headers("pro", None) == {}


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ('{"status":{"error_code":429,"error_message":"rate"}}', 429, "rate"),
        ('{"error_code":10010,"status":{"error_message":"use pro-api"}}', 10010, "use pro-api"),
        ('{"error":{"status":{"error_code":10012,"error_message":"365 days"}}}', 10012, "365 days"),
        ('{"error":"coin not found"}', None, "coin not found"),
        (
            "<html><body>Error 1020 Access denied</body></html>",
            None,
            "<html><body>Error 1020 Access denied</body></html>",
        ),
        ("{}", None, None),
        ("", None, None),
    ],
)
def test_parse_error_body_reads_every_shape(text, code, message):
    err = parse_error_body(text)
    assert (err.code, err.message) == (code, message)


def test_parse_markets_body_accepts_a_list_and_rejects_truncation():
    assert parse_markets_body('[{"id":"bitcoin","current_price":8.36e-06}]') == [
        {"id": "bitcoin", "current_price": 8.36e-06}
    ]
    assert parse_markets_body("[]") == []
    with pytest.raises(SourceTransientError, match="invalid JSON"):
        parse_markets_body('[{"id":"bitc')


def test_coins_markets_returns_records_and_sends_the_key_header(sleeps):
    client = make_client(sleeps)
    with requests_mock.Mocker() as m:
        m.get(URL, text='[{"id":"bitcoin"}]')
        page = client.coins_markets("usd", 1, 250)
    assert page.records == [{"id": "bitcoin"}]
    assert page.body_text == '[{"id":"bitcoin"}]'
    assert m.last_request.headers["x-cg-demo-api-key"] == KEY
    assert KEY not in m.last_request.url
    assert "key" not in json.dumps(page.request).lower()


@pytest.mark.parametrize(
    "responses",
    [
        [{"status_code": 500, "text": "oops"}],
        [{"status_code": 502, "text": "<html>bad gateway</html>"}],
        [{"status_code": 503, "text": "{}"}],
        [{"status_code": 200, "text": '[{"id":"bitc'}],
        [{"status_code": 200, "text": "<html>cloudflare</html>"}],
        [{"status_code": 200, "json": BODY_429}],
        [{"exc": requests.exceptions.ConnectTimeout}],
        [{"exc": requests.exceptions.ReadTimeout}],
        [{"exc": requests.exceptions.ConnectionError("reset")}],
        [{"exc": requests.exceptions.ChunkedEncodingError("IncompleteRead")}],
    ],
    ids=[
        "500",
        "502-html",
        "503",
        "truncated",
        "200-html",
        "200-429-body",
        "conn-timeout",
        "read-timeout",
        "reset",
        "chunked",
    ],
)
def test_transient_failures_are_retried_then_succeed(sleeps, responses):
    client = make_client(sleeps)
    with requests_mock.Mocker() as m:
        m.get(URL, responses + [{"status_code": 200, "text": "[]"}])
        page = client.coins_markets("usd", 1, 250)
    assert page.records == []
    assert m.call_count == 2
    assert client.stats.calls == 2
    assert len(sleeps) == 1


def test_transient_failures_give_up_after_max_attempts_with_page_and_reason(sleeps, caplog):
    client = make_client(sleeps, attempts=4)
    with requests_mock.Mocker() as m:
        m.get(URL, status_code=503, text="down")
        with (
            caplog.at_level(logging.ERROR),
            pytest.raises(SourceTransientError, match="gave up after 4 attempt"),
        ):
            client.coins_markets("eur", 3, 250)
    assert m.call_count == 4
    assert len(sleeps) == 3
    assert sleeps[1] > sleeps[0]  # exponential
    give_up = [r for r in caplog.records if r.getMessage() == "coingecko.give_up"]
    assert give_up and give_up[0].fields["page"] == 3 and give_up[0].fields["vs_currency"] == "eur"


def test_total_time_cap_stops_before_a_wait_that_would_exceed_it(sleeps):
    client = make_client(sleeps, attempts=10, total=5.0)
    with requests_mock.Mocker() as m:
        m.get(URL, status_code=429, json=BODY_429, headers={"Retry-After": "119"})
        with pytest.raises(SourceTransientError, match="rate limited"):
            client.coins_markets("usd", 1, 250)
    assert m.call_count == 1  # waiting 119 s would break the 5 s budget: give up now
    assert sleeps == []


def test_429_honours_retry_after(sleeps):
    client = make_client(sleeps)
    with requests_mock.Mocker() as m:
        m.get(
            URL,
            [
                {"status_code": 429, "json": BODY_429, "headers": {"Retry-After": "43"}},
                {"status_code": 200, "text": "[]"},
            ],
        )
        client.coins_markets("usd", 1, 250)
    assert len(sleeps) == 1 and 43 <= sleeps[0] <= 44
    assert client.stats.http_429 == 1


@pytest.mark.parametrize(
    ("status", "body", "match", "error"),
    [
        (
            401,
            {"status": {"error_code": 10002, "error_message": "API Key Missing."}},
            "API key missing or invalid",
            SourceAuthError,
        ),
        (
            403,
            {"status": {"error_code": 10005, "error_message": "limited Pro API subscribers"}},
            "Pro subscription",
            SourceAuthError,
        ),
        (
            400,
            {"error_code": 10010, "status": {"error_message": "change your root URL"}},
            "COINLAKE_API_PLAN=pro",
            SourceAuthError,
        ),
        (
            400,
            {"error_code": 10011, "status": {"error_message": "change your root URL"}},
            "COINLAKE_API_PLAN=demo",
            SourceAuthError,
        ),
        (
            403,
            {"status": {"error_code": 403, "error_message": "temporarily unavailable"}},
            "HTTP 403",
            SourceAuthError,
        ),
        (404, {"error": "coin not found"}, "coin not found", SourceTerminalError),
        (400, {"error": "invalid vs_currency"}, "invalid vs_currency", SourceTerminalError),
    ],
)
def test_terminal_errors_fail_in_one_call(sleeps, status, body, match, error):
    client = make_client(sleeps)
    with requests_mock.Mocker() as m:
        m.get(URL, status_code=status, json=body)
        with pytest.raises(error, match=match):
            client.coins_markets("usd", 1, 250)
    assert m.call_count == 1
    assert sleeps == []


def test_key_never_appears_in_errors_or_logs(sleeps, caplog):
    client = make_client(sleeps, attempts=2)
    echo = {"status": {"error_code": 10002, "error_message": f"bad key {KEY}"}}
    with requests_mock.Mocker() as m, caplog.at_level(logging.DEBUG):
        m.get(URL, status_code=401, json=echo)
        with pytest.raises(SourceAuthError) as info:
            client.coins_markets("usd", 1, 250)
        m.get(URL, exc=requests.exceptions.ConnectionError(f"reset by peer {KEY}"))
        with pytest.raises(SourceTransientError) as info2:
            client.coins_markets("usd", 1, 250)
    for exc in (info.value, info2.value):
        assert KEY not in "".join(traceback.format_exception(exc))
    assert KEY not in caplog.text
    assert KEY not in json.dumps([getattr(r, "fields", {}) for r in caplog.records], default=str)


def test_ping_returns_the_greeting(sleeps):
    client = make_client(sleeps, plan="public", key=None)
    with requests_mock.Mocker() as m:
        m.get(BASE + "/ping", json={"gecko_says": "(V3) To the Moon!"})
        assert client.ping() == {"gecko_says": "(V3) To the Moon!"}
    assert "x-cg-demo-api-key" not in m.last_request.headers
