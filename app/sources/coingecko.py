"""CoinGecko API v3 client: parameter builders, error-body parsing, retry policy, the client.

Transient failures (429 by status or body, 5xx/408, timeouts, connection resets, truncated or
invalid JSON, HTML error pages) are retried with exponential backoff and jitter, honouring
``Retry-After``, within a cap on attempts and total time. Terminal failures (401/403, error codes
10002/10005/10010/10011, 404, 400 such as an invalid vs_currency) fail at once. The API key is
sent in a header only and is redacted from every message this module produces.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import SecretStr
from tenacity import RetryCallState

from app.errors import SourceTerminalError, SourceTransientError
from app.logs import log_event
from app.retry import RetryPolicy
from app.sources.ratelimit import RateLimiter, process_limiter

logger = logging.getLogger(__name__)

PRICE_CHANGE_TIMEFRAMES = ("1h", "24h", "7d", "30d")
KEY_HEADERS = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}
AUTH_ERROR_CODES = frozenset({10002, 10005, 10010, 10011})
MAX_PER_PAGE = 250


class SourceAuthError(SourceTerminalError):
    """The API refused our credentials or plan; every further call would fail the same way."""


@dataclass(frozen=True)
class ApiError:
    """What an error body says, whatever its shape."""

    code: int | None
    message: str | None


SOURCE_RETRY = RetryPolicy(
    max_attempts=6,
    max_total_seconds=300.0,
    backoff_initial=1.0,
    backoff_max=60.0,
    jitter=1.0,
    transient=(SourceTransientError,),
    retry_statuses=frozenset({408, 425, 429, 500, 502, 503, 504, 520, 522, 524}),
)
"""The client's default policy; ``max_attempts`` and ``max_total_seconds`` come from the settings."""


def source_retry_policy(**changes: Any) -> RetryPolicy:
    """:data:`SOURCE_RETRY` with ``changes`` (e.g. ``max_attempts=3``)."""
    return dataclasses.replace(SOURCE_RETRY, **changes)


@dataclass(frozen=True)
class ClientConfig:
    """What the client needs from the settings (the rest of the settings stay out)."""

    base_url: str
    plan: str = "public"
    api_key: SecretStr | None = None
    timeout_seconds: float = 30.0
    rate_limit_per_minute: int = 50
    retry: RetryPolicy = SOURCE_RETRY

    @classmethod
    def from_settings(cls, settings: Any) -> ClientConfig:
        """Build from :class:`app.config.Settings`."""
        return cls(
            base_url=settings.effective_api_base_url,
            plan=settings.api_plan,
            api_key=settings.api_key,
            timeout_seconds=settings.http_timeout_seconds,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            retry=source_retry_policy(
                max_attempts=settings.max_attempts, max_total_seconds=settings.max_retry_seconds
            ),
        )


@dataclass
class ClientStats:
    """Counters over the client's life; the ingester reports per-cycle differences."""

    calls: int = 0
    http_429: int = 0
    retries: int = 0
    gave_up: int = 0


@dataclass(frozen=True)
class MarketsPage:
    """One successful /coins/markets response."""

    request: dict[str, Any]
    body_text: str
    records: list[dict[str, Any]]
    http_status: int
    fetched_at_epoch: float


def markets_params(
    vs_currency: str,
    page: int,
    per_page: int,
    ids: Sequence[str] | None = None,
    price_change_percentage: Sequence[str] = PRICE_CHANGE_TIMEFRAMES,
) -> dict[str, Any]:
    """Query parameters of one /coins/markets page (no secrets: safe to store in bronze).

    Raises:
        ValueError: ``per_page`` is outside 1..250 or ``page`` is below 1.
    """
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be within 1..{MAX_PER_PAGE}, got {per_page}")
    if page < 1:
        raise ValueError(f"page must be >= 1, got {page}")
    params: dict[str, Any] = {"vs_currency": vs_currency, "order": "market_cap_desc"}
    if ids:
        params["ids"] = ",".join(ids)
    params.update({"per_page": per_page, "page": page})
    if price_change_percentage:
        params["price_change_percentage"] = ",".join(price_change_percentage)
    return params


def auth_headers(plan: str, api_key: SecretStr | None) -> dict[str, str]:
    """The key header for the plan; empty for the public plan or without a key."""
    if api_key is None or plan not in KEY_HEADERS:
        return {}
    return {KEY_HEADERS[plan]: api_key.get_secret_value()}


