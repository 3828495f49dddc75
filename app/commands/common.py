"""Helpers shared by the CLI commands: settings from the parsed arguments, logging, Spark."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from app.config import Settings, load_settings
from app.logs import configure_logging
from app.paths import Layout

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Load settings, letting ``--data-dir`` and explicit overrides win; configure logging."""
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    settings = load_settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    return settings


def layout_of(settings: Settings) -> Layout:
    """The storage layout of the settings' data root."""
    return Layout.from_root(settings.data_dir)


def spark_from_settings(settings: Settings, app_name: str = "coinlake") -> SparkSession:
    """Build the session the way every command does."""
    from app.sinks.delta.maintenance import maintenance_conf
    from app.spark import build_spark

    return build_spark(
        app_name=app_name,
        master=settings.spark_master,
        shuffle_partitions=settings.shuffle_partitions,
        ui=settings.spark_ui,
        driver_memory=settings.driver_memory,
        ivy_dir=settings.ivy_dir,
        extra_conf=maintenance_conf(settings),
    )
