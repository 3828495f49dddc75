"""coinlake: CoinGecko market data into a Delta Lake lakehouse and Snowflake, exactly once.

Importing this package has no side effects: no SparkSession, no HTTP, no file or env reads.
"""

from __future__ import annotations

__version__ = "0.1.0"
