"""The table comparison of the reliability tests: exact, except for float summation-order noise."""

from __future__ import annotations

import json

from tests.reliability.harness import diff_snapshots


def _rows(*rows: dict) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def test_float_noise_from_summation_order_is_not_a_difference():
    # 1.6861349565 summed in two orders, rounded to 9 decimals: the two sides of the rounding tie
    local = {"gold": _rows({"day": "d1", "avg": 1.686134956, "n": 10}, {"day": "d2", "avg": 0.5, "n": 3})}
    cluster = {"gold": _rows({"day": "d1", "avg": 1.686134957, "n": 10}, {"day": "d2", "avg": 0.5, "n": 3})}
    assert local != cluster
    assert diff_snapshots(local, cluster) == []


def test_real_differences_are_reported():
    base = {"gold": _rows({"day": "d1", "avg": 1.5, "n": 10})}
    for changed in (
        {"day": "d1", "avg": 1.5, "n": 11},
        {"day": "d1", "avg": 1.5000015, "n": 10},
        {"day": "d9", "avg": 1.5, "n": 10},
    ):
        problems = diff_snapshots(base, {"gold": _rows(changed)})
        assert len(problems) == 1 and problems[0].startswith("gold: expected 1 rows, found 1"), changed
    assert diff_snapshots(base, {"gold": []}) == [
        'gold: expected 1 rows, found 0; missing [\'{"avg": 1.5, "day": "d1", "n": 10}\']; unexpected []'
    ]