def parse_error_body(text: str) -> ApiError:
    """Read the error code and message out of any of CoinGecko's error shapes.

    Handles ``{"status": {"error_code", "error_message"}}``, a top-level ``error_code`` beside
    ``status.error_message``, ``{"error": {"status": {...}}}``, ``{"error": "text"}``, HTML and
    empty bodies. Never raises.
    """
    try:
        body = json.loads(text)
    except (ValueError, TypeError):
        snippet = " ".join((text or "").split())[:120]
        return ApiError(None, snippet or None)
    if not isinstance(body, dict):
        return ApiError(None, None)
    code = body.get("error_code")
    message = body.get("error_message")
    status = body.get("status")
    error = body.get("error")
    if isinstance(error, dict):
        status = error.get("status", status)
    elif isinstance(error, str):
        message = message or error
    if isinstance(status, dict):
        code = status.get("error_code", code)
        message = status.get("error_message", message)
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    return ApiError(code, str(message) if message is not None else None)


def parse_markets_body(text: str) -> list[dict[str, Any]]:
    """The records of a /coins/markets body.

    Raises:
        SourceTransientError: the body is not valid JSON (truncated, HTML) or carries a 429 body.
        SourceTerminalError: the body is a CoinGecko error object.
    """
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise SourceTransientError(f"invalid JSON body ({len(text)} bytes): {exc}") from None
    if isinstance(body, list) and all(isinstance(item, dict) for item in body):
        return body
    err = parse_error_body(text)
    if err.code == 429:
        raise _RateLimited(f"rate limited (error_code 429 in a 200 body): {err.message}", None)
    if err.code in AUTH_ERROR_CODES:
        raise SourceAuthError(f"CoinGecko error {err.code}: {err.message}")
    raise SourceTransientError(f"unexpected body shape {type(body).__name__}: {text[:120]!r}")


