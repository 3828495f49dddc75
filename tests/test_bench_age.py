"""The bench's ``age`` section at toy sizes: both bronze sources measured, the figures reported.

Targets are not enforced here (``--smoke``); the listing source's bounded state is checked on
the growth figure, which does not depend on the machine's speed.
"""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main


@pytest.mark.slow
def test_bench_age_measures_both_sources_idle_growth_and_freshness(spark, tmp_path):
    out = tmp_path / "age.json"
    argv = ["--smoke", "--sections", "age", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    assert main(argv) == 0
    age = json.loads(out.read_text())["age"]
    measured = {(r["source"], r["files"]) for r in age["idle"]}
    assert measured == {("files", 0), ("files", 200), ("listing", 0), ("listing", 200)}
    assert all(len(r["trigger_s"]) == 2 and min(r["trigger_s"]) > 0 for r in age["idle"])
    growth = age["growth"]
    # --smoke: 12 one-file batches, 4 before the first size: the file source's log grows per file
    assert growth["files"]["bytes_at_end"] > growth["files"]["bytes_after_warmup"]
    assert (
        len(age["freshness"]["fresh_s"]) == 1
        and min(age["freshness"]["fresh_s"] + age["freshness"]["aged_s"]) > 0
    )
    checks = {c["name"] for c in json.loads(out.read_text())["checks"]}
    assert {
        "age idle listing 200",
        "age ckpt KB/100 listing",
        "age freshness aged/fresh",
    } <= checks


def test_bench_age_refuses_growth_batches_not_above_the_warmup(capsys):
    with pytest.raises(SystemExit):
        main(["--sections", "age", "--age-growth-batches", "10", "--age-growth-warmup", "10"])
