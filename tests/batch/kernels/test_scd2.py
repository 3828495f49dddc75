"""The pandas SCD2 kernels: hand-made cases, and equivalence with the Spark plan on random batches."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.batch.kernels.scd2 import (
    DATA_COLUMNS,
    PLAN_COLUMNS,
    SILVER_COLUMNS,
    after_image,
    plan_scd2,
    select_tail,
    short_history_keys,
    touched_ranges,
)

T0 = pd.Timestamp("2026-01-05 12:00:00")
SHOWN = ["coin_id", "valid_from", "valid_to", "current_price", "_origin", "_outcome", "_action"]


def at(minute: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minute)


def _hash(price: float | None) -> str:
    return f"h{price}"  # the real hash is null-safe: a NULL value hashes too


def _obs(*rows: dict[str, Any]) -> pd.DataFrame:
    """Observations: ``coin``, ``minute``, ``price``; optional ``hash``, ``fetched`` (minute), ``file``, ``record_index``."""
    records = []
    for i, row in enumerate(rows):
        t = at(row["minute"])
        rec: dict[str, Any] = dict.fromkeys(DATA_COLUMNS)
        rec.update(
            coin_id=row["coin"],
            vs_currency=row.get("currency", "usd"),
            current_price=row["price"],
            row_hash=row.get("hash", _hash(row["price"])),
            valid_from=t,
            last_updated=t,
            extracted_at=at(row["fetched"]) if "fetched" in row else t,
            source_file=row.get("file", f"f{row['minute']}.json"),
            record_index=row.get("record_index", i),
        )
        records.append(rec)
    frame = pd.DataFrame(records, columns=[*DATA_COLUMNS, "record_index"])
    for col in ("valid_from", "last_updated", "extracted_at"):
        frame[col] = pd.to_datetime(frame[col])
    frame["current_price"] = frame["current_price"].astype(float)
    return frame


def _empty_silver_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in SILVER_COLUMNS})
    for col in ("valid_from", "valid_to", "last_updated", "extracted_at"):
        frame[col] = pd.Series(dtype="datetime64[ns]")
    return frame


def _plan(
    obs: pd.DataFrame, silver: pd.DataFrame | None = None, *, batch_id: int = 0, **kw: Any
) -> pd.DataFrame:
    silver = _empty_silver_frame() if silver is None else silver
    return plan_scd2(obs, select_tail(silver, obs), batch_id=batch_id, **kw)


def _silver(*obs_batches: pd.DataFrame, **kw: Any) -> pd.DataFrame:
    """Silver after planning and merging each batch in turn."""
    silver = _empty_silver_frame()
    for batch_id, obs in enumerate(obs_batches):
        silver = after_image(silver, _plan(obs, silver, batch_id=batch_id, **kw))
    return silver.sort_values(["coin_id", "vs_currency", "valid_from"]).reset_index(drop=True)


def _rows(frame: pd.DataFrame, cols: list[str] = SHOWN) -> list[tuple[Any, ...]]:
    return [tuple(None if pd.isna(v) else v for v in r) for r in frame[cols].itertuples(index=False)]


def _times(cell: list[dict[str, Any]] | None) -> list[pd.Timestamp] | None:
    return None if cell is None else [o["observed_at"] for o in cell]


# --- hand-made cases ------------------------------------------------------------------------------


def test_in_order_new_version_closes_the_current_one():
    silver = _silver(_obs({"coin": "btc", "minute": 0, "price": 1.0}))
    plan = _plan(_obs({"coin": "btc", "minute": 1, "price": 2.0}), silver, batch_id=1)

    assert list(plan.columns) == list(PLAN_COLUMNS)
    assert _rows(plan) == [
        ("btc", at(0), at(1), 1.0, "existing", "kept", "update"),
        ("btc", at(1), None, 2.0, "batch", "kept", "insert"),
    ]
    assert plan["is_current"].tolist() == [False, True]
    assert plan["batch_id"].tolist() == [0, 1]
    assert plan["updated_batch_id"].tolist() == [1, 1]
    assert plan["collapsed_observations"].tolist() == [[], []]
    assert str(plan["batch_id"].dtype) == "Int64" and plan["is_current"].dtype == bool
    assert plan["valid_to"].dtype == plan["valid_from"].dtype


def test_unchanged_observation_collapses_into_its_version():
    plan = _plan(
        _obs(
            {"coin": "btc", "minute": 0, "price": 1.0},
            {"coin": "btc", "minute": 1, "price": 1.0, "fetched": 1.5, "file": "b.json"},
        )
    )
    assert _rows(plan) == [
        ("btc", at(0), None, 1.0, "batch", "kept", "insert"),
        ("btc", at(1), None, 1.0, "batch", "unchanged", "none"),
    ]
    assert plan["collapsed_observations"].tolist() == [
        [{"observed_at": at(1), "extracted_at": at(1.5), "source_file": "b.json"}],
        None,
    ]
    # A later batch with the same values: the version is rewritten with one more observation.
    silver = after_image(_empty_silver_frame(), plan)
    later = _plan(_obs({"coin": "btc", "minute": 2, "price": 1.0}), silver, batch_id=1)
    assert _rows(later) == [
        ("btc", at(0), None, 1.0, "existing", "kept", "update"),
        ("btc", at(1), None, 1.0, "existing", "unchanged", "none"),
        ("btc", at(2), None, 1.0, "batch", "unchanged", "none"),
    ]
    assert _times(later["collapsed_observations"][0]) == [at(1), at(2)]
    assert later["updated_batch_id"].tolist() == [1, 1, 1] and later["batch_id"].tolist() == [0, 1, 1]
    # Nothing new: the version stays as it is.
    again = _plan(_obs({"coin": "btc", "minute": 1, "price": 1.0, "fetched": 1.5, "file": "b.json"}), silver)
    assert again["_action"].tolist() == ["none", "none", "none"]
    assert again["_outcome"].tolist() == ["kept", "unchanged", "duplicate"]


def test_one_observation_wins_per_instant():
    plan = _plan(
        _obs(
            {"coin": "btc", "minute": 0, "price": 3.0, "fetched": 2},
            {"coin": "btc", "minute": 0, "price": 2.0, "fetched": 1},  # earliest fetch wins
            {"coin": "eth", "minute": 0, "price": 5.0, "fetched": 1, "hash": "b"},
            {"coin": "eth", "minute": 0, "price": 6.0, "fetched": 1, "hash": "a"},  # then smallest hash
            {"coin": "sol", "minute": 0, "price": 7.0, "hash": "s", "file": "z.json"},
            {"coin": "sol", "minute": 0, "price": 8.0, "hash": "s", "file": None},  # NULL file last
            {"coin": "sol", "minute": 0, "price": 9.0, "hash": "s", "file": "y.json"},  # then file
            {"coin": "xrp", "minute": 0, "price": 1.0, "record_index": 9},
            {"coin": "xrp", "minute": 0, "price": 2.0, "hash": "h1.0", "record_index": 4},  # then index
        )
    )
    kept = plan[plan["_outcome"] == "kept"]
    assert dict(zip(kept["coin_id"], kept["current_price"], strict=True)) == {
        "btc": 2.0,
        "eth": 6.0,
        "sol": 9.0,
        "xrp": 2.0,
    }
    assert (plan["_outcome"] == "duplicate").sum() == 5
    assert plan.loc[plan["_outcome"] == "duplicate", "_action"].eq("none").all()


def test_a_row_silver_has_wins_over_an_identical_batch_row():
    obs = _obs({"coin": "btc", "minute": 0, "price": 1.0})
    silver = _silver(obs)
    plan = _plan(obs, silver, batch_id=1)
    assert [(r[4], r[5], r[6]) for r in _rows(plan)] == [
        ("existing", "kept", "none"),
        ("batch", "duplicate", "none"),
    ]
    assert plan["updated_batch_id"].tolist() == [0, 1]


def test_a_late_observation_splits_a_collapsed_version():
    silver = _silver(
        _obs({"coin": "btc", "minute": 0, "price": 1.0}, {"coin": "btc", "minute": 2, "price": 1.0})
    )
    assert len(silver) == 1 and _times(silver["collapsed_observations"][0]) == [at(2)]
    plan = _plan(_obs({"coin": "btc", "minute": 1, "price": 2.0}), silver, batch_id=1)
    assert _rows(plan) == [
        ("btc", at(0), at(1), 1.0, "existing", "kept", "update"),
        ("btc", at(1), at(2), 2.0, "batch", "kept", "insert"),
        ("btc", at(2), None, 1.0, "existing", "kept", "insert"),  # back as its own version
    ]
    assert plan["collapsed_observations"].tolist() == [[], [], []]
    assert plan["is_current"].tolist() == [False, False, True]
    assert plan["batch_id"].tolist() == [0, 1, 1]


def test_a_former_version_start_that_collapses_is_deleted():
    silver = _silver(
        _obs({"coin": "btc", "minute": 0, "price": 1.0}),
        _obs({"coin": "btc", "minute": 2, "price": 2.0}),
    )
    plan = _plan(_obs({"coin": "btc", "minute": 1, "price": 2.0}), silver, batch_id=2)
    assert _rows(plan) == [
        ("btc", at(0), at(1), 1.0, "existing", "kept", "update"),
        ("btc", at(1), None, 2.0, "batch", "kept", "insert"),
        ("btc", at(2), None, 2.0, "existing", "unchanged", "delete"),
    ]
    assert _times(plan["collapsed_observations"][1]) == [at(2)]
    after = after_image(silver, plan).sort_values("valid_from")
    assert _rows(after, ["valid_from", "valid_to", "current_price", "updated_batch_id"]) == [
        (at(0), at(1), 1.0, 2),
        (at(1), None, 2.0, 2),
    ]


def test_an_earlier_fetch_replaces_a_version_without_deleting_it():
    silver = _silver(_obs({"coin": "btc", "minute": 0, "price": 1.0, "fetched": 5}))
    plan = _plan(_obs({"coin": "btc", "minute": 0, "price": 2.0, "fetched": 1}), silver, batch_id=1)
    assert [(r[3], r[4], r[5], r[6]) for r in _rows(plan)] == [
        (2.0, "batch", "kept", "insert"),  # the MERGE updates the row at that instant
        (1.0, "existing", "duplicate", "none"),
    ]


def test_max_collapsed_keeps_the_latest_observations():
    obs = _obs(*({"coin": "btc", "minute": m, "price": 1.0} for m in range(6)))
    at_once = _silver(obs, max_collapsed=3)
    one_by_one = _silver(*(obs.iloc[[i]] for i in range(6)), max_collapsed=3)
    backwards = _silver(*(obs.iloc[[i]] for i in reversed(range(6))), max_collapsed=3)
    for silver in (at_once, one_by_one, backwards):
        assert len(silver) == 1
        assert _times(silver["collapsed_observations"][0]) == [at(3), at(4), at(5)]
    assert _times(_plan(obs, max_collapsed=0)["collapsed_observations"][0]) == []
    with pytest.raises(ValueError):
        _plan(obs, max_collapsed=-1)


def test_null_values_and_hashes():
    plan = _plan(
        _obs(
            {"coin": "btc", "minute": 0, "price": None},
            {"coin": "btc", "minute": 1, "price": None},  # NULL price, equal hash: collapsed
            {"coin": "btc", "minute": 2, "price": 1.0},
            {"coin": "eth", "minute": 0, "price": 1.0, "hash": None},
            {"coin": "eth", "minute": 1, "price": 1.0, "hash": None},  # NULL hashes: as Spark, not equal
            {"coin": "sol", "minute": 0, "price": 1.0, "fetched": 0},
            {"coin": "sol", "minute": 0, "price": 2.0, "hash": None, "fetched": 0},  # NULL hash last
        )
    )
    assert _rows(plan) == [
        ("btc", at(0), at(2), None, "batch", "kept", "insert"),
        ("btc", at(1), None, None, "batch", "unchanged", "none"),
        ("btc", at(2), None, 1.0, "batch", "kept", "insert"),
        ("eth", at(0), at(1), 1.0, "batch", "kept", "insert"),
        ("eth", at(1), None, 1.0, "batch", "kept", "insert"),
        ("sol", at(0), None, 1.0, "batch", "kept", "insert"),
        ("sol", at(0), None, 2.0, "batch", "duplicate", "none"),
    ]


def test_a_version_without_a_list_gets_an_empty_one():
    silver = _silver(_obs({"coin": "btc", "minute": 0, "price": 1.0}))
    silver["collapsed_observations"] = None  # written before the column existed
    plan = _plan(_obs({"coin": "btc", "minute": 0, "price": 1.0}), silver, batch_id=1)
    assert plan["_action"].tolist() == ["update", "none"]
    assert plan["collapsed_observations"].tolist() == [[], None]


def test_arrow_list_cells_are_read_and_their_elements_reused():
    silver = _silver(_obs(*({"coin": "btc", "minute": m, "price": 1.0} for m in range(3))), max_collapsed=3)
    held = silver["collapsed_observations"][0]
    silver["collapsed_observations"] = [np.array(held, dtype=object)]  # toPandas with Arrow
    unchanged = _plan(_obs({"coin": "btc", "minute": 1, "price": 1.0}), silver, batch_id=1)
    assert unchanged["_action"].tolist() == ["none", "none", "none", "none"]
    plan = _plan(_obs({"coin": "btc", "minute": 3, "price": 1.0}), silver, batch_id=1, max_collapsed=2)
    cell = plan["collapsed_observations"][0]
    assert isinstance(cell, list) and _times(cell) == [at(2), at(3)]
    assert cell[0] is held[1]  # an element silver held is reused, not rebuilt
    assert plan["_action"].tolist() == ["update", "none", "none", "none"]


def test_select_tail_keeps_the_rows_reaching_the_earliest_observation():
    silver = _silver(
        _obs(*({"coin": c, "minute": m, "price": float(m)} for c in ("btc", "eth") for m in (0, 1, 2)))
    )
    obs = _obs({"coin": "btc", "minute": 3, "price": 5.0}, {"coin": "btc", "minute": 1, "price": 5.0})
    tail = select_tail(silver, obs)
    assert list(tail.columns) == list(SILVER_COLUMNS)
    # valid_to == the earliest observation (minute 1) still reaches it.
    assert _rows(tail, ["coin_id", "valid_from"]) == [("btc", at(0)), ("btc", at(1)), ("btc", at(2))]
    assert select_tail(silver, obs.iloc[:0]).empty


def test_after_image_replaces_deletes_and_keeps_other_keys():
    silver = _silver(
        _obs(
            {"coin": "btc", "minute": 0, "price": 1.0},
            {"coin": "btc", "minute": 2, "price": 2.0},
            {"coin": "eth", "minute": 0, "price": 7.0},
        )
    )
    plan = _plan(_obs({"coin": "btc", "minute": 1, "price": 2.0}), silver, batch_id=1)
    after = after_image(silver, plan)
    assert list(after.columns) == list(silver.columns)
    assert str(after["batch_id"].dtype) == "Int64" and after["is_current"].dtype == bool
    assert sorted(_rows(after, ["coin_id", "valid_from", "valid_to", "current_price", "is_current"])) == [
        ("btc", at(0), at(1), 1.0, False),
        ("btc", at(1), None, 2.0, True),
        ("eth", at(0), None, 7.0, True),
    ]
    assert after_image(silver, plan[plan["_action"] == "none"]).equals(silver)


def test_touched_ranges_reach_back_to_the_version_before_the_batch():
    silver = _silver(
        _obs({"coin": "btc", "minute": 0, "price": 1.0}, {"coin": "eth", "minute": 0, "price": 1.0})
    )
    plan = _plan(
        _obs({"coin": "btc", "minute": 5, "price": 2.0}, {"coin": "btc", "minute": 3, "price": 1.0}),
        silver,
        batch_id=1,
    )
    tail_only = plan_scd2(_obs(), select_tail(silver, silver), batch_id=1)  # existing rows only
    touched = touched_ranges(pd.concat([plan, tail_only], ignore_index=True))
    assert _rows(touched, ["coin_id", "vs_currency", "from_ts", "to_ts"]) == [("btc", "usd", at(0), at(5))]
    assert touched["from_ts"].dtype == plan["valid_from"].dtype
    assert touched_ranges(plan.iloc[:0]).empty


def test_short_history_keys():
    day = pd.Timestamp("2026-01-05")
    before = _silver(
        _obs(
            *(
                {"coin": "btc", "minute": -60 * 24 - m, "price": float(m)} for m in range(3)
            ),  # 3 before the day
            *({"coin": "eth", "minute": -60 * 24 - m, "price": float(m)} for m in range(1)),  # 1 before
            {"coin": "eth", "minute": 0, "price": 9.0},
            {"coin": "sol", "minute": 0, "price": 1.0},  # none before, history starts at the bound
        )
    )
    touched = pd.DataFrame(
        {
            "coin_id": ["btc", "eth", "sol", "xrp"],
            "vs_currency": "usd",
            "from_ts": [at(0), at(0), at(0), at(0)],
            "to_ts": [at(1)] * 4,
        }
    )
    short = short_history_keys(before, touched, versions_needed=3, bound=day)
    assert _rows(short, ["coin_id", "vs_currency", "need_before"]) == [("eth", "usd", day)]
    wider = short_history_keys(before, touched, versions_needed=4, bound=pd.Timestamp("2026-01-05", tz="UTC"))
    assert wider["coin_id"].tolist() == ["btc", "eth"]
    later_bound = short_history_keys(before, touched, versions_needed=3, bound=at(1))
    assert later_bound["coin_id"].tolist() == ["eth", "sol"]


# --- silver is a function of the set of records, in any batching ---------------------------------
# (were Spark tests of the engine v2 plan in tests/sinks/delta/test_scd2.py: same cases, same
# expectations, now on the kernels the handler runs)

IGNORED_BY_BATCHING = ("batch_id", "updated_batch_id", "source_file")


def _content(silver: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Silver's rows without what depends on which batch brought a record, in key order."""
    cols = [c for c in SILVER_COLUMNS if c not in IGNORED_BY_BATCHING]
    ordered = silver.sort_values(["coin_id", "vs_currency", "valid_from"])[cols]

    def norm(value: Any) -> Any:
        if isinstance(value, list | np.ndarray):
            return tuple(tuple(sorted(o.items())) for o in value)
        return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value

    return [tuple(norm(v) for v in row) for row in ordered.itertuples(index=False)]


