"""The silver SCD2 plan as pandas: the tail, the plan, the touched ranges, the after-image.

A port of :mod:`app.sinks.delta.scd2` (``select_tail``, ``build_scd2_plan``, ``build_touched``)
and :mod:`app.sinks.delta.working_set` (``with_after_image``, ``short_history_keys``) with exactly
their semantics (the module docstring of :mod:`app.sinks.delta.scd2` states them):

1. per ``(key, valid_from)`` one observation wins: the earliest ``extracted_at``, then the smallest
   ``row_hash``, then ``source_file`` (NULLs last), then a row silver already had, then the
   smallest ``record_index``; the others are *duplicates*;
2. per key, ordered by ``valid_from``, a winner whose ``row_hash`` equals the previous winner's is
   collapsed into it (*unchanged*; as in Spark, ``=`` is not null-safe there: a NULL hash never
   collapses); a run's first winner is its version, holding the others' ``(observed_at,
   extracted_at, source_file)`` in ``collapsed_observations`` (the latest ``max_collapsed``);
3. ``valid_to`` is the next version's ``valid_from``; the last version is current.

Every step is a sort and shifted comparisons over all keys at once: one ``sort_values`` of tail ∪
batch, then numpy over the sorted rows (no Python loop per key). Only the elements of
``collapsed_observations`` are touched one by one (read when the tail is exploded, built for the
plan's lists, where an element the tail already held is reused as is), O(elements). Frame
conventions: see :mod:`app.batch.kernels`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from app.tables import SILVER_DDL, SILVER_KEYS, ddl_column_names

SILVER_COLUMNS: tuple[str, ...] = ddl_column_names(SILVER_DDL)
COLLAPSED = "collapsed_observations"
# Columns the plan derives rather than takes from an observation.
BOOKKEEPING = ("valid_to", "is_current", "batch_id", "updated_batch_id", COLLAPSED)
DATA_COLUMNS: tuple[str, ...] = tuple(c for c in SILVER_COLUMNS if c not in BOOKKEEPING)
# Collapsed observations kept per version (the latest ones): four hours of one-minute polling.
DEFAULT_MAX_COLLAPSED = 240
# Plan actions that write the row (the rest: ``delete``, ``none``).
WRITTEN = ("insert", "update")
PLAN_COLUMNS: tuple[str, ...] = (*SILVER_COLUMNS, "_origin", "_outcome", "_action")
TOUCHED_COLUMNS: tuple[str, ...] = (*SILVER_KEYS, "from_ts", "to_ts")

_KEYS = list(SILVER_KEYS)
_INSTANT = [*SILVER_KEYS, "valid_from"]
# The fields of one collapsed observation, in the order Spark's struct (and sort_array) has them.
_OBS_FIELDS = ("observed_at", "extracted_at", "source_file")
# Observation columns an element of a tail's list gives when the tail is exploded (its field).
_FROM_ELEMENT = {
    "valid_from": "observed_at",
    "last_updated": "observed_at",
    "extracted_at": "extracted_at",
    "source_file": "source_file",
}


def select_tail(silver: pd.DataFrame, obs: pd.DataFrame) -> pd.DataFrame:
    """The silver rows a batch may change: per observed key, rows whose interval reaches its earliest observation.

    A row is kept when its key has observations and ``coalesce(valid_to, far future) >=`` the
    key's earliest ``valid_from`` (a key whose observations all lack ``valid_from`` keeps none).

    Args:
        silver: silver rows (silver columns; ideally already the working set).
        obs: the batch's valid observations with ``valid_from``.

    Returns:
        Silver rows (silver columns, in ``silver``'s order, a fresh index).
    """
    columns = list(SILVER_COLUMNS)
    if silver.empty or obs.empty:
        return silver.loc[:, columns].iloc[0:0].reset_index(drop=True)
    first = obs.groupby(_KEYS, sort=False)["valid_from"].min().rename("_min_obs").reset_index()
    joined = silver.loc[:, columns].merge(first, on=_KEYS, how="inner")  # keeps silver's order
    min_obs = joined["_min_obs"]
    reach = min_obs.notna() & (joined["valid_to"].isna() | (joined["valid_to"] >= min_obs))
    return joined.loc[reach.to_numpy(bool), columns].reset_index(drop=True)


def plan_scd2(
    obs: pd.DataFrame,
    tail: pd.DataFrame,
    *,
    batch_id: int,
    max_collapsed: int = DEFAULT_MAX_COLLAPSED,
) -> pd.DataFrame:
    """Re-derive the tail of each touched key from the observations of tail ∪ batch.

    The tail's versions are exploded back into observations (the version's own at ``valid_from``
    and each of its ``collapsed_observations``), the batch's are added, one wins per
    ``(key, valid_from)``, and runs of consecutive equal ``row_hash`` collapse into their first
    observation (module docstring), so the result is the one all these observations give at once.

    Args:
        obs: the batch's valid observations: silver data columns (the bookkeeping ones,
            ``valid_to``, ``is_current``, ``batch_id``, ``updated_batch_id`` and
            ``collapsed_observations``, are ignored if present) with ``valid_from`` and
            ``row_hash`` set; may carry ``record_index``.
        tail: :func:`select_tail` of silver before the batch.
        batch_id: the micro-batch id.
        max_collapsed: the most collapsed observations a version keeps, its latest ones.

    Returns:
        One row per observation: silver columns plus ``_origin`` (``existing``/``batch``),
        ``_outcome`` (``kept``/``duplicate``/``unchanged``) and ``_action`` (``insert``/``update``/
        ``delete``/``none``), grouped by key (in order of first appearance) and sorted by
        ``valid_from`` within it, a fresh index. ``batch_id``
        and ``updated_batch_id`` are ``Int64``, ``is_current`` is ``bool``, ``valid_to`` has
        ``valid_from``'s dtype; ``collapsed_observations`` is a list (maybe empty) on kept rows
        and None on the others (an unchanged entry keeps the dict object the tail held). Rows
        with ``_action != 'none'`` are the MERGE source (at most one per ``(key, valid_from)``).

    Raises:
        ValueError: ``max_collapsed`` is negative.
    """
    if max_collapsed < 0:
        raise ValueError(f"max_collapsed must be at least 0, got {max_collapsed}")
    combined, old = _observations(obs, tail, batch_id)
    n = len(combined)
    if n == 0:
        return _empty_plan(combined)

    # Step 1: one sort puts each instant's winner first; ``perm`` holds positions of ``combined``.
    perm, key = _instant_order(combined)
    valid_from = combined["valid_from"].take(perm).reset_index(drop=True)
    new_key = np.ones(n, dtype=bool)
    new_key[1:] = key[1:] != key[:-1]
    is_winner = new_key | ~_same_as_previous(valid_from)
    winners = np.flatnonzero(is_winner)
    instant = np.cumsum(is_winner) - 1  # the instant (= its winner's rank among winners) of each row

    # Step 2: runs of equal hashes among the winners of a key (``=`` as in Spark: NULL never
    # equals); a run's first winner is its version.
    hashes = combined["row_hash"].to_numpy(dtype=object, na_value=None)[perm[winners]]
    hash_set = combined["row_hash"].notna().to_numpy()[perm[winners]]
    collapsed_w = np.zeros(len(winners), dtype=bool)
    collapsed_w[1:] = ~new_key[winners][1:] & (hashes[1:] == hashes[:-1]) & hash_set[1:] & hash_set[:-1]
    kept_w = ~collapsed_w
    kept = winners[kept_w]
    run = np.cumsum(kept_w) - 1  # per winner, its run (= the rank of its version among versions)

    # valid_to: the next version's valid_from within the key.
    valid_to = pd.Series(pd.NaT, index=valid_from.index, dtype=valid_from.dtype)
    closed = np.flatnonzero(key[kept][1:] == key[kept][:-1])
    valid_to.iloc[kept[closed]] = valid_from.to_numpy()[kept[closed + 1]]

    # collapsed_observations: per run, the latest max_collapsed of its collapsed winners.
    collapsed_run = run[collapsed_w]
    per_run = np.bincount(collapsed_run, minlength=len(kept))
    from_end = per_run[collapsed_run] - (np.arange(len(collapsed_run)) - _starts(per_run)[collapsed_run])
    keep = from_end <= max_collapsed
    entries = _Entries(
        source=perm[winners[collapsed_w][keep]],
        run=collapsed_run[keep],
        counts=np.bincount(collapsed_run[keep], minlength=len(kept)),
    )
    owners = perm[kept]
    cells = np.full(n, None, dtype=object)
    cells[kept] = _lists(combined, old, entries)

    # Step 3: actions. A kept former version is updated when valid_to or its list changed.
    is_kept = np.zeros(n, dtype=bool)
    is_kept[kept] = True
    was_version = perm < old.n_versions
    changed = ~_null_safe_eq(valid_to, combined["_old_valid_to"].take(perm))
    changed[kept] |= _lists_changed(combined, old, entries, owners)
    action = np.select(
        [is_kept & ~was_version, is_kept & changed, is_kept, was_version & ~kept_w[instant]],
        ["insert", "update", "none", "delete"],
        default="none",
    )
    updated = combined["updated_batch_id"].take(perm).reset_index(drop=True)
    updated[np.isin(action, WRITTEN)] = batch_id
    out = combined.take(perm)
    out.index = pd.RangeIndex(n)
    out["valid_to"] = valid_to
    out["is_current"] = is_kept & valid_to.isna().to_numpy()
    out["updated_batch_id"] = updated
    out[COLLAPSED] = cells
    out["_outcome"] = np.where(is_kept, "kept", np.where(is_winner, "unchanged", "duplicate"))
    out["_action"] = action
    return out.loc[:, list(PLAN_COLUMNS)]


def touched_ranges(plan: pd.DataFrame) -> pd.DataFrame:
    """The touched set from a plan: ``coin_id, vs_currency, from_ts, to_ts``.

    Args:
        plan: :func:`plan_scd2` rows.

    Returns:
        One row per key with at least one batch row: ``from_ts`` the earliest ``valid_from`` of
        tail ∪ batch, ``to_ts`` the batch's latest ``valid_from``; sorted by key.
    """
    is_batch = plan["_origin"] == "batch"
    frame = pd.DataFrame(
        {
            "coin_id": plan["coin_id"],
            "vs_currency": plan["vs_currency"],
            "from_ts": plan["valid_from"],
            "to_ts": plan["valid_from"].where(is_batch),
            "_has_batch": is_batch,
        }
    )
    grouped = frame.groupby(_KEYS, sort=True, dropna=False).agg(
        from_ts=("from_ts", "min"), to_ts=("to_ts", "max"), _has_batch=("_has_batch", "any")
    )
    out = grouped.loc[grouped["_has_batch"].to_numpy(bool)].reset_index()
    return out.loc[:, list(TOUCHED_COLUMNS)]


def after_image(before: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """The working set as silver holds it after the plan: inserts and updates replace, deletes remove.

    Args:
        before: the working set before the batch (silver columns).
        plan: :func:`plan_scd2` rows.

    Returns:
        ``before``'s columns: its rows minus the ``(key, valid_from)`` of every plan row whose
        ``_action`` is not ``none``, then the inserted and updated rows; a fresh index.
    """
    columns = list(before.columns)
    changes = plan.loc[(plan["_action"] != "none").to_numpy(bool)]
    replaced = changes.loc[:, _INSTANT].dropna().drop_duplicates()  # a NULL never matches in a join
    remaining = before
    if len(replaced) and len(before):
        hit = before.loc[:, _INSTANT].merge(replaced.assign(_hit=True), on=_INSTANT, how="left")["_hit"]
        remaining = before.loc[hit.isna().to_numpy()]
    written = changes.loc[changes["_action"].isin(WRITTEN).to_numpy(bool), columns]
    return _bookkeeping_dtypes(_stack([remaining, written]))


def short_history_keys(
    before: pd.DataFrame, touched: pd.DataFrame, *, versions_needed: int, bound: pd.Timestamp
) -> pd.DataFrame:
    """Touched keys whose working set lacks versions the z-scores need: ``keys + need_before``.

    A key needs ``versions_needed`` versions before its first touched day (``need_before``, the
    UTC day start of ``from_ts``). When the working set holds fewer, its history is still complete
    if its earliest row starts at or after ``bound``; a touched key without any row is not listed.

    Args:
        before: the working set before the batch (silver columns; ``valid_from`` is read).
        touched: :func:`touched_ranges` rows.
        versions_needed: ``W + 1``.
        bound: the working set's bound (tz-naive UTC; an aware one is converted).

    Returns:
        ``coin_id, vs_currency, need_before``, one row per key to read further back, sorted.
    """
    limit = pd.Timestamp(bound)
    if limit.tzinfo is not None:
        limit = limit.tz_convert("UTC").tz_localize(None)
    wanted = touched.loc[:, _KEYS].assign(need_before=touched["from_ts"].dt.floor("D"))
    wanted = wanted.loc[wanted[_KEYS].notna().all(axis=1).to_numpy()]
    joined = before.loc[:, [*_KEYS, "valid_from"]].merge(wanted, on=_KEYS, how="inner")
    joined["_older"] = (joined["valid_from"] < joined["need_before"]).to_numpy(bool)
    stats = joined.groupby([*_KEYS, "need_before"], sort=True, dropna=False).agg(
        _n=("_older", "sum"), _first=("valid_from", "min")
    )
    short = (stats["_n"] < versions_needed) & (stats["_first"] < limit)
    out = stats.loc[short.to_numpy(bool)].reset_index()
    return out.loc[:, [*_KEYS, "need_before"]]


# --- internals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OldLists:
    """The tail's ``collapsed_observations``, flattened.

    Attributes:
        n_versions: rows of the tail (positions below it in the combined frame are its versions).
        flat: every element of every list, in order (an object array).
        starts: per version, the position in ``flat`` of its list's first element.
        sizes: per version, the length of its list (0 for NULL).
        null: per version, whether its list was NULL.
        fields: ``observed_at``, ``extracted_at``, ``source_file`` per element of ``flat``.
    """

    n_versions: int
    flat: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    null: np.ndarray
    fields: pd.DataFrame


@dataclass(frozen=True)
class _Entries:
    """The collapsed observations the plan's versions keep, in version order.

    Attributes:
        source: per entry, its row in the combined frame (a collapsed winner).
        run: per entry, the rank of its version among the plan's versions.
        counts: per version, how many entries it keeps.
    """

    source: np.ndarray
    run: np.ndarray
    counts: np.ndarray

    @property
    def pos(self) -> np.ndarray:
        """Per entry, its position in its version's list."""
        return np.arange(len(self.source)) - _starts(self.counts)[self.run]


