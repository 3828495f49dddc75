"""The insert/update/delete difference a derived table gets, and the rows of its replaced ranges.

The same semantics as :func:`app.sinks.delta.range_merge.stage_replacement` (which ``verify``
uses on Spark frames): a stage recomputes the rows of its replaced ranges from the after-image
(*fresh*) and from the before-image (*existing*), and writes only their difference:

* ``_action = 'insert'``: a key in fresh, not in existing;
* ``_action = 'update'``: a key in both, some compared column differs;
* ``_action = 'delete'``: a key in existing, no longer in fresh.

Keys are matched NULL-safely (a NULL market-cap category is a key like any other, as the MERGE's
``<=>`` matches it) and values are compared NULL-safely: NULL equals NULL, and NaN counts as NULL
(it is how a frame holds one), so a re-run over equal rows stages nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from app.tables import SILVER_KEYS

ACTIONS = ("insert", "update", "delete")


def with_from_ts(
    frame: pd.DataFrame, touched: pd.DataFrame, *, keys: Sequence[str] = SILVER_KEYS
) -> pd.DataFrame:
    """``frame``'s rows of the touched keys, each with its key's ``from_ts`` (an inner equi-join).

    A NULL key matches nothing, as in Spark's ``join(on=[...])``. A ``from_ts`` column ``frame``
    already has is replaced by ``touched``'s.

    Args:
        frame: rows with ``keys``.
        touched: one row per touched key: ``keys`` and ``from_ts``.
        keys: the business key.

    Returns:
        ``frame``'s columns (without its own ``from_ts``) then ``from_ts``, in ``frame``'s row
        order, with a fresh index.
    """
    keys = list(keys)
    ranges = touched.loc[touched[keys].notna().all(axis=1), [*keys, "from_ts"]]
    base = frame.drop(columns="from_ts", errors="ignore")
    base = base.loc[base[keys].notna().all(axis=1)]
    return base.merge(ranges, on=keys, how="inner", sort=False).reset_index(drop=True)


def silver_rows(image: pd.DataFrame, touched: pd.DataFrame) -> pd.DataFrame:
    """Silver rows of the replaced ranges: ``valid_from >= from_ts`` per touched key.

    Args:
        image: the before- or after-image (silver columns).
        touched: the touched keys with ``from_ts``.

    Returns:
        ``image``'s columns, the rows of the touched keys from their ``from_ts`` on.
    """
    joined = with_from_ts(image, touched)
    in_range = (joined["valid_from"] >= joined["from_ts"]).to_numpy(dtype=bool)
    return joined.loc[in_range, list(image.columns)].reset_index(drop=True)


def _nullable(dtype: object) -> object:
    """The dtype that can hold NULL for ``dtype``: numpy ints and bools become pandas' masked ones."""
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return pd.api.types.pandas_dtype(f"{'U' if dtype.kind == 'u' else ''}Int{dtype.itemsize * 8}")
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return pd.BooleanDtype()
    return dtype


def _key_codes(
    fresh: pd.DataFrame, existing: pd.DataFrame, keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """One integer code per row of each frame, equal exactly when the keys match NULL-safely."""
    n_fresh = len(fresh)
    columns = {}
    for k in keys:
        both = pd.concat([fresh[k], existing[k]], ignore_index=True)
        codes, _ = pd.factorize(both, use_na_sentinel=False)
        columns[k] = codes
    if not columns:
        codes = np.zeros(n_fresh + len(existing), dtype=np.int64)
    else:
        codes = pd.DataFrame(columns).groupby(list(keys), sort=False).ngroup().to_numpy(dtype=np.int64)
    return codes[:n_fresh], codes[n_fresh:]


def _same(new: pd.Series, old: pd.Series) -> np.ndarray:
    """NULL-safe equality per row: both NULL (NaN counts as NULL), or both set and equal."""
    new = new.reset_index(drop=True)
    old = old.reset_index(drop=True)
    new_na, old_na = new.isna().to_numpy(), old.isna().to_numpy()
    both = ~new_na & ~old_na
    equal = np.zeros(len(new), dtype=bool)
    if both.any():
        eq = new[both].eq(old[both])
        equal[both] = eq.fillna(False).to_numpy(dtype=bool)
    return (new_na & old_na) | equal


def stage_replacement(
    fresh: pd.DataFrame,
    existing: pd.DataFrame,
    keys: Sequence[str],
    compared: Sequence[str],
) -> pd.DataFrame:
    """The diff that makes ``existing`` equal ``fresh``: ``fresh``'s columns + ``_action``.

    Args:
        fresh: the rows the range must hold (unique on ``keys``).
        existing: the range's current rows (at least ``keys`` and ``compared``; unique on ``keys``).
        keys: the table's key columns (matched NULL-safely).
        compared: the columns whose difference makes an update (compared NULL-safely; NaN is NULL).

    Returns:
        Only rows to insert, update or delete: first the inserts and updates in ``fresh``'s row
        order, then the deletes in ``existing``'s row order, with a fresh index. A delete row
        carries its keys (from ``existing``); its other columns are NULL. Integer and boolean
        columns come back as pandas' nullable dtypes (``Int64``, ``boolean``...) whatever the
        actions, so the schema does not depend on whether a delete is staged; other columns keep
        ``fresh``'s dtype.
    """
    keys, compared = list(keys), list(compared)
    fresh_codes, old_codes = _key_codes(fresh, existing, keys)
    pairs = pd.DataFrame({"_code": fresh_codes, "_fi": np.arange(len(fresh))}).merge(
        pd.DataFrame({"_code": old_codes, "_oi": np.arange(len(existing))}),
        on="_code",
        how="outer",
        sort=False,
    )
    fi = pairs["_fi"].to_numpy(dtype=np.float64)
    oi = pairs["_oi"].to_numpy(dtype=np.float64)
    matched = ~np.isnan(fi) & ~np.isnan(oi)
    same = np.ones(int(matched.sum()), dtype=bool)
    m_fi, m_oi = fi[matched].astype(np.int64), oi[matched].astype(np.int64)
    for c in compared:
        same &= _same(fresh[c].iloc[m_fi], existing[c].iloc[m_oi])

    insert_fi = fi[np.isnan(oi)].astype(np.int64)
    update_fi = m_fi[~same]
    delete_oi = np.sort(oi[np.isnan(fi)].astype(np.int64))
    out_fi = np.concatenate([insert_fi, update_fi])
    actions = np.array(["insert"] * len(insert_fi) + ["update"] * len(update_fi), dtype=object)
    order = np.argsort(out_fi, kind="stable")

    target = {c: _nullable(fresh[c].dtype) for c in fresh.columns}
    upserts = fresh.iloc[out_fi[order]].astype(target).reset_index(drop=True)
    upserts["_action"] = actions[order]
    deletes = fresh.iloc[:0].astype(target).reindex(range(len(delete_oi)))
    for k in keys:
        old_keys = existing[k].iloc[delete_oi].reset_index(drop=True)
        try:
            deletes[k] = old_keys.astype(target[k])
        except (TypeError, ValueError):
            deletes[k] = old_keys
    deletes["_action"] = np.array(["delete"] * len(delete_oi), dtype=object)
    if deletes.empty:
        return upserts
    if upserts.empty:
        return deletes.reset_index(drop=True)
    return pd.concat([upserts, deletes], ignore_index=True)