def _by_name(files: dict[str, pd.DataFrame], batches: list[list[str]], **kw: Any) -> pd.DataFrame:
    return _silver(*(pd.concat([files[n] for n in names], ignore_index=True) for names in batches), **kw)


def _assert_invariants(silver: pd.DataFrame) -> None:
    for _, versions in silver.sort_values("valid_from").groupby(["coin_id", "vs_currency"]):
        assert versions["is_current"].tolist() == [False] * (len(versions) - 1) + [True]
        assert versions["valid_to"].iloc[:-1].tolist() == versions["valid_from"].iloc[1:].tolist()
        assert pd.isna(versions["valid_to"].iloc[-1])


def test_a_late_observation_splits_a_collapsed_version_in_any_batching():
    files = {
        "f1": _obs({"coin": "btc", "minute": 0, "price": 1.0, "file": "f1.json"}),
        "f3": _obs({"coin": "btc", "minute": 2, "price": 1.0, "file": "f3.json"}),  # collapses into f1's
        "f2": _obs({"coin": "btc", "minute": 1, "price": 2.0, "file": "f2.json"}),  # arrives last
    }
    at_once = _by_name(files, [["f1", "f3", "f2"]])
    assert _rows(at_once, ["valid_from", "valid_to", "current_price", "extracted_at"]) == [
        (at(0), at(1), 1.0, at(0)),
        (at(1), at(2), 2.0, at(1)),
        (at(2), None, 1.0, at(2)),
    ]
    assert at_once["collapsed_observations"].tolist() == [[], [], []]
    first = _by_name(files, [["f1", "f3"]])
    assert len(first) == 1 and bool(first["is_current"][0]) and pd.isna(first["valid_to"][0])
    assert first["collapsed_observations"][0] == [
        {"observed_at": at(2), "extracted_at": at(2), "source_file": "f3.json"}
    ]
    for batches in ([["f1", "f3"], ["f2"]], [["f3"], ["f1"], ["f2"]], [["f2"], ["f3"], ["f1"]]):
        incremental = _by_name(files, batches)
        _assert_invariants(incremental)
        assert _content(incremental) == _content(at_once), batches