def _observations(obs: pd.DataFrame, tail: pd.DataFrame, batch_id: int) -> tuple[pd.DataFrame, _OldLists]:
    """Tail versions, their exploded collapsed observations and the batch's, as one frame.

    Returns:
        ``(combined, old)``: ``combined`` holds the data columns and ``_old_valid_to``,
        ``batch_id``, ``updated_batch_id``, ``_origin``, ``_origin_rank`` and ``_record_index``,
        with a range index: the tail's versions (in ``tail``'s order), then every element of
        their lists (in ``old.flat``'s order), then the batch's observations.
    """
    data = list(DATA_COLUMNS)
    n_tail, n_obs = len(tail), len(obs)
    cells = [_as_list(x) for x in tail[COLLAPSED].tolist()] if n_tail else []
    sizes = np.fromiter((0 if x is None else len(x) for x in cells), dtype=np.int64, count=n_tail)
    flat = _object_array(list(itertools.chain.from_iterable(x for x in cells if x)))
    owner = np.repeat(np.arange(n_tail), sizes)
    fields = pd.DataFrame({f: _field(flat, f) for f in _OBS_FIELDS})
    null = np.fromiter((x is None for x in cells), dtype=bool, count=n_tail)
    old = _OldLists(n_tail, flat, _starts(sizes), sizes, null, fields)

    n_exp = len(owner)
    columns: dict[str, Any] = {}
    for col in data:
        exploded = fields[_FROM_ELEMENT[col]] if col in _FROM_ELEMENT else tail[col].take(owner)
        columns[col] = _concat([tail[col], exploded, obs[col]])
    columns["_old_valid_to"] = _concat([tail["valid_to"], _no_times(n_exp, tail), _no_times(n_obs, obs)])
    tail_ids = [pd.Series(pd.array(tail[c], dtype="Int64")) for c in ("batch_id", "updated_batch_id")]
    batch = pd.Series(_ids(batch_id, n_exp + n_obs))
    columns["batch_id"] = _concat([tail_ids[0], batch])
    columns["updated_batch_id"] = _concat([tail_ids[1], batch])
    columns["_origin"] = np.repeat(np.array(["existing", "batch"], dtype=object), [n_tail + n_exp, n_obs])
    columns["_origin_rank"] = np.repeat(np.array([0, 1], dtype=np.int8), [n_tail + n_exp, n_obs])
    record_index = obs["record_index"] if "record_index" in obs.columns else pd.Series(_ids(None, n_obs))
    columns["_record_index"] = _concat(
        [pd.Series(_ids(None, n_tail + n_exp)), pd.Series(pd.array(record_index, dtype="Int64"))]
    )
    return pd.DataFrame(columns), old


