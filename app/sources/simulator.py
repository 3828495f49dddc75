"""A CoinGecko-compatible HTTP server on loopback, with fault injection.

Serves ``/api/v3/ping``, ``/api/v3/coins/markets`` and ``/api/v3/simple/price`` from a seeded
:class:`~app.sources.market_model.MarketModel`, with CoinGecko's real error bodies: 429 with
``Retry-After``, 401 error 10002 for a missing or wrong key, 400 10010/10011 for a key sent with the
other plan's header, ``{"error": "invalid vs_currency"}``, HTML error pages.

Faults (:class:`Faults`) are rolled per request from a seeded die: 5xx errors, bursts of
consecutive 5xx, slow answers (client timeouts), truncated bodies, HTML pages, empty pages, 429
storms with ``Retry-After``, and a window of calls refused 401 as if the key were revoked
mid-run. Every request is kept in a bounded log (:meth:`SimulatorHandle.requests`) so a test
can check the client's pacing from the server side.

Use it from tests (``start_simulator(port=0)`` picks an ephemeral port) or ``coinlake simulate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.sources.market_model import MarketModel

API_PREFIX = "/api/v3"
BODY_429 = {
    "status": {
        "error_code": 429,
        "error_message": "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing "
        "to subscribe to our API plans for higher rate limits.",
    }
}
MSG_10002 = (
    "API Key Missing. Please make sure you're using the right authentication method. For Pro API, please "
    "visit: https://docs.coingecko.com/reference/authentication. For Public/Demo API, please visit: "
    "https://docs.coingecko.com/v3.0.1/reference/authentication"
)
BODY_10010 = {
    "error_code": 10010,
    "status": {
        "error_message": "If you are using Pro API key, please change your root URL from api.coingecko.com "
        "to pro-api.coingecko.com"
    },
}
BODY_10011 = {
    "error_code": 10011,
    "status": {
        "error_message": "If you are using Demo API key, please change your root URL from pro-api.coingecko.com "
        "to api.coingecko.com"
    },
}
HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>{code} | api.coingecko.com | Cloudflare</title></head>"
    "<body><h1>Error {code}</h1><p>Bad gateway. The web server reported a bad gateway error.</p>"
    "<p>Cloudflare Ray ID: 8a1b2c3d4e5f6a7b</p></body></html>"
)


@dataclass(frozen=True)
class Faults:
    """Fault injection settings; rates are fractions of requests in 0..1.

    Attributes:
        rate_limit_per_minute: enforced limit over a sliding minute (None: unlimited).
        retry_after: fixed ``Retry-After`` seconds on limit 429s (None: until a slot frees).
        error_rate: fraction answered 500, 502 or 503.
        slow_rate: fraction delayed by ``slow_seconds`` before answering (beyond client timeouts).
        slow_seconds: the delay of a slow response.
        truncate_rate: fraction whose body is cut short (half with an honest, half with a lying length).
        html_rate: fraction answered with a Cloudflare-style HTML error page (502/503/520).
        empty_rate: fraction of /coins/markets pages answered ``[]``.
        burst_rate: fraction of requests that start a burst of ``burst_length`` consecutive 5xx
            answers (this one included; ``/ping`` is never part of a burst).
        burst_length: requests in a 5xx burst.
        storm_rate: fraction of requests that start a 429 storm of ``storm_seconds`` (on the
            simulator's clock): every request until it ends is answered 429 with ``Retry-After``
            set to the time left.
        storm_seconds: length of a 429 storm.
        auth_outage_calls: ``(first, last)``: requests number ``first`` to ``last`` (1-based,
            inclusive, every path counted) are answered 401 error 10002 as if the key had been
            revoked; later requests are accepted again.
        api_key: when set, requests must carry this key (else 401 error 10002).
        plan: ``demo`` or ``pro``: which key header this host expects (the other gives 10010/10011).
        seed: seed of the fault dice.
    """

    rate_limit_per_minute: int | None = None
    retry_after: int | None = None
    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    truncate_rate: float = 0.0
    html_rate: float = 0.0
    empty_rate: float = 0.0
    burst_rate: float = 0.0
    burst_length: int = 5
    storm_rate: float = 0.0
    storm_seconds: float = 2.0
    auth_outage_calls: tuple[int, int] | None = None
    api_key: str | None = None
    plan: str = "demo"
    seed: int = 7


@dataclass
class SimulatorStats:
    """Counters of what the server did (a snapshot from :attr:`SimulatorHandle.stats`)."""

    calls: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    """429s caused by the enforced per-minute limit (the client's fault)."""
    storm_429: int = 0
    """429s from an injected storm (not the client's fault)."""
    server_errors: int = 0
    slow: int = 0
    truncated: int = 0
    html: int = 0
    empty: int = 0
    auth_failed: int = 0
    bursts: int = 0
    """5xx bursts started (their answers also count in ``server_errors``)."""
    storms: int = 0
    """429 storms started by ``storm_rate`` (their answers count in ``storm_429``)."""

    def copy(self) -> SimulatorStats:
        """A detached copy."""
        copy = dataclasses.replace(self)
        for name, value in vars(copy).items():
            if isinstance(value, Counter):
                setattr(copy, name, Counter(value))
        return copy


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it.

    Attributes:
        wall_time: arrival, ``time.time()`` (to line up with the client's UTC logs).
        clock_time: arrival on the simulator's clock (the one its rate limit uses).
        path: the path without the query (``/api/v3/coins/markets``).
        vs_currency: the ``vs_currency`` parameter, if any.
        page: the ``page`` parameter, if any.
        status: the HTTP status answered.
        fault: the injected fault (``error``, ``burst``, ``slow``, ``truncate``, ``html``,
            ``empty``, ``storm``, ``auth``, ``limit``) or None for a clean answer.
    """

    wall_time: float
    clock_time: float
    path: str
    vs_currency: str | None
    page: str | None
    status: int
    fault: str | None


REQUEST_LOG_SIZE = 100_000


class _State:
    """Everything the request threads share, behind one lock."""

    def __init__(
        self, model: MarketModel, faults: Faults, clock: Callable[[], float], realtime: bool
    ) -> None:
        self.model = model
        self.faults = faults
        self.clock = clock
        self.realtime = realtime
        self.lock = threading.Lock()
        self.rng = random.Random(faults.seed)
        self.stats = SimulatorStats()
        self.window: deque[float] = deque()
        self.storm_until = -math.inf
        self.storm_retry_after = 0
        self.burst_left = 0
        self.requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self.wall_start = time.monotonic()
        self.advanced = 0.0

    def sync_realtime(self) -> None:
        if self.realtime:
            target = time.monotonic() - self.wall_start
            if target - self.advanced >= 1.0:
                self.model.advance(target - self.advanced)
                self.advanced = target


class _Handler(BaseHTTPRequestHandler):
    server_version = "cloudflare"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # quiet: the stats say what happened

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        try:
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to send it

    def _serve(self) -> None:
        st = self.state
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with st.lock:
            st.stats.calls += 1
            st.stats.by_path[path] += 1
            now = st.clock()
            self._arrival = (time.time(), now, path, query.get("vs_currency"), query.get("page"))
            auth = self._auth_problem(query)
            if auth is not None:
                st.stats.auth_failed += 1
                return self._send_locked(*auth, fault="auth")
            limited = self._rate_limit(now)
            if limited is not None:
                return self._send_locked(*limited)
            fault = self._roll_fault(path)
            if fault == "storm":
                st.stats.storms += 1
                st.storm_until = now + st.faults.storm_seconds
                storm = self._rate_limit(now)
                assert storm is not None  # the storm that just started limits this very call
                return self._send_locked(*storm)
            st.sync_realtime()
            status, body = self._route(path, query, fault == "empty")
            if fault == "slow":
                st.stats.slow += 1
        if fault == "slow":
            time.sleep(st.faults.slow_seconds)
        self._send(status, body, fault)

    # --- checks (called with the lock held) ---
    def _auth_problem(self, query: dict[str, str]) -> tuple[int, Any] | None:
        f = self.state.faults
        outage = f.auth_outage_calls
        if outage is not None and outage[0] <= self.state.stats.calls <= outage[1]:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            return 401, {"status": {"timestamp": stamp, "error_code": 10002, "error_message": MSG_10002}}
        if not f.api_key:
            return None
        demo = self.headers.get("x-cg-demo-api-key") or query.get("x_cg_demo_api_key")
        pro = self.headers.get("x-cg-pro-api-key") or query.get("x_cg_pro_api_key")
        if f.plan == "demo" and pro and not demo:
            return 400, BODY_10010
        if f.plan == "pro" and demo and not pro:
            return 400, BODY_10011
        given = demo if f.plan == "demo" else pro
        if given != f.api_key:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            return 401, {"status": {"timestamp": stamp, "error_code": 10002, "error_message": MSG_10002}}
        return None

    def _rate_limit(self, now: float) -> tuple[int, Any, dict[str, str], str] | None:
        st = self.state
        if now < st.storm_until:
            st.stats.storm_429 += 1
            return 429, BODY_429, {"Retry-After": str(max(1, math.ceil(st.storm_until - now)))}, "storm"
        limit = st.faults.rate_limit_per_minute
        if limit is None:
            return None
        while st.window and st.window[0] <= now - 60.0:
            st.window.popleft()
        if len(st.window) >= limit:
            st.stats.rate_limited += 1
            wait = st.faults.retry_after or max(1, math.ceil(st.window[0] + 60.0 - now))
            return 429, BODY_429, {"Retry-After": str(wait)}, "limit"
        st.window.append(now)
        return None

    def _roll_fault(self, path: str) -> str | None:
        f, st = self.state.faults, self.state
        if path == API_PREFIX + "/ping":
            return None
        if st.burst_left > 0:
            st.burst_left -= 1
            return "burst"
        r = st.rng.random()
        for name, rate in (
            ("error", f.error_rate),
            ("slow", f.slow_rate),
            ("truncate", f.truncate_rate),
            ("html", f.html_rate),
            ("empty", f.empty_rate if path.endswith("/coins/markets") else 0.0),
            ("burst", f.burst_rate),
            ("storm", f.storm_rate),
        ):
            if r < rate:
                if name == "burst":
                    st.stats.bursts += 1
                    st.burst_left = max(0, f.burst_length - 1)
                return name
            r -= rate
        return None

    def _route(self, path: str, query: dict[str, str], empty: bool) -> tuple[int, Any]:
        model = self.state.model
        if path == API_PREFIX + "/ping":
            return 200, {"gecko_says": "(V3) To the Moon!"}
        if path == API_PREFIX + "/coins/markets":
            vs = query.get("vs_currency")
            if not vs:
                return 422, {"error": "Missing parameter vs_currency"}
            try:
                page = max(1, int(query.get("page", "1")))
                per_page = min(250, max(1, int(query.get("per_page", "100"))))
                model.rate(vs)
            except ValueError:
                return 400, {"error": "invalid vs_currency"}
            ids = [i for i in query["ids"].split(",") if i] if query.get("ids") else None
            tfs = [t for t in query.get("price_change_percentage", "").split(",") if t]
            return 200, [] if empty else model.markets_page(vs, page, per_page, ids, tfs)
        if path == API_PREFIX + "/simple/price":
            ids = [i for i in query.get("ids", "").split(",") if i]
            vss = [v for v in query.get("vs_currencies", "").split(",") if v]
            if not ids or not vss:
                return 422, {"error": "Missing parameter ids or vs_currencies"}
            try:
                flags = {k: query.get(k, "false") == "true" for k in _SIMPLE_FLAGS}
                return 200, model.simple_price(ids, vss, **flags)
            except ValueError:
                return 400, {"error": "invalid vs_currency"}
        return 404, {"error": "Incorrect path. Please check https://www.coingecko.com/api/"}

    # --- responses ---
    def _record(self, status: int, fault: str | None) -> None:
        """Log the request (caller holds the lock)."""
        self.state.requests.append(RequestRecord(*self._arrival, status=status, fault=fault))

    def _send_locked(
        self, status: int, body: Any, headers: dict[str, str] | None = None, fault: str | None = None
    ) -> None:
        self.state.stats.by_status[status] += 1
        self._record(status, fault)
        self._write(status, json.dumps(body).encode(), "application/json", headers or {})

    def _send(self, status: int, body: Any, fault: str | None) -> None:
        st = self.state
        data = json.dumps(body).encode()
        ctype = "application/json; charset=utf-8"
        with st.lock:
            if fault in ("error", "burst"):
                status = st.rng.choice((500, 502, 503))
                st.stats.server_errors += 1
                data = json.dumps({"error": "Internal Server Error"}).encode()
            elif fault == "html":
                status = st.rng.choice((502, 503, 520))
                st.stats.html += 1
                data, ctype = HTML_PAGE.format(code=status).encode(), "text/html"
            elif fault == "empty":
                st.stats.empty += 1
            lie = fault == "truncate" and st.rng.random() < 0.5
            if fault == "truncate":
                st.stats.truncated += 1
            st.stats.by_status[status] += 1
            self._record(status, fault)
        if fault == "truncate":
            cut = data[: max(1, len(data) // 3)]
            # A lying Content-Length makes the client see a connection cut mid-body.
            self._write(status, cut, ctype, {}, length=len(data) if lie else None, close=lie)
            return
        self._write(status, data, ctype, {"Cache-Control": "max-age=30"})

    def _write(
        self,
        status: int,
        data: bytes,
        ctype: str,
        headers: dict[str, str],
        *,
        length: int | None = None,
        close: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        for key, value in headers.items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


_SIMPLE_FLAGS = ("include_market_cap", "include_24hr_vol", "include_24hr_change", "include_last_updated_at")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class SimulatorHandle:
    """A running simulator: its URL, clock control, statistics and stop."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host  # AF_INET: always str already
        self.port: int = int(port)
        self.base_url = f"http://{host}:{port}{API_PREFIX}"
        """Base URL ending in ``/api/v3`` (what COINLAKE_API_BASE_URL takes)."""

    @property
    def model(self) -> MarketModel:
        """The market being served."""
        return self._server.state.model  # type: ignore[attr-defined]

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        st: _State = self._server.state  # type: ignore[attr-defined]
        with st.lock:
            return st.stats.copy()

    def advance(self, seconds: float) -> None:
        """Move the simulated market forward (prices walk, ``last_updated`` advances)."""
        st: _State = self._server.state  # type: ignore[attr-defined]
        with st.lock:
            st.model.advance(seconds)

    def inject_429_storm(self, seconds: float, retry_after: int | None = None) -> None:
        """Answer every request 429 for the next ``seconds`` (on the simulator's clock).

        ``Retry-After`` is the time left in the storm (``retry_after`` is accepted for symmetry
        and ignored when it is shorter than that).
        """
        st: _State = self._server.state  # type: ignore[attr-defined]
        with st.lock:
            st.storm_until = st.clock() + max(seconds, retry_after or 0)

    def requests(self) -> list[RequestRecord]:
        """The requests served so far, oldest first (the last :data:`REQUEST_LOG_SIZE`)."""
        st: _State = self._server.state  # type: ignore[attr-defined]
        with st.lock:
            return list(st.requests)

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings of the running server (the dice keep rolling)."""
        st: _State = self._server.state  # type: ignore[attr-defined]
        with st.lock:
            st.faults = faults

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    coins: int = 250,
    seed: int = 42,
    faults: Faults | None = None,
    model: MarketModel | None = None,
    clock: Callable[[], float] = time.monotonic,
    realtime: bool = False,
    start: datetime | None = None,
) -> SimulatorHandle:
    """Start the simulator in a background thread.

    Args:
        host: interface to bind (loopback by default).
        port: TCP port; 0 picks a free one.
        coins: universe size of the generated market (ignored when ``model`` is given).
        seed: market seed (ignored when ``model`` is given).
        faults: fault injection settings; none by default.
        model: an existing market to serve.
        clock: the clock of the per-minute limit and 429 storms (tests share a fake one with the client).
        realtime: advance the market with wall time (the CLI); tests call ``advance`` instead.
        start: simulated start time of a new market.

    Returns:
        The running server's handle (also a context manager that stops it).
    """
    market = model or MarketModel(coins, seed, start=start)
    server = _Server((host, port), _Handler)
    server.state = _State(market, faults or Faults(), clock, realtime)  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="coingecko-simulator", daemon=True
    )
    thread.start()
    return SimulatorHandle(server, thread)
