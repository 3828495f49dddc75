"""Shared assertions of the kernel tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assert_close(actual: pd.DataFrame, expected: pd.DataFrame, keys: list[str]) -> None:
    """Same rows and columns: doubles within 1e-9 relative (NULLs in the same places), the rest exact."""
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected)
    actual = actual.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)
    expected = expected.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)
    for column in expected.columns:
        got, want = actual[column], expected[column]
        if pd.api.types.is_float_dtype(want.dtype):
            a, b = got.to_numpy(dtype=float), want.to_numpy(dtype=float)
            assert (np.isnan(a) == np.isnan(b)).all(), f"{column}: NULLs differ"
            assert np.allclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True), f"{column} differs"
        else:
            assert (
                got.astype(object).where(got.notna(), None).tolist()
                == want.astype(object).where(want.notna(), None).tolist()
            ), f"{column} differs"
