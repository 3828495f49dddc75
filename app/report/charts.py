"""The report's charts: pandas frames in, base64 PNG out (matplotlib's object API, Agg canvas).

Each function returns ``None`` when there is nothing to draw, so the page can say "no data yet".
``matplotlib.figure.Figure`` is used directly (not pyplot): no global figure state, no GUI backend.
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

CATEGORY_COLORS = {"LARGE_CAP": "#1f77b4", "MID_CAP": "#ff7f0e", "SMALL_CAP": "#2ca02c"}
UP, DOWN, FLAG = "#26a69a", "#ef5350", "#d62728"
# The data-quality score's colour: no other chart uses it, so the page's screenshot can find it.
SCORE_COLOR = "#6a1b9a"
# Up to this many days, day-level charts draw one bar slot per day instead of a date axis.
FEW_DAYS = 3


def to_png_base64(fig: Figure) -> str:
    """Render a figure to a base64-encoded PNG."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Short date ranges make AutoDateLocator fall back to a default interval: harmless.
        warnings.filterwarnings("ignore", message="AutoDateLocator was unable", category=UserWarning)
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _date_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _grid(n: int, cols: int = 3, height: float = 2.4) -> tuple[Figure, list]:
    rows = max(1, (n + cols - 1) // cols)
    fig = Figure(figsize=(13, height * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    fig.subplots_adjust(hspace=0.55, wspace=0.25)
    return fig, axes


def price_chart(prices: pd.DataFrame, anomalies: pd.DataFrame, coins: list[str]) -> str | None:
    """Price history of the top coins, one panel each, price anomalies as red dots."""
    if prices.empty or not coins:
        return None
    fig, axes = _grid(len(coins))
    price_flags = anomalies[anomalies["metric"].str.contains("price")] if not anomalies.empty else anomalies
    for ax, coin in zip(axes, coins, strict=False):
        series = prices[prices["coin_id"] == coin]
        ax.plot(series["valid_from"], series["current_price"], color="#1f77b4", linewidth=1.1)
        if not price_flags.empty:
            flagged = price_flags[price_flags["coin_id"] == coin]
            marks = series.merge(flagged[["observed_at"]], left_on="valid_from", right_on="observed_at")
            ax.scatter(
                marks["valid_from"], marks["current_price"], color=FLAG, s=22, zorder=3, label="anomaly"
            )
        symbol = str(series["symbol"].iloc[0]).upper() if not series.empty else coin
        ax.set_title(f"{coin} ({symbol})", fontsize=9)
        ax.tick_params(labelsize=7)
        _date_axis(ax)
    return to_png_base64(fig)


def rolling_zscore(values: pd.Series, window: int, min_periods: int) -> pd.Series:
    """z of each value against the ``window`` previous values (excluding itself), like the detector."""
    previous = values.shift(1)
    mean = previous.rolling(window, min_periods=min_periods).mean()
    std = previous.rolling(window, min_periods=min_periods).std()
    return (values - mean) / std.replace(0, np.nan)


def volume_zscore_chart(
    prices: pd.DataFrame, coins: list[str], *, window: int, min_periods: int, threshold: float
) -> str | None:
    """Volume z-scores of the top coins over time, with the ±threshold band."""
    if prices.empty or not coins:
        return None
    fig = Figure(figsize=(13, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for coin in coins:
        series = prices[prices["coin_id"] == coin].sort_values("valid_from")
        z = rolling_zscore(series["total_volume"].astype(float), window, min_periods)
        if z.notna().any():
            drawn = True
        ax.plot(series["valid_from"], z, linewidth=0.9, label=coin)
        hits = z.abs() >= threshold
        ax.scatter(series["valid_from"][hits], z[hits], color=FLAG, s=18, zorder=3)
    if not drawn:
        return None
    for y in (threshold, -threshold):
        ax.axhline(y, color=FLAG, linestyle="--", linewidth=0.8)
    ax.set_ylabel("volume z-score")
    ax.legend(fontsize=7, ncol=min(6, len(coins)), loc="upper left")
    ax.tick_params(labelsize=8)
    _date_axis(ax)
    return to_png_base64(fig)


def gold_chart(gold: pd.DataFrame) -> str | None:
    """Market metrics by market-cap category and day: total cap, coins, average 24h change."""
    fig = gold_figure(gold)
    return None if fig is None else to_png_base64(fig)


def gold_figure(gold: pd.DataFrame, *, few_days: int = FEW_DAYS) -> Figure | None:
    """:func:`gold_chart`'s figure: lines on a date axis, or grouped bars per day when there are few.

    A date axis around a single day spans years (matplotlib widens an empty date range by two years
    each side), so up to ``few_days`` days are drawn as bars with one labelled slot per day.
    """
    if gold.empty:
        return None
    fig = Figure(figsize=(13, 3.0))
    panels = [
        ("total_market_cap", "total market cap", True),
        ("num_coins", "coins", False),
        ("avg_price_change_24h", "avg 24h price change", False),
    ]
    dates = pd.to_datetime(gold["metric_date"])
    days = sorted(dates.dt.normalize().unique())
    categories = sorted(gold["market_cap_category"].dropna().astype(str).unique()) or [""]
    width = 0.8 / max(1, len(categories))
    for i, (col, title, log) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for k, (category, part) in enumerate(gold.groupby("market_cap_category")):
            style: dict[str, Any] = {"color": CATEGORY_COLORS.get(str(category)), "label": str(category)}
            if len(days) <= few_days:
                slots = [days.index(d) for d in pd.to_datetime(part["metric_date"]).dt.normalize()]
                offset = (k - (len(categories) - 1) / 2) * width
                ax.bar(np.array(slots) + offset, part[col].to_numpy(), width, **style)
            else:
                ax.plot(pd.to_datetime(part["metric_date"]), part[col], marker="o", markersize=3, **style)
        if log and (gold[col] > 0).all():
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        if len(days) <= few_days:
            ax.set_xticks(range(len(days)))
            ax.set_xticklabels([pd.Timestamp(d).strftime("%Y-%m-%d") for d in days])
            ax.set_xlim(-0.6, len(days) - 0.4)
        else:
            _date_axis(ax)
        if i == 0:
            ax.legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3)
    return fig


def compact_number(value: float, _pos: object = None) -> str:
    """A tick label without an offset or exponent: ``1.2e11`` -> ``120B``, ``5e6`` -> ``5M``."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def candle_chart(ohlc: pd.DataFrame, coin: str, interval: str) -> str | None:
    """Candles of one coin with volume underneath; buckets with anomalies get a red marker."""
    fig = candle_figure(ohlc, coin, interval)
    return None if fig is None else to_png_base64(fig)


def candle_figure(ohlc: pd.DataFrame, coin: str, interval: str) -> Figure | None:
    """:func:`candle_chart`'s figure.

    The volume axis labels its ticks in compact units (``120B``): with the default formatter its
    offset label (``1e11``) sits at the top of the volume panel, on the price panel's x axis.
    """
    if ohlc.empty:
        return None
    fig = Figure(figsize=(13, 4.0))
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(gs[0])
    vol_ax = fig.add_subplot(gs[1], sharex=ax)
    x = pd.to_datetime(ohlc["bucket_start"])
    step = x.diff().median() if len(x) > 1 else pd.Timedelta(hours=1 if interval == "1h" else 24)
    width = step * 0.7
    up = ohlc["close"] >= ohlc["open"]
    colors = np.where(up, UP, DOWN)
    ax.vlines(x, ohlc["low"], ohlc["high"], color=colors, linewidth=0.8)
    bottoms = np.minimum(ohlc["open"], ohlc["close"])
    heights = (ohlc["close"] - ohlc["open"]).abs()
    heights = heights.where(heights > 0, ohlc["close"].abs() * 1e-4)
    ax.bar(x, heights, width, bottom=bottoms, color=colors, align="center")
    flagged = ohlc["n_anomalies"].fillna(0) > 0
    if flagged.any():
        ax.scatter(x[flagged], ohlc["high"][flagged] * 1.004, marker="v", color=FLAG, s=24, label="anomalies")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{coin}: {interval} candles", fontsize=10)
    ax.tick_params(labelbottom=False, labelsize=8)
    vol_ax.bar(x, ohlc["volume"], width, color="#90a4ae")
    vol_ax.set_ylabel("volume", fontsize=8)
    vol_ax.tick_params(labelsize=7)
    vol_ax.yaxis.set_major_formatter(FuncFormatter(compact_number))
    _date_axis(vol_ax)
    return fig


def quality_chart(
    by_rule: pd.DataFrame, batches: pd.DataFrame | None = None, *, min_score: float
) -> str | None:
    """The data-quality score per batch over time, over its quarantined records stacked by rule."""
    fig = quality_figure(by_rule, batches if batches is not None else pd.DataFrame(), min_score=min_score)
    return None if fig is None else to_png_base64(fig)


def batch_scores(batches: pd.DataFrame) -> pd.Series:
    """The score of each batch that has one, by batch id in time order (a re-run's row wins)."""
    if batches.empty or "dq_score" not in batches:
        return pd.Series(dtype=float)
    scored = batches[batches["dq_score"].notna()]
    if "status" in scored:
        scored = scored[scored["status"] == "ok"]
    scored = scored.sort_values(["started_at", "batch_id"], kind="stable")
    return scored.groupby("batch_id", sort=False)["dq_score"].last().astype(float)


def quality_figure(by_rule: pd.DataFrame, batches: pd.DataFrame, *, min_score: float) -> Figure | None:
    """:func:`quality_chart`'s figure: bars of quarantine reasons, the score as a line on a 0-100 % axis.

    Batches are in time order (their start); the dashed line is the alert minimum.
    """
    scores = batch_scores(batches)
    counts = by_rule if not by_rule.empty else pd.DataFrame(columns=["batch_id", "rule", "count"])
    has_counts = counts["count"].fillna(0).sum() > 0
    if scores.empty and not has_counts:
        return None
    order = list(scores.index) + sorted(set(counts["batch_id"]) - set(scores.index))
    fig = Figure(figsize=(13, 2.9))
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(len(order))
    if has_counts:
        pivot = counts.pivot_table(index="batch_id", columns="rule", values="count", aggfunc="sum")
        pivot = pivot.reindex(order).fillna(0)
        bottom = np.zeros(len(pivot))
        for rule in pivot.columns:
            ax.bar(positions, pivot[rule].to_numpy(), bottom=bottom, label=str(rule))
            bottom += pivot[rule].to_numpy()
        # Beside the plot: inside, it would hide the score line, which sits near 100 %.
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.07, 1.0), title="quarantined by rule")
    ax.set_ylabel("quarantined records")
    _batch_ticks(ax, order)
    ax.set_xlabel("batch id (in time order)", fontsize=8)
    if not scores.empty:
        twin = ax.twinx()
        y = scores.reindex(order).to_numpy() * 100
        twin.plot(positions, y, color=SCORE_COLOR, marker="o", markersize=4, linewidth=1.6, label="score")
        twin.axhline(min_score * 100, color=SCORE_COLOR, linestyle="--", linewidth=0.9)
        twin.set_ylim(0, 105)
        twin.set_ylabel("score (% passing every rule)", color=SCORE_COLOR, fontsize=8)
        twin.tick_params(axis="y", colors=SCORE_COLOR, labelsize=7)
    return fig


def _batch_ticks(ax: object, batch_ids: list[int]) -> None:
    step = max(1, len(batch_ids) // 25)
    ax.set_xticks(range(0, len(batch_ids), step))  # type: ignore[attr-defined]
    ax.set_xticklabels([str(b) for b in batch_ids[::step]], fontsize=7)  # type: ignore[attr-defined]
    ax.set_xlabel("batch id", fontsize=8)  # type: ignore[attr-defined]


def throughput_chart(batches: pd.DataFrame, progress: pd.DataFrame) -> str | None:
    """Records read per batch (bars) and processed rows/s (line, from progress rows when present)."""
    source = batches if not batches.empty else progress
    if source.empty:
        return None
    per_batch = source.groupby("batch_id", as_index=True)["records_read"].sum().sort_index()
    fig = Figure(figsize=(13, 2.7))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(per_batch)), per_batch.to_numpy(), color="#5c6bc0", label="records read")
    ax.set_ylabel("records read")
    _batch_ticks(ax, per_batch.index.tolist())
    if not progress.empty and progress["processed_rows_per_second"].notna().any():
        rate = progress.groupby("batch_id")["processed_rows_per_second"].last().reindex(per_batch.index)
        twin = ax.twinx()
        twin.plot(range(len(rate)), rate.to_numpy(), color="#ef6c00", marker="o", markersize=3)
        twin.set_ylabel("processed rows/s", color="#ef6c00")
    return to_png_base64(fig)


def duration_chart(durations: pd.DataFrame, progress: pd.DataFrame) -> str | None:
    """Batch durations stacked by stage (handler rows), else trigger time from progress rows."""
    if not durations.empty:
        pivot = durations.pivot_table(index="batch_id", columns="stage", values="ms", aggfunc="max")
        pivot = pivot.fillna(0).sort_index() / 1000.0
        # A "total" stage would double-count the stacked parts.
        parts = [c for c in pivot.columns if c not in ("total", "batch", "triggerExecution")] or list(
            pivot.columns
        )
        fig = Figure(figsize=(13, 2.7))
        ax = fig.add_subplot(1, 1, 1)
        bottom = np.zeros(len(pivot))
        for stage in parts:
            ax.bar(range(len(pivot)), pivot[stage].to_numpy(), bottom=bottom, label=str(stage))
            bottom += pivot[stage].to_numpy()
        _batch_ticks(ax, pivot.index.tolist())
        ax.set_ylabel("seconds")
        ax.legend(fontsize=7, ncol=6)
        return to_png_base64(fig)
    if not progress.empty and progress["ms"].notna().any():
        fig = Figure(figsize=(13, 2.7))
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(range(len(progress)), progress["ms"].fillna(0).to_numpy() / 1000.0, color="#8d6e63")
        _batch_ticks(ax, progress["batch_id"].tolist())
        ax.set_ylabel("trigger seconds")
        return to_png_base64(fig)
    return None