def _instant_order(combined: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The order that puts each ``(key, valid_from)``'s winner first, and the sorted key codes.

    Per key by ``valid_from`` (NULL first, as Spark's ascending order), then the winner's order:
    ``extracted_at``, ``row_hash``, ``source_file`` (NULLs last), a tail row before a batch row,
    ``record_index`` (NULL last), then the combined frame's order.

    Returns:
        ``(perm, key)``: positions of ``combined`` in that order, and each one's key code.
    """
    codes = combined.groupby(_KEYS, sort=False, dropna=False).ngroup().to_numpy()
    narrow = pd.DataFrame(
        {
            "_key": codes,
            "_vf_set": combined["valid_from"].notna().to_numpy(),
            "valid_from": combined["valid_from"],
            "extracted_at": combined["extracted_at"],
            "row_hash": combined["row_hash"],
            "source_file": combined["source_file"],
            "_origin_rank": combined["_origin_rank"],
            "_record_index": combined["_record_index"],
            "_seq": np.arange(len(combined)),
        }
    )
    perm = narrow.sort_values(list(narrow.columns), na_position="last").index.to_numpy()
    return perm, codes[perm]


def _lists(combined: pd.DataFrame, old: _OldLists, entries: _Entries) -> np.ndarray:
    """Per version, its ``collapsed_observations`` list (an object array of lists).

    An entry that is an element of a tail's list is that element (the same dict); the others are
    built from the winner's ``valid_from``, ``extracted_at`` and ``source_file``.
    """
    n_entries = len(entries.source)
    flat_index = entries.source - old.n_versions
    from_old = (flat_index >= 0) & (flat_index < len(old.flat))
    records = np.empty(n_entries, dtype=object)
    reused = np.zeros(n_entries, dtype=bool)
    if from_old.any():
        candidates = old.flat[flat_index[from_old]]
        is_dict = np.fromiter((type(e) is dict for e in candidates), dtype=bool, count=len(candidates))
        reused[np.flatnonzero(from_old)[is_dict]] = True
        records[reused] = candidates[is_dict]
    fresh = entries.source[~reused]
    if len(fresh):
        columns = [
            _python_values(combined[c].take(fresh)) for c in ("valid_from", "extracted_at", "source_file")
        ]
        built = [dict(zip(_OBS_FIELDS, values, strict=True)) for values in zip(*columns, strict=True)]
        records[~reused] = _object_array(built)
    flat = records.tolist()
    bounds = np.concatenate(([0], np.cumsum(entries.counts))).tolist()
    return _object_array([flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def _lists_changed(
    combined: pd.DataFrame, old: _OldLists, entries: _Entries, owners: np.ndarray
) -> np.ndarray:
    """Per version of the plan, whether its list differs from the one silver had (null-safe).

    Args:
        combined: the combined frame.
        old: the tail's lists.
        entries: the plan's entries.
        owners: per version of the plan, its row in ``combined``.

    Returns:
        A bool per version; a new version (not a former one) counts as unchanged here.
    """
    former = owners < old.n_versions
    if not former.any():
        return former
    index = np.where(former, owners, 0)
    differs = former & (old.null[index] | (old.sizes[index] != entries.counts))
    same_size = (former & ~differs)[entries.run]  # per entry: compare it with the old element
    if same_size.any():
        run = entries.run[same_size]
        old_at = old.starts[owners[run]] + entries.pos[same_size]
        source = entries.source[same_size]
        mismatch = np.zeros(len(run), dtype=bool)
        for column, field in zip(("valid_from", "extracted_at", "source_file"), _OBS_FIELDS, strict=True):
            mismatch |= ~_null_safe_eq(combined[column].take(source), old.fields[field].take(old_at))
        differs[run[mismatch]] = True
    return differs


def _concat(parts: list[pd.Series]) -> pd.Series:
    """Series one after the other (a fresh index); empty ones do not take part in the dtype."""
    non_empty = [p for p in parts if len(p)] or parts[-1:]
    if len(non_empty) == 1:
        return non_empty[0].reset_index(drop=True)
    return pd.concat([p.reset_index(drop=True) for p in non_empty], ignore_index=True)


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames with the same columns one after the other (a fresh index), column by column.

    ``pd.concat`` of whole frames scans object blocks value by value when dtypes differ between
    the frames (to find all-NULL ones); per column it does not. Empty frames do not take part in
    the dtypes unless all are empty.
    """
    parts = [f for f in frames if len(f)] or frames[-1:]
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    columns = list(parts[0].columns)
    return pd.DataFrame({c: _concat([f[c] for f in parts]) for c in columns}, columns=columns)


def _python_values(values: pd.Series) -> list[Any]:
    """Values as Python objects: ``pd.Timestamp`` for timestamps, None for NULL."""
    as_objects = values.astype(object)
    return as_objects.where(values.notna().to_numpy(), None).tolist()


def _field(flat: np.ndarray, name: str) -> pd.Series:
    """One field of every element of exploded ``collapsed_observations`` cells."""
    values = [None if e is None else e[name] for e in flat.tolist()]
    if name == "source_file":
        return pd.Series(values, dtype=object)
    return pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), dtype="datetime64[ns]")


