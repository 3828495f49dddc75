"""The batch's logic as pure, vectorised pandas kernels (no pyspark import anywhere in this package).

Spark reads bronze and silver and writes the Delta tables; everything that decides *which rows*
each table gets is a function here, of pandas frames in and pandas frames out, vectorised over
many keys at once (no Python loop per coin). The same functions run on the driver (a small batch:
its rows collected once as Arrow) and on the executors (grouped by a hash bucket of the key with
``applyInPandas``), and ``coinlake verify`` recomputes with them too.

Frame conventions (every kernel takes and returns frames like this):

* timestamps are tz-naive ``datetime64`` values holding UTC (any unit; Spark's are microseconds);
  dates (``metric_date``) are ``datetime.date`` objects in an object column;
* NULL is ``NaN``/``NaT``/``None``; integer columns that may be NULL use pandas' nullable ``Int64``;
* ``collapsed_observations`` cells are None or a list of dicts ``{"observed_at", "extracted_at",
  "source_file"}`` sorted by ``observed_at``;
* ``row_hash`` is text; the business key is ``(coin_id, vs_currency)`` (``app.tables.SILVER_KEYS``);
* column names and order are those of the DDLs in :mod:`app.tables`.

Modules, each named for what it computes:

* :mod:`.scd2`: the SCD2 plan of tail ∪ batch (collapsed observations, late data, the bound), the
  touched ranges, the after-image, the keys whose history is short;
* :mod:`.scores`: price returns, rolling z-scores of both metrics, the ``crypto_anomalies`` rows;
* :mod:`.candles`: 1h and 1d candles of ``gold_coin_ohlc``;
* :mod:`.metrics`: daily market metrics of ``gold_crypto_metrics``;
* :mod:`.diff`: the insert/update/delete difference a derived table gets;
* :mod:`.batch`: one batch end to end over its observations and working set.
"""
