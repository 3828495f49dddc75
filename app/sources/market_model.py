"""A seeded, deterministic crypto market: what the simulator serves and the demo lands.

Each coin follows a geometric random walk with occasional injected jumps (something real for the
anomaly detector to find). Records carry every /coins/markets field with the real API's quirks:
integers where floats are usual, tiny prices that JSON writes in scientific notation, nulls in
max_supply / total_supply / roi / fully_diluted_valuation (and one coin with null 24h fields),
ranks with gaps and local swaps, and ``last_updated`` as ISO-8601 with milliseconds and ``Z``
advancing with the simulated clock. Same seed and same ``advance`` calls: same output.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
TIMEFRAME_SECONDS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "14d": 14 * 86400, "30d": 30 * 86400}
FIAT_RATES = {"usd": 1.0, "eur": 0.92, "gbp": 0.79, "jpy": 151.3, "chf": 0.88, "cad": 1.36, "aud": 1.52}
CRYPTO_QUOTES = ("btc", "eth")
SUPPORTED_VS = tuple(FIAT_RATES) + CRYPTO_QUOTES

# (id, symbol, name, price_usd, circulating_supply, max_supply or None)
_WELL_KNOWN = (
    ("bitcoin", "btc", "Bitcoin", 64000.0, 19_700_000.0, 21_000_000.0),
    ("ethereum", "eth", "Ethereum", 3100.0, 120_100_000.0, None),
    ("tether", "usdt", "Tether", 1.0, 110_000_000_000.0, None),
    ("binancecoin", "bnb", "BNB", 580.0, 147_000_000.0, 200_000_000.0),
    ("solana", "sol", "Solana", 145.0, 460_000_000.0, None),
    ("usd-coin", "usdc", "USDC", 1.0, 33_000_000_000.0, None),
    ("ripple", "xrp", "XRP", 0.52, 55_000_000_000.0, 100_000_000_000.0),
    ("dogecoin", "doge", "Dogecoin", 0.15, 145_000_000_000.0, None),
    ("cardano", "ada", "Cardano", 0.45, 35_000_000_000.0, 45_000_000_000.0),
    ("shiba-inu", "shib", "Shiba Inu", 0.0000183, 589_000_000_000_000.0, None),
    ("pepe", "pepe", "Pepe", 0.00000836, 420_690_000_000_000.0, 420_690_000_000_000.0),
    ("monero", "xmr", "Monero", 165.0, 18_400_000.0, None),
)
_SYLLABLES = ("zor", "bla", "xi", "qua", "neo", "lum", "vex", "tra", "mo", "kin", "pa", "rix", "del", "ta")


@dataclass
class _Coin:
    id: str
    symbol: str
    name: str
    price: float  # USD
    supply: float
    max_supply: float | None
    total_supply: float | None
    sigma: float  # per-sqrt-day volatility of log price
    jump_rate: float  # expected jumps per day
    lag_ms: int
    int_price: bool
    null_24h: bool
    fdv_null: bool
    unranked: bool
    roi: dict[str, Any] | None
    ath: float = 0.0
    ath_date: datetime = DEFAULT_START
    atl: float = 0.0
    atl_date: datetime = DEFAULT_START
    last_updated: datetime = DEFAULT_START
    baselines: dict[str, float] = field(default_factory=dict)
    volume_ratio: float = 0.05


class MarketModel:
    """A deterministic market of ``n_coins`` coins.

    Args:
        n_coins: universe size (at least 1).
        seed: random seed; the same seed and calls give the same records.
        start: simulated start time (UTC); a fixed date by default.
        jump_rate_per_day: expected injected jumps per coin per simulated day.
    """

    def __init__(
        self,
        n_coins: int = 250,
        seed: int = 42,
        *,
        start: datetime | None = None,
        jump_rate_per_day: float = 0.5,
    ) -> None:
        if n_coins < 1:
            raise ValueError(f"n_coins must be >= 1, got {n_coins}")
        self.seed = seed
        self._rng = random.Random(seed)
        self.now = (start or DEFAULT_START).astimezone(UTC)
        self.jumps: list[tuple[str, datetime, float]] = []
        """Injected jumps as (coin id, time, log-price jump): the anomaly detector's ground truth."""
        self.coins = [self._make_coin(i, jump_rate_per_day) for i in range(n_coins)]

    # --- building ---
    def _make_coin(self, i: int, jump_rate: float) -> _Coin:
        rng = self._rng
        if i < len(_WELL_KNOWN):
            cid, sym, name, price, supply, max_supply = _WELL_KNOWN[i]
        else:
            word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
            cid, name = f"{word}-{i}", word.capitalize() + (" Token" if i % 3 else " Protocol")
            sym = word[:4] if i % 97 else "meta"  # duplicate symbols exist on CoinGecko
            price = math.exp(rng.uniform(math.log(1e-9), math.log(50.0)))
            mcap = math.exp(rng.uniform(math.log(1e6), math.log(5e9))) / (1 + i / 200)
            supply = mcap / price
            max_supply = None if rng.random() < 0.4 else supply * rng.uniform(1.0, 3.0)
        stable = sym in ("usdt", "usdc")
        total_supply = None if (rng.random() < 0.04 and cid != "bitcoin") else (max_supply or supply * 1.05)
        roi = None
        if rng.random() < 0.2:
            times = rng.uniform(-0.9, 50.0)
            roi = {
                "times": times,
                "currency": rng.choice(("usd", "usd", "eth", "btc")),
                "percentage": times * 100,
            }
        coin = _Coin(
            id=cid,
            symbol=sym,
            name=name,
            price=price,
            supply=supply,
            max_supply=max_supply,
            total_supply=total_supply,
            sigma=0.002 if stable else rng.uniform(0.02, 0.12),
            jump_rate=0.0 if stable else jump_rate,
            lag_ms=rng.randint(0, 45_000),
            int_price=price > 1000 and rng.random() < 0.5,
            null_24h=i == 23,  # one coin with every 24h field null, like gains-farm
            fdv_null=total_supply is None or rng.random() < 0.03,
            unranked=False,
            roi=roi,
            volume_ratio=rng.uniform(0.005, 0.3),
        )
        coin.unranked = i >= 50 and rng.random() < 0.01
        coin.ath = price * rng.uniform(1.0, 6.0)
        coin.ath_date = self.now - timedelta(days=rng.uniform(30, 1500), milliseconds=rng.randint(0, 999))
        coin.atl = price * rng.uniform(0.001, 1.0)
        coin.atl_date = self.now - timedelta(days=rng.uniform(200, 3000), milliseconds=rng.randint(0, 999))
        coin.last_updated = self.now - timedelta(milliseconds=coin.lag_ms)
        for tf, secs in TIMEFRAME_SECONDS.items():
            coin.baselines[tf] = price * math.exp(rng.gauss(0, coin.sigma * math.sqrt(secs / 86400)))
        return coin

    # --- time ---
    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward and step every coin's random walk."""
        if seconds <= 0:
            return
        rng = self._rng
        self.now += timedelta(seconds=seconds)
        days = seconds / 86400
        for coin in self.coins:
            if rng.random() < 0.1:
                continue  # not every coin updates every tick: stale last_updated is real
            old = coin.price
            step = rng.gauss(0, coin.sigma * math.sqrt(days))
            if rng.random() < coin.jump_rate * days:
                jump = rng.choice((-1, 1)) * rng.uniform(0.15, 0.4)
                step += jump
                self.jumps.append((coin.id, self.now, jump))
            coin.price = max(old * math.exp(step), 1e-12)
            coin.volume_ratio = min(2.0, max(0.001, coin.volume_ratio * math.exp(rng.gauss(0, 0.05))))
            for tf, secs in TIMEFRAME_SECONDS.items():
                # Exponential smoothing approximates "the price tf ago" in O(1) memory.
                weight = min(1.0, seconds / secs)
                coin.baselines[tf] += weight * (old - coin.baselines[tf])
            coin.last_updated = self.now - timedelta(milliseconds=rng.randint(0, coin.lag_ms))
            if coin.price > coin.ath:
                coin.ath, coin.ath_date = coin.price, coin.last_updated
            if coin.price < coin.atl:
                coin.atl, coin.atl_date = coin.price, coin.last_updated

    # --- output ---
    def rate(self, vs_currency: str) -> float:
        """Units of ``vs_currency`` per USD.

        Raises:
            ValueError: unsupported currency (the API answers ``invalid vs_currency``).
        """
        vs = vs_currency.lower()
        if vs in FIAT_RATES:
            return FIAT_RATES[vs]
        if vs in CRYPTO_QUOTES:
            return 1.0 / self._by_id("bitcoin" if vs == "btc" else "ethereum", fallback=60000.0)
        raise ValueError("invalid vs_currency")

    def _by_id(self, coin_id: str, fallback: float) -> float:
        for coin in self.coins:
            if coin.id == coin_id:
                return coin.price
        return fallback

    def ranked(self) -> list[_Coin]:
        """Coins in array order of /coins/markets (market cap descending)."""
        return sorted(self.coins, key=lambda c: (-(c.price * c.supply), c.id))

    def ranks(self) -> dict[str, int | None]:
        """``market_cap_rank`` per coin: mostly by market cap, with gaps, swaps and unranked coins."""
        out: dict[str, int | None] = {}
        rank = 0
        ordered = self.ranked()
        for pos, coin in enumerate(ordered):
            rank += 2 if pos and pos % 83 == 0 else 1  # an occasional gap (rank 250 missing, ...)
            out[coin.id] = None if coin.unranked else rank
        for pos in range(76, len(ordered) - 1, 150):  # a local swap: positions 76-77 carry 78, 77
            a, b = ordered[pos].id, ordered[pos + 1].id
            out[a], out[b] = out[b], out[a]
        return out

    def record(
        self, coin: _Coin, vs_currency: str, rank: int | None, timeframes: Sequence[str] = ()
    ) -> dict[str, Any]:
        """One /coins/markets item in the real key order."""
        fx = self.rate(vs_currency)
        price = coin.price * fx
        mcap = price * coin.supply
        base24 = coin.baselines["24h"] * fx
        vol = mcap * coin.volume_ratio
        hi, lo = max(price, base24) * 1.012, min(price, base24) * 0.988
        fdv = None if coin.fdv_null else (coin.max_supply or coin.total_supply or coin.supply) * price
        item: dict[str, Any] = {
            "id": coin.id,
            "symbol": coin.symbol,
            "name": coin.name,
            "image": f"https://coin-images.coingecko.com/coins/images/{zlib.crc32(coin.id.encode()) % 40000}/large/{coin.id}.png",
            "current_price": _num(price, as_int=coin.int_price and vs_currency in FIAT_RATES),
            "market_cap": int(round(mcap)) if mcap >= 1 else _num(mcap),
            "market_cap_rank": rank,
            "fully_diluted_valuation": None if fdv is None else int(round(fdv)) if fdv >= 1 else _num(fdv),
            "total_volume": int(round(vol)) if vol >= 1 and coin.int_price is False else _num(vol),
            "high_24h": _num(hi),
            "low_24h": _num(lo),
            "price_change_24h": _num(price - base24),
            "price_change_percentage_24h": _num(100.0 * (price / base24 - 1.0)),
            "market_cap_change_24h": _num(mcap - base24 * coin.supply),
            "market_cap_change_percentage_24h": _num(100.0 * (price / base24 - 1.0)),
            "circulating_supply": float(round(coin.supply, 2)),
            "total_supply": None if coin.total_supply is None else float(round(coin.total_supply, 2)),
            "max_supply": None if coin.max_supply is None else float(round(coin.max_supply, 2)),
            "ath": _num(coin.ath * fx),
            "ath_change_percentage": _num(100.0 * (coin.price / coin.ath - 1.0)),
            "ath_date": iso_ms(coin.ath_date),
            "atl": _num(coin.atl * fx),
            "atl_change_percentage": _num(100.0 * (coin.price / coin.atl - 1.0)),
            "atl_date": iso_ms(coin.atl_date),
            "roi": dict(coin.roi) if coin.roi else None,
            "last_updated": iso_ms(coin.last_updated),
        }
        if coin.null_24h:
            for key in ("high_24h", "low_24h", "price_change_24h", "price_change_percentage_24h"):
                item[key] = None
            item["market_cap_change_24h"] = item["market_cap_change_percentage_24h"] = None
        for tf in timeframes:
            if tf in TIMEFRAME_SECONDS:
                item[f"price_change_percentage_{tf}_in_currency"] = _num(
                    100.0 * (coin.price / coin.baselines[tf] - 1.0)
                )
        return item

    def markets_page(
        self,
        vs_currency: str,
        page: int = 1,
        per_page: int = 100,
        ids: Sequence[str] | None = None,
        price_change_percentage: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """One page of /coins/markets, as the API orders it; ``[]`` past the end.

        Raises:
            ValueError: unsupported ``vs_currency`` or a page/per_page below 1.
        """
        if page < 1 or per_page < 1:
            raise ValueError("page and per_page must be >= 1")
        self.rate(vs_currency)
        ranks = self.ranks()
        coins = self.ranked()
        if ids is not None:
            wanted = {i.strip().lower() for i in ids}
            coins = [c for c in coins if c.id in wanted]
        chunk = coins[(page - 1) * per_page : page * per_page]
        return [self.record(c, vs_currency.lower(), ranks[c.id], price_change_percentage) for c in chunk]

    def simple_price(
        self, ids: Sequence[str], vs_currencies: Sequence[str], **include: bool
    ) -> dict[str, Any]:
        """/simple/price: unknown ids silently dropped, ``{}`` when none is known."""
        out: dict[str, Any] = {}
        by_id = {c.id: c for c in self.coins}
        for cid in ids:
            coin = by_id.get(cid.strip().lower())
            if coin is None:
                continue
            entry: dict[str, Any] = {}
            for vs in vs_currencies:
                fx = self.rate(vs)
                entry[vs] = _num(coin.price * fx, as_int=coin.int_price and vs in FIAT_RATES)
                if include.get("include_market_cap"):
                    entry[f"{vs}_market_cap"] = coin.price * fx * coin.supply
                if include.get("include_24hr_vol"):
                    entry[f"{vs}_24h_vol"] = coin.price * fx * coin.supply * coin.volume_ratio
                if include.get("include_24hr_change"):
                    entry[f"{vs}_24h_change"] = (
                        None if coin.null_24h else 100.0 * (coin.price / coin.baselines["24h"] - 1)
                    )
            if include.get("include_last_updated_at"):
                entry["last_updated_at"] = int(coin.last_updated.timestamp())
            out[coin.id] = entry
        return out


def iso_ms(ts: datetime) -> str:
    """``2023-07-28T20:03:29.093Z`` (UTC, milliseconds, Z)."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _num(value: float, *, as_int: bool = False) -> float | int:
    """Round like the API: ints for whole big numbers, 6-8 significant digits for tiny ones."""
    if as_int:
        return int(round(value))
    if value == 0 or not math.isfinite(value):
        return 0.0
    digits = max(2, 8 - int(math.floor(math.log10(abs(value)))))
    return round(value, min(digits, 20))
