"""Assemble the report page: panels of charts and small tables, everything inline.

Every panel is a ``<section class="panel" id="panel-…" data-state="data|empty">``; an empty panel
says "no data yet". The page needs no network: CSS is inlined and charts are base64 PNGs.
"""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING

import pandas as pd

from app.logs import log_event
from app.paths import Layout, local_path
from app.report import charts
from app.report.data import ReportData, load_report_data

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

REPORT_FILE_NAME = "coinlake-report.html"
EMPTY = "no data yet"


@dataclass(frozen=True)
class Panel:
    """One section of the page."""

    key: str
    title: str
    note: str
    image: str | None = None
    table_html: str = ""

    @property
    def has_data(self) -> bool:
        return self.image is not None or bool(self.table_html)


def default_report_path(layout: Layout) -> str:
    """``<root>/reports/coinlake-report.html`` as a local path."""
    return os.path.join(local_path(layout.reports_dir), REPORT_FILE_NAME)


def build_report(
    spark: SparkSession,
    layout: Layout,
    out_path: str | None = None,
    *,
    coin: str | None = None,
    top_n: int = 6,
    zscore_window: int = 60,
    zscore_min_periods: int = 20,
    zscore_threshold: float = 3.0,
    dq_min_score: float = 0.95,
) -> str:
    """Read the Delta tables, draw every panel and write the HTML file.

    Args:
        spark: the session.
        layout: the storage layout of the data root.
        out_path: where to write (a local path); default :func:`default_report_path`.
        coin: coin id for the candle chart; default the largest by market cap.
        top_n: coins with a price chart.
        zscore_window: W of the volume z-score panel (use the detector's setting).
        zscore_min_periods: fewest previous values for a z-score.
        zscore_threshold: the |z| band drawn.
        dq_min_score: the data-quality alert minimum drawn on the score chart (the setting).

    Returns:
        The path written.
    """
    started = datetime.now(UTC)
    data = load_report_data(spark, layout, coin=coin, top_n=top_n)
    panels = make_panels(
        data,
        zscore_window=zscore_window,
        zscore_min_periods=zscore_min_periods,
        zscore_threshold=zscore_threshold,
        dq_min_score=dq_min_score,
    )
    page = render_html(panels, data, layout, generated_at=started)
    path = out_path or default_report_path(layout)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, path)
    log_event(
        logger,
        "report.written",
        path=path,
        panels_with_data=sum(p.has_data for p in panels),
        panels=len(panels),
        duration_ms=int((datetime.now(UTC) - started).total_seconds() * 1000),
    )
    return path


def make_panels(
    data: ReportData,
    *,
    zscore_window: int,
    zscore_min_periods: int,
    zscore_threshold: float,
    dq_min_score: float = 0.95,
) -> list[Panel]:
    """Every panel of the page, drawn from ``data``."""
    cur = (data.vs_currency or "").upper()
    coin = data.coin or "-"
    return [
        Panel(
            "prices",
            f"Prices of the top {len(data.top_coins) or ''} coins ({cur})".replace("  ", " "),
            "Silver price history (each SCD2 version at its valid_from); red dots are price anomalies. "
            f"Coins: {', '.join(data.top_coins) or '-'}.",
            charts.price_chart(data.prices, data.anomalies, data.top_coins),
        ),
        Panel(
            "volume-z",
            "Volume z-scores",
            f"Total volume against the {zscore_window} previous observations "
            f"(min {zscore_min_periods}); dashed lines at ±{zscore_threshold:g}.",
            charts.volume_zscore_chart(
                data.prices,
                data.top_coins,
                window=zscore_window,
                min_periods=zscore_min_periods,
                threshold=zscore_threshold,
            ),
        ),
        Panel(
            "gold",
            "Market metrics by category",
            f"gold_crypto_metrics per day and market-cap category ({cur}).",
            charts.gold_chart(data.gold),
        ),
        Panel(
            "candles",
            f"Candles: {coin}",
            f"gold_coin_ohlc, {data.ohlc_interval or '-'} buckets (latest {len(data.ohlc)}); "
            "red markers: buckets with anomalies. Choose the coin with --coin.",
            charts.candle_chart(data.ohlc, coin, data.ohlc_interval or ""),
        ),
        Panel(
            "quality",
            "Data quality: score and quarantine reasons",
            "Score per batch in time order (purple line: the share of records passing every "
            f"expectation; dashed: the alert minimum score {dq_min_score:g}) over the records sent to "
            "bronze_quarantine per batch, by failed expectation; latest examples below.",
            charts.quality_chart(data.quarantine_by_rule, data.batches, min_score=dq_min_score),
            _samples_table(data.quarantine_samples),
        ),
        Panel(
            "throughput",
            "Pipeline throughput",
            "Records read per micro-batch; processed rows/s from the streaming progress listener.",
            charts.throughput_chart(data.batches, data.progress),
        ),
        Panel(
            "durations",
            "Batch durations",
            "Time per batch by stage (pipeline_metadata.durations_ms).",
            charts.duration_chart(data.durations, data.progress),
        ),
    ]


def _samples_table(samples: pd.DataFrame) -> str:
    if samples.empty:
        return ""
    rows = "".join(
        "<tr>"
        f"<td class='num'>{html.escape(str(r.batch_id))}</td><td>{html.escape(str(r.coin_id))}</td>"
        f"<td>{html.escape(str(r.rules))}</td><td>{html.escape(str(r.errors))}</td>"
        f"<td class='raw'>{html.escape(str(r.raw_record))}</td></tr>"
        for r in samples.itertuples()
    )
    return (
        "<table><tr><th>batch</th><th>coin</th><th>rules</th><th>errors</th><th>raw record</th></tr>"
        f"{rows}</table>"
    )


def _summary_table(data: ReportData) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='num'>{'none yet' if n is None else f'{n:,}'}</td></tr>"
        for name, n in data.table_counts.items()
    )
    anomalies = 0 if data.anomalies.empty else len(data.anomalies)
    return (
        f"<table><tr><th>table</th><th>rows</th></tr>{rows}</table>"
        f"<p class='note'>Anomalies among the charted coins: {anomalies}. "
        f"Batches recorded: {len(data.batches)}.</p>"
    )


def _css() -> str:
    return resources.files("app.report").joinpath("report.css").read_text(encoding="utf-8")


def render_html(panels: list[Panel], data: ReportData, layout: Layout, *, generated_at: datetime) -> str:
    """The whole page as one string."""
    sections = []
    for panel in panels:
        body = (
            f"<img alt='{html.escape(panel.title)}' src='data:image/png;base64,{panel.image}'>"
            if panel.image
            else ""
        )
        body += panel.table_html
        if not panel.has_data:
            body = f"<p class='empty'>{EMPTY}</p>"
        sections.append(
            f"<section class='panel' id='panel-{panel.key}' data-state='{'data' if panel.has_data else 'empty'}'>"
            f"<h2>{html.escape(panel.title)}</h2><p class='note'>{html.escape(panel.note)}</p>{body}</section>"
        )
    summary = (
        "<section class='panel' id='panel-summary' data-state='data'><h2>Tables</h2>"
        f"{_summary_table(data)}</section>"
    )
    stamp = generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>coinlake report</title><style>{_css()}</style></head><body>"
        f"<header><h1>coinlake report</h1><p>data root {html.escape(layout.root)} · generated {stamp}</p></header>"
        f"<main>{summary}{''.join(sections)}</main></body></html>\n"
    )
