"""Property-based: hostile CoinGecko pages never stop the stream or split the two stores (issue 19).

Pages are generated from the /coins/markets record schema with hostile values in any field
(integers beyond 64 bits, ±inf, NaN, -0.0, 1e308, 5e-324, unicode with quotes and NUL, nested
objects and arrays, missing, extra and null keys, years 1 and 9999, dates with offsets). Each page
is one batch of the real handler (parse, expectations, silver, anomalies, gold, warehouse
emulator), all batches on one data root. Invariants: the batch never raises; records_read = new +
unchanged + duplicates + quarantined; every quarantined row has a reason; no NaN/inf z-score or
silver number; the warehouse equals Delta in every mirrored table (NULL keys included).

Small for CI (a few examples, no deadline); failures found are kept as ``@example`` regressions.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from app.batch.handler import BatchHandler
from app.config import load_settings
from app.paths import Layout
from app.sinks.warehouse.connector import emulator_connector
from app.sinks.warehouse.sql import TARGETS, prepare_frame
from app.sinks.warehouse.stage import to_pandas
from app.sources.bronze import RAW_RECORD_FIELDS, read_bronze_files
from app.stream import default_stages
from tests.helpers import T0, coin_record, iso, minutes, write_raw_bronze

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Arrow output")]

MIRRORED = ("silver_crypto_clean", "crypto_anomalies", "gold_crypto_metrics", "gold_coin_ohlc")
SPECIAL_FLOATS = [float("inf"), float("-inf"), float("nan"), -0.0, 0.0, 1e308, -1e308, 5e-324]
HOSTILE_TIMES = [
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1677-09-21T00:00:00Z",
    "2262-04-12T00:00:00Z",
    iso(T0).replace("Z", "+05:30"),
    iso(T0).replace("Z", "-14:00"),
    "2026-13-45T99:99:99Z",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**64 + 1, -(2**63) - 1, 3 * 10**9, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_FLOATS),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(['"quoted"', "a\x00b", "'", "\\", "NaN", "Infinity", "-0", "1e309", "x" * 1200]),
    st.sampled_from(HOSTILE_TIMES),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=3,
)


@st.composite
def hostile_record(draw: Any, index: int) -> dict[str, Any]:
    """A valid record (so the batch reaches every stage) with a few fields made hostile."""
    rec = coin_record(f"coin-{index % 3}", 1.0 + index, T0 - minutes(index))
    for field in draw(st.lists(st.sampled_from(RAW_RECORD_FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            rec[field] = draw(values)
        else:
            rec.pop(field, None)  # a missing key
    if draw(st.booleans()):
        rec[draw(st.text(max_size=5))] = draw(values)  # an extra key
    return rec


@st.composite
def hostile_page(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(min_value=1, max_value=4))
    return [draw(hostile_record(i)) for i in range(n)]


def _page_text(records: list[dict[str, Any]]) -> str:
    envelope = {
        "source": "coingecko",
        "endpoint": "/coins/markets",
        "request": {"vs_currency": "usd", "page": 1},
        "fetched_at": iso(T0),
        "http_status": 200,
        "data": records,
    }
    return json.dumps(envelope, allow_nan=True)


@pytest.fixture(scope="module")
def lake(spark):
    root = tempfile.mkdtemp(prefix="coinlake-hostile-")
    layout = Layout.from_root(root)
    settings = load_settings(
        data_dir=root, warehouse="emulator", zscore_window=4, zscore_min_periods=2, optimize_every_batches=0
    )
    handler = BatchHandler(
        layout=layout, settings=settings, app_id="hostile", stages=default_stages(settings)
    )
    state = {"spark": spark, "layout": layout, "handler": handler, "batch": 0}
    yield state
    shutil.rmtree(root, ignore_errors=True)


def _normalized(df: pd.DataFrame, target) -> list[tuple[Any, ...]]:
    out, _ = prepare_frame(df, target.columns, target.key, nullable_key=target.nullable_key)
    out = out.astype(object).where(out.notna(), None)
    return sorted((tuple(r) for r in out.itertuples(index=False)), key=repr)


def _check_invariants(state: dict[str, Any], meta) -> None:
    spark, layout = state["spark"], state["layout"]
    assert meta.status == "ok"
    assert meta.records_read == meta.new_versions + meta.unchanged + meta.duplicates + meta.quarantined
    quarantine = spark.read.format("delta").load(layout.table("bronze_quarantine"))
    assert quarantine.filter((F.size("errors") == 0) | (F.size("failed_rules") == 0)).count() == 0
    silver = spark.read.format("delta").load(layout.table("silver_crypto_clean"))
    doubles = [f.name for f in silver.schema.fields if f.dataType.typeName() == "double"]
    not_finite = F.lit(False)
    for name in doubles:
        not_finite = not_finite | F.isnan(name) | (F.abs(F.col(name)) == float("inf"))
    assert silver.filter(not_finite).count() == 0
    for row in spark.read.format("delta").load(layout.table("crypto_anomalies")).select("z_score").collect():
        assert row["z_score"] is not None and math.isfinite(row["z_score"])
    loader = emulator_connector(layout.warehouse_dir).loader()
    for target in TARGETS:
        if target.delta_name not in MIRRORED:
            continue
        delta = to_pandas(spark.read.format("delta").load(layout.table(target.delta_name)))
        cols, rows = loader.query(f'SELECT * FROM "{target.name}"')
        warehouse = pd.DataFrame(rows, columns=cols)
        assert len(warehouse) == len(delta), target.name
        assert _normalized(warehouse, target) == _normalized(delta, target), target.name


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(page=hostile_page())
@example(
    page=[
        coin_record("rank", 1.0, T0, market_cap_rank=3e9, ath_date="0001-01-01T00:00:00Z"),
        coin_record("nan", 1.0, T0, market_cap_rank="NaN", high_24h=float("inf"), atl=-0.0),
        coin_record("nocap", 2.0, T0, market_cap=None, name={"nested": ["x"]}),
        coin_record("huge", 1.0, T0, current_price=1e308, low_24h=5e-324, total_volume=10**400),
    ]
)
def test_hostile_page_never_stops_the_stream_nor_splits_the_stores(lake, page):
    layout, handler = lake["layout"], lake["handler"]
    batch_id = lake["batch"]
    lake["batch"] += 1
    path = write_raw_bronze(layout.bronze_root, T0, f"hostile-{batch_id:04d}.json", _page_text(page))
    meta = handler.process(read_bronze_files(lake["spark"], [path]), batch_id)
    _check_invariants(lake, meta)