def _as_list(cell: Any) -> list[Any] | None:
    """A ``collapsed_observations`` cell as a list (None for NULL)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    return list(cell)


def _object_array(items: list[Any]) -> np.ndarray:
    """A 1-d object array holding ``items`` (lists stay list cells, not a 2-d array)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _same_as_previous(values: pd.Series) -> np.ndarray:
    """Per row, whether it equals the previous row, null-safe (the first row: False)."""
    out = np.zeros(len(values), dtype=bool)
    if len(values) > 1:
        out[1:] = _null_safe_eq(values.iloc[1:], values.iloc[:-1])
    return out


def _null_safe_eq(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Elementwise ``a <=> b`` (Spark's ``eqNullSafe``) of two series of the same length."""
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    equal = a.eq(b).fillna(False).to_numpy(dtype=bool)
    return (equal & ~a_na & ~b_na) | (a_na & b_na)


def _starts(counts: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive groups of the given sizes (``[0, c0, c0 + c1, ...]``)."""
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def _ids(value: int | None, n: int) -> pd.arrays.IntegerArray:
    """``n`` copies of a batch id as ``Int64`` (or ``n`` NULLs when ``value`` is None)."""
    if value is None:
        return pd.array([pd.NA] * n, dtype="Int64")
    return pd.array(np.full(n, value, dtype=np.int64), dtype="Int64")


def _no_times(n: int, like: pd.DataFrame) -> pd.Series:
    """``n`` NULL timestamps with the dtype of ``like``'s ``valid_from`` (if it is datetime64)."""
    dtype = like["valid_from"].dtype
    if not pd.api.types.is_datetime64_dtype(dtype):
        dtype = np.dtype("datetime64[ns]")
    return pd.Series(pd.NaT, index=pd.RangeIndex(n), dtype=dtype)


def _bookkeeping_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The SCD2 bookkeeping columns with the kernel dtypes: Int64 ids, bool ``is_current``."""
    out = frame
    for col in ("batch_id", "updated_batch_id"):
        if col in out.columns and out[col].dtype != "Int64":
            out = out.assign(**{col: out[col].astype("Int64")})
    if "is_current" in out.columns and out["is_current"].dtype != bool:
        flag = out["is_current"]
        out = out.assign(is_current=flag.astype(bool) if flag.notna().all() else flag.astype("boolean"))
    return out


def _empty_plan(combined: pd.DataFrame) -> pd.DataFrame:
    """The plan of no observations: its columns, no rows."""
    out = combined.assign(
        valid_to=combined["_old_valid_to"],
        is_current=np.zeros(0, dtype=bool),
        _outcome=pd.Series(dtype=object),
        _action=pd.Series(dtype=object),
    )
    out[COLLAPSED] = pd.Series(dtype=object)
    return out.loc[:, list(PLAN_COLUMNS)].reset_index(drop=True)
