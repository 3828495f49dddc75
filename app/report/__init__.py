"""``coinlake report``: one self-contained HTML page (inline CSS and PNG charts, no CDN)."""

from __future__ import annotations

from app.report.html import build_report, default_report_path, render_html

__all__ = ["build_report", "default_report_path", "render_html"]
