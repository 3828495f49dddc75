"""The HTML report on a small synthetic lake, and rendered in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from app.paths import Layout
from app.report import build_report, default_report_path
from app.report.charts import SCORE_COLOR
from tests.sample_lake import build_sample_lake

PANELS = ("prices", "volume-z", "gold", "candles", "quality", "throughput", "durations")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def sample_layout(spark, tmp_path_factory):
    layout = Layout.from_root(str(tmp_path_factory.mktemp("lake")))
    build_sample_lake(spark, layout)
    return layout


@pytest.fixture(scope="module")
def report_html(spark, sample_layout):
    path = build_report(spark, sample_layout, zscore_window=20, zscore_min_periods=10)
    with open(path, encoding="utf-8") as fh:
        return path, fh.read()


def _panel_state(page: str, key: str) -> str:
    match = re.search(rf"id='panel-{key}' data-state='(\w+)'", page)
    assert match, f"panel {key} missing"
    return match.group(1)


def test_build_report_writes_default_path_with_every_panel_drawn(report_html, sample_layout):
    path, page = report_html

    assert path == default_report_path(sample_layout)
    assert path.endswith("reports/coinlake-report.html")
    assert {key: _panel_state(page, key) for key in PANELS} == dict.fromkeys(PANELS, "data")
    assert page.count("src='data:image/png;base64,") == len(PANELS)
    assert "bitcoin, ethereum, solana, tinycoin" in page  # top coins by market cap
    assert "price_not_negative" in page  # the quarantine samples table


def test_build_report_is_self_contained(report_html):
    _, page = report_html

    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "<link" not in page and "<script" not in page


def test_build_report_coin_option_picks_the_candles(spark, sample_layout, tmp_path):
    path = build_report(spark, sample_layout, str(tmp_path / "r.html"), coin="ethereum")
    page = open(path, encoding="utf-8").read()

    assert "Candles: ethereum" in page
    assert _panel_state(page, "candles") == "empty"  # no ethereum candles in the sample


def test_build_report_on_an_empty_root_says_no_data_yet(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path / "empty"))

    path = build_report(spark, layout)
    page = open(path, encoding="utf-8").read()

    assert all(_panel_state(page, key) == "empty" for key in PANELS)
    assert page.count("no data yet") == len(PANELS)
    assert "none yet" in page  # table counts


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_renders_in_headless_chromium(report_html, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (./dev.sh test installs it when run as root)")
    path, _ = report_html
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(prefix="coinlake-chromium-")
    try:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1400,3000",
                f"file://{os.path.abspath(path)}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    keep = os.environ.get("COINLAKE_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "coinlake-report.png"))

    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[0] >= 2900 and pixels.shape[1] >= 1300
    # The charts put colour on the page: a blank or error page is nearly all one colour.
    rgb = pixels[..., :3]
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.25
    assert colourful.mean() > 0.01
    # The data-quality score line is drawn in a colour no other chart uses: it is on the page.
    target = np.array([int(SCORE_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    score_pixels = (np.abs(rgb - target).max(axis=2) < 0.06).sum()
    assert score_pixels > 200