def test_same_instant_conflicts_resolve_by_the_set_of_records():
    # btc at minute 10: A (= minute 0's values) fetched at 15 and 11, B fetched at 13 -> A wins
    # (fetched 11) and collapses into minute 0; eth at 10: 10.0 fetched at 15, 11.0 at 13 -> 11.0.
    files = {
        "f0": _obs({"coin": "btc", "minute": 0, "price": 5.0}, {"coin": "eth", "minute": 0, "price": 9.0}),
        "fa": _obs(
            {"coin": "btc", "minute": 10, "price": 5.0, "fetched": 15, "file": "fa.json"},
            {"coin": "eth", "minute": 10, "price": 10.0, "fetched": 15, "file": "fa.json"},
        ),
        "fb": _obs(
            {"coin": "btc", "minute": 10, "price": 6.0, "fetched": 13, "file": "fb.json"},
            {"coin": "eth", "minute": 10, "price": 11.0, "fetched": 13, "file": "fb.json"},
        ),
        "fc": _obs({"coin": "btc", "minute": 10, "price": 5.0, "fetched": 11, "file": "fc.json"}),
    }
    at_once = _by_name(files, [sorted(files)])
    assert _rows(at_once, ["coin_id", "valid_from", "current_price", "is_current", "extracted_at"]) == [
        ("btc", at(0), 5.0, True, at(0)),
        ("eth", at(0), 9.0, False, at(0)),
        ("eth", at(10), 11.0, True, at(13)),
    ]
    assert at_once["collapsed_observations"][0] == [
        {"observed_at": at(10), "extracted_at": at(11), "source_file": "fc.json"}
    ]
    for order in (["f0", "fa", "fb", "fc"], ["fc", "fb", "fa", "f0"], ["fa", "f0", "fc", "fb"]):
        incremental = _by_name(files, [[name] for name in order])
        _assert_invariants(incremental)
        assert _content(incremental) == _content(at_once), order


