"""The storage layout under one data root (ARCHITECTURE.md, "Storage layout").

Spark takes the root as given (``./data``, ``dbfs:/...``, a volume path). Plain Python file I/O
(the ingester, the run log) goes through :func:`local_path`, which maps ``dbfs:/x`` to the
``/dbfs/x`` FUSE mount that Databricks clusters provide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from app.tables import table_spec

BRONZE_DATASET = "crypto/coins_markets"
STREAM_QUERY_NAME = "bronze_to_silver"


def local_path(path: str) -> str:
    """A path usable by Python's ``open``: ``dbfs:/x`` becomes ``/dbfs/x``; others are unchanged."""
    if path.startswith("dbfs:/"):
        return "/dbfs/" + path[len("dbfs:/") :].lstrip("/")
    return path


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


@dataclass(frozen=True)
class Layout:
    """Every path coinlake reads or writes, derived from the data root."""

    root: str

    @classmethod
    def from_root(cls, root: str) -> Layout:
        """Normalise a local root to an absolute path; leave URIs (``dbfs:/``, ``s3://``) alone."""
        if "://" in root or root.startswith("dbfs:/"):
            return cls(root.rstrip("/"))
        return cls(os.path.abspath(root))

    @property
    def bronze_root(self) -> str:
        """Folder holding the ``dt=YYYY-MM-DD`` partitions of raw /coins/markets pages."""
        return _join(self.root, "bronze", BRONZE_DATASET)

    def bronze_day(self, day: str) -> str:
        """Folder of one UTC day (``day`` as ``YYYY-MM-DD``)."""
        return _join(self.bronze_root, f"dt={day}")

    def table(self, name: str) -> str:
        """Path of a Delta table by its name."""
        return _join(self.root, "tables", table_spec(name).name)

    def checkpoint(self, query_name: str = STREAM_QUERY_NAME) -> str:
        """Structured Streaming checkpoint of a query."""
        return _join(self.root, "checkpoints", query_name)

    @property
    def warehouse_dir(self) -> str:
        """Files of the embedded Snowflake emulator."""
        return _join(self.root, "warehouse")

    @property
    def logs_dir(self) -> str:
        """Run logs (ingest cycles as JSON lines)."""
        return _join(self.root, "logs")

    @property
    def reports_dir(self) -> str:
        """Generated HTML reports."""
        return _join(self.root, "reports")