class _RateLimited(SourceTransientError):
    """A 429; ``retry_after`` is the server's requested wait in seconds, when given."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form); None when absent or a date."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def classify_response(status: int, text: str, headers: Any, policy: RetryPolicy) -> Exception | None:
    """The error a non-2xx response stands for, or None for a 2xx.

    Returns an exception instance (not raised) so the rule is testable on its own.
    """
    if 200 <= status < 300:
        return None
    err = parse_error_body(text)
    what = f"HTTP {status}" + (f" error_code {err.code}" if err.code is not None else "")
    detail = f"{what}: {err.message}" if err.message else what
    if status == 429 or err.code == 429:
        return _RateLimited(f"rate limited ({detail})", parse_retry_after(headers.get("Retry-After")))
    if err.code in AUTH_ERROR_CODES or status in (401, 403):
        hint = {
            10002: "API key missing or invalid",
            10005: "endpoint needs a Pro subscription",
            10010: "a Pro key sent to the public/demo host: set COINLAKE_API_PLAN=pro",
            10011: "a Demo key sent to the Pro host: set COINLAKE_API_PLAN=demo",
        }.get(err.code or 0, "authentication or plan refused")
        return SourceAuthError(f"{hint} ({detail})")
    if policy.is_retry_status(status) or status >= 500:
        return SourceTransientError(f"server error ({detail})")
    return SourceTerminalError(f"request refused ({detail})")


class CoinGeckoClient:
    """CoinGecko v3 client with a shared rate limiter and a capped retry policy.

    Args:
        config: a :class:`ClientConfig` or the app :class:`~app.config.Settings`.
        session: a ``requests.Session`` (tests mount ``requests_mock`` on one); a new one if None.
        limiter: the rate limiter; the process-wide one for the configured limit if None.
        sleep: how retry waits sleep (tests pass a fake; the ingester an interruptible wait).
        clock: monotonic clock for the total-time cap.
        rng: jitter source.
    """

    def __init__(
        self,
        config: ClientConfig | Any,
        session: requests.Session | None = None,
        *,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config if isinstance(config, ClientConfig) else ClientConfig.from_settings(config)
        self.session = session or requests.Session()
        self.limiter = limiter or process_limiter(self.config.rate_limit_per_minute)
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = ClientStats()
        self._stats_lock = threading.Lock()
        key = self.config.api_key.get_secret_value() if self.config.api_key else ""
        self._secret = key

    # --- public calls ---
    def ping(self) -> dict[str, Any]:
        """GET /ping; returns its body (``{"gecko_says": ...}``). Checks reachability and the key."""
        status, text = self._call("/ping", {}, context={"endpoint": "/ping"})
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise SourceTransientError(f"/ping returned invalid JSON (HTTP {status})") from exc
        if not isinstance(body, dict) or "gecko_says" not in body:
            raise SourceTransientError(f"/ping returned an unexpected body: {self._redact(text[:120])}")
        return body

    def coins_markets(
        self,
        vs_currency: str,
        page: int,
        per_page: int,
        ids: Sequence[str] | None = None,
    ) -> MarketsPage:
        """Fetch one /coins/markets page, retried per the policy.

        Raises:
            SourceTransientError: still failing after the attempt or time cap.
            SourceTerminalError: refused for good (``SourceAuthError`` for credentials/plan).
        """
        params = markets_params(vs_currency, page, per_page, ids)
        context = {"endpoint": "/coins/markets", "vs_currency": vs_currency, "page": page}
        holder: dict[str, Any] = {}

        def parse(text: str) -> None:
            holder["records"] = parse_markets_body(text)

        status, text = self._call("/coins/markets", params, context=context, validate=parse)
        return MarketsPage(
            request=params,
            body_text=text,
            records=holder["records"],
            http_status=status,
            fetched_at_epoch=time.time(),
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    # --- internals ---
    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _once(
        self, path: str, params: dict[str, Any], validate: Callable[[str], None] | None
    ) -> tuple[int, str]:
        """One HTTP attempt; raises a classified error on failure."""
        self.limiter.acquire()
        self._count(calls=1)
        url = self.config.base_url.rstrip("/") + path
        headers = {"Accept": "application/json", **auth_headers(self.config.plan, self.config.api_key)}
        try:
            resp = self.session.get(url, params=params, headers=headers, timeout=self.config.timeout_seconds)
            text = resp.text
        except requests.Timeout:
            raise SourceTransientError(f"timeout after {self.config.timeout_seconds}s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise SourceTransientError(f"connection failed: {self._redact(type(exc).__name__)}") from None
        except requests.RequestException as exc:
            raise SourceTransientError(f"request failed: {type(exc).__name__}") from None
        error = classify_response(resp.status_code, text, resp.headers, self.config.retry)
        if isinstance(error, _RateLimited):
            self._count(http_429=1)
        if error is not None:
            raise type(error)(*_redacted_args(error, self._redact))
        if validate is not None:
            try:
                validate(text)
            except _RateLimited as exc:
                self._count(http_429=1)
                raise _RateLimited(self._redact(str(exc)), exc.retry_after) from None
            except (SourceTransientError, SourceTerminalError) as exc:
                raise type(exc)(self._redact(str(exc))) from None
        return resp.status_code, text

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        wait = self.config.retry.backoff(state.attempt_number, self.rng)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # Honour the server's wait; a little jitter keeps parallel clients apart.
            wait = retry_after + self.rng.uniform(0, min(1.0, self.config.retry.jitter))
        return wait

    def _call(
        self,
        path: str,
        params: dict[str, Any],
        *,
        context: dict[str, Any],
        validate: Callable[[str], None] | None = None,
    ) -> tuple[int, str]:
        def before_sleep(state: RetryCallState) -> None:
            self._count(retries=1)
            exc = state.outcome.exception() if state.outcome else None
            log_event(
                logger,
                "coingecko.retry",
                level=logging.WARNING,
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep or 0.0, 3),
                reason=str(exc),
                **context,
            )

        retrying = self.config.retry.retrying(
            sleep=self.sleep, clock=self.clock, wait=self._wait, before_sleep=before_sleep
        )
        try:
            return retrying(self._once, path, params, validate)
        except SourceTransientError as exc:
            self._count(gave_up=1)
            attempts = retrying.statistics.get("attempt_number", "?")
            log_event(
                logger,
                "coingecko.give_up",
                level=logging.ERROR,
                attempts=attempts,
                reason=str(exc),
                **context,
            )
            raise SourceTransientError(f"gave up after {attempts} attempt(s): {exc}") from None
        except SourceTerminalError as exc:
            log_event(logger, "coingecko.refused", level=logging.ERROR, reason=str(exc), **context)
            raise


def _redacted_args(error: Exception, redact: Callable[[str], str]) -> tuple[Any, ...]:
    args = tuple(redact(a) if isinstance(a, str) else a for a in error.args)
    if isinstance(error, _RateLimited):
        return (args[0], error.retry_after)
    return args