def _flat(n: int) -> dict[str, pd.DataFrame]:
    """``n`` fetches a minute apart of one coin whose values never change while last_updated moves."""
    return {f"f{i}": _obs({"coin": "btc", "minute": i, "price": 1.0}) for i in range(n)}


def test_order_independence_holds_within_the_bound():
    files = _flat(5)  # four collapsed observations; the bound is 4
    files["late"] = _obs({"coin": "btc", "minute": 2.5, "price": 2.0})
    at_once = _by_name(files, [sorted(files)], max_collapsed=4)
    assert _rows(at_once, ["valid_from", "valid_to", "current_price"]) == [
        (at(0), at(2.5), 1.0),
        (at(2.5), at(3), 2.0),
        (at(3), None, 1.0),
    ]
    for order in (
        ["f0", "f1", "f2", "f3", "f4", "late"],  # late after the rest
        ["late", "f4", "f3", "f2", "f1", "f0"],
        ["f3", "f0", "late", "f4", "f1", "f2"],
    ):
        assert _content(_by_name(files, [[n] for n in order], max_collapsed=4)) == _content(at_once), order


def test_a_late_change_beyond_the_bound_resumes_the_old_values_at_the_earliest_kept_observation():
    files = _flat(6)  # collapsed 1..5; the bound keeps 4, 5
    files["late"] = _obs({"coin": "btc", "minute": 2.5, "price": 2.0})
    streamed = _by_name(files, [[f"f{i}" for i in range(6)], ["late"]], max_collapsed=2)
    at_once = _by_name(files, [sorted(files)], max_collapsed=2)

    def versions(silver: pd.DataFrame) -> list[tuple[Any, ...]]:
        cells = silver["collapsed_observations"].tolist()
        return [
            (*row, _times(cell))
            for row, cell in zip(
                _rows(silver, ["valid_from", "valid_to", "current_price"]), cells, strict=True
            )
        ]

    # All at once: 1.0 resumes at the first observation after the late one (minute 3).
    assert versions(at_once) == [
        (at(0), at(2.5), 1.0, [at(1), at(2)]),
        (at(2.5), at(3), 2.0, []),
        (at(3), None, 1.0, [at(4), at(5)]),
    ]
    # The late one arriving after minute 3 was forgotten: 1.0 resumes at the earliest kept one (4).
    assert versions(streamed) == [
        (at(0), at(2.5), 1.0, []),
        (at(2.5), at(4), 2.0, []),
        (at(4), None, 1.0, [at(5)]),
    ]
    # The current values agree.
    now = [s.loc[s["is_current"], ["current_price", "row_hash"]].values.tolist() for s in (streamed, at_once)]
    assert now[0] == now[1]


# --- equivalence with the Spark implementation ----------------------------------------------------

KEYS = [(c, v) for c in ("btc", "eth", "sol") for v in ("usd", "eur")]
PRICES = [1.0, 2.0, None]


def _random_obs(
    rng: np.random.Generator, n: int, first_index: int, keys: list[tuple[str, str]] = KEYS
) -> list[dict[str, Any]]:
    """Observations of a few keys on a small grid of times, so that instants and hashes repeat."""
    rows = []
    for i in range(n):
        coin, currency = keys[int(rng.integers(len(keys)))]
        minute = int(rng.integers(0, 10))
        price = PRICES[int(rng.integers(len(PRICES)))]
        fetched = None if rng.random() < 0.1 else at(minute + int(rng.integers(0, 3)))
        rec: dict[str, Any] = dict.fromkeys(DATA_COLUMNS)
        rec.update(
            coin_id=coin,
            vs_currency=currency,
            current_price=price,
            market_cap_rank=None if price is None else int(price),
            row_hash=None if rng.random() < 0.05 else _hash(price),
            valid_from=at(minute),
            last_updated=at(minute),
            extracted_at=fetched,
            source_file=[f"f{int(rng.integers(2))}.json", None][int(rng.random() < 0.1)],
            record_index=first_index + i,
        )
        rows.append(rec)
    return rows


def _initial_silver() -> list[dict[str, Any]]:
    """Silver before the first batch: an ended version outside every tail, a version without a list."""
    rows = []
    for start, end, price, collapsed in (
        (-20, -10, 1.0, [{"observed_at": at(-15), "extracted_at": None, "source_file": "old.json"}]),
        (-10, None, 2.0, None),
    ):
        rec: dict[str, Any] = dict.fromkeys(SILVER_COLUMNS)
        rec.update(
            coin_id="btc",
            vs_currency="usd",
            current_price=price,
            market_cap_rank=int(price),
            row_hash=_hash(price),
            valid_from=at(start),
            last_updated=at(start),
            extracted_at=at(start),
            source_file="old.json",
            valid_to=None if end is None else at(end),
            is_current=end is None,
            batch_id=0,
            updated_batch_id=0,
            collapsed_observations=collapsed,
        )
        rows.append(rec)
    return rows


def _frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=columns)
    for col in ("valid_from", "valid_to", "last_updated", "extracted_at"):
        if col in frame.columns:
            frame[col] = pd.to_datetime(frame[col])
    for col in ("batch_id", "updated_batch_id", "record_index", "market_cap_rank"):
        if col in frame.columns:
            frame[col] = frame[col].astype("Int64")
    if "is_current" in frame.columns:
        frame["is_current"] = frame["is_current"].astype(bool)
    frame["current_price"] = frame["current_price"].astype(float)
    return frame


def _spark_value(value: Any) -> Any:
    """A Python value for Spark: None for NULL, aware UTC datetimes (no local-zone guessing), tuples for structs."""
    if isinstance(value, list | np.ndarray):
        return [
            tuple(_spark_value(o[f]) for f in ("observed_at", "extracted_at", "source_file")) for o in value
        ]
    if value is None or pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).to_pydatetime().replace(tzinfo=UTC)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _spark_df(spark, records: list[dict[str, Any]], ddl: str, columns: list[str]):
    return spark.createDataFrame([tuple(_spark_value(r.get(c)) for c in columns) for r in records], ddl)


def _canon(value: Any) -> Any:
    """One comparable Python value: naive UTC datetimes, None for NULL, tuples for lists and structs."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, datetime):  # from collect(): naive local time
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, dict):
        return tuple(_canon(value[f]) for f in ("observed_at", "extracted_at", "source_file"))
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(_canon(v) for v in value)
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _pandas_rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    rows = [tuple(_canon(v) for v in r) for r in frame[columns].itertuples(index=False, name=None)]
    return sorted(rows, key=repr)


def _spark_rows(df, columns: list[str]) -> list[tuple[Any, ...]]:
    rows = [tuple(_canon(r[c]) for c in columns) for r in df.select(*columns).collect()]
    return sorted(rows, key=repr)


def test_pandas_kernels_equal_the_spark_implementation(spark):
    """Two random batches of six keys (as many independent cases) through both implementations.

    Silver before them is hand-made rows (an ended version, a version without a list) plus a
    random batch merged by the pandas kernels (lists of collapsed observations, some trimmed by
    ``max_collapsed``). Spark's plans and after-images are checkpointed and everything is
    collected at the end (four collects): each batch's plan, touched ranges, short-history keys and after-image
    must equal the pandas kernels' rows.
    """
    from pyspark.sql import functions as F

    from app.tables import SILVER_DDL
    from tests.reference.scd2_spark import build_scd2_plan, build_touched
    from tests.reference.scd2_spark import select_tail as spark_select_tail
    from tests.reference.working_set_spark import short_history_keys as spark_short_history_keys
    from tests.reference.working_set_spark import with_after_image

    silver_cols, obs_cols = list(SILVER_COLUMNS), [*DATA_COLUMNS, "record_index"]
    schema = spark.createDataFrame([], SILVER_DDL).schema
    obs_ddl = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in schema if f.name in DATA_COLUMNS)
    obs_ddl += ", record_index int"
    outputs = {
        "plan": list(PLAN_COLUMNS),
        "touched": ["coin_id", "vs_currency", "from_ts", "to_ts"],
        "short": ["coin_id", "vs_currency", "need_before"],
        "after": silver_cols,
    }
    bound, max_collapsed = at(2), 2

    rng = np.random.default_rng(2026)
    silver_pd = _frame(_initial_silver(), silver_cols)
    first = _frame(_random_obs(rng, 30, 0, KEYS[1:]), obs_cols)  # btc/usd keeps its NULL list
    plan = plan_scd2(first, select_tail(silver_pd, first), batch_id=0, max_collapsed=max_collapsed)
    silver_pd = after_image(silver_pd, plan)
    silver_sp = _spark_df(spark, silver_pd.to_dict("records"), SILVER_DDL, silver_cols)
    expected: dict[str, list[tuple[Any, ...]]] = {name: [] for name in outputs}
    actual: dict[str, Any] = dict.fromkeys(outputs)
    first_index = len(first)
    for batch_id in (1, 2):
        records = _random_obs(rng, 30, first_index)
        first_index += len(records)
        obs_pd = _frame(records, obs_cols)
        obs_sp = _spark_df(spark, records, obs_ddl, obs_cols)

        plan_pd = plan_scd2(
            obs_pd, select_tail(silver_pd, obs_pd), batch_id=batch_id, max_collapsed=max_collapsed
        )
        touched_pd = touched_ranges(plan_pd)
        pandas_side = {
            "plan": plan_pd,
            "touched": touched_pd,
            "short": short_history_keys(silver_pd, touched_pd, versions_needed=2, bound=bound),
            "after": after_image(silver_pd, plan_pd),
        }
        tail_sp = spark_select_tail(silver_sp, obs_sp)
        plan_sp = build_scd2_plan(obs_sp, tail_sp, batch_id=batch_id, max_collapsed=max_collapsed)
        plan_sp = plan_sp.localCheckpoint()
        touched_sp = build_touched(plan_sp)
        spark_side = {
            "plan": plan_sp,
            "touched": touched_sp,
            "short": spark_short_history_keys(
                silver_sp, touched_sp, versions_needed=2, bound=bound.strftime("%Y-%m-%d %H:%M:%S.%f")
            ),
            "after": with_after_image(silver_sp, plan_sp),
        }
        for name, cols in outputs.items():
            expected[name] += [(batch_id, *row) for row in _pandas_rows(pandas_side[name], cols)]
            tagged = spark_side[name].select(F.lit(batch_id).alias("_batch"), *cols)
            actual[name] = tagged if actual[name] is None else actual[name].unionByName(tagged)
        silver_pd, silver_sp = pandas_side["after"], spark_side["after"].localCheckpoint()

    assert any(len(cell) == max_collapsed for cell in silver_pd["collapsed_observations"])
    for name, cols in outputs.items():
        assert sorted(expected[name], key=repr) == _spark_rows(actual[name], ["_batch", *cols]), name
