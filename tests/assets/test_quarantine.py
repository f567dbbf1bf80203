"""Quarantine: each planted defect ends in the quarantine with the right asset, reason and line,
and for every asset rows in = rows out + rows quarantined. `python -m pytest tests/assets/test_quarantine.py`"""

import json

import polars as pl
import pytest

from assets import prepare
from assets import quarantine as q
from assets.residuals import ResidualConfig
from assets.storage import Storage
from tests.fixtures.defects import plant
from tests.fixtures.tiny_mimic import write_tiny


def test_sieve_first_rule_wins_and_accounts():
    df = q.with_provenance(pl.LazyFrame({"x": [1, -1, None, 5]}), "f.csv").collect()
    s = q.Sieve(df, "a")
    s.drop(pl.col("x").is_null(), "null_x", "x is empty")
    s.drop(pl.col("x") < 0, "negative", pl.format("x {} < 0", pl.col("x")))
    s.drop(pl.col("x") < 0, "never", "already removed by the rule before")
    assert s.counts(s.df.height) == {"rows_in": 4, "rows_out": 2, "rows_quarantined": 2}
    qt = s.quarantine
    assert qt["reason"].to_list() == ["null_x", "negative"]
    assert qt["row"].to_list() == [4, 3]  # header is line 1: the 3rd data row is line 4
    assert qt["detail"].to_list() == ["x is empty", "x -1 < 0"]
    assert json.loads(qt["original"][1]) == {"x": -1}


def test_sieve_refuses_lost_rows():
    s = q.Sieve(q.with_provenance(pl.LazyFrame({"x": [1, 2]}), "f").collect(), "a")
    with pytest.raises(AssertionError):
        s.counts(1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    t = write_tiny(root)
    expected, group = plant(t)
    prepared, res = Storage(str(root / "prep")), Storage(str(root / "res"))
    _, c_img = prepare.run_ingest_images(Storage(str(t.mimic_root)), prepared)
    _, c_q = prepare.run_ingest_questions(Storage(str(t.diffvqa_root)), prepared, ["difference"])
    pairs, c_p = prepare.run_pairs(prepared, Storage(str(t.diffvqa_root)))
    table, _ = prepare.collect_quarantine(prepared)
    results, manifest = prepare.run_residuals(prepared, res, ResidualConfig(image_size=32, batch_size=4), [group])
    return expected, table, {"mimic_images": c_img, "diffvqa_questions": c_q, "study_pairs": c_p}, pairs, results[0]


def test_every_planted_defect_is_quarantined_with_its_reason_and_line(planted):
    expected, table, _, _, _ = planted
    got = {(r["asset"], r["reason"], r["source"].rsplit("/", 1)[-1], r["row"]) for r in table.iter_rows(named=True)}
    for e in expected:
        if e.asset != "residual_images":
            assert (e.asset, e.reason, e.source, e.row) in got, e
    # nothing else was dropped: one quarantine row per planted table defect
    assert table.height == sum(e.asset != "residual_images" for e in expected)


def test_counts_add_up_for_every_asset(planted):
    _, table, counts, pairs, group_result = planted
    for asset, c in counts.items():
        assert c["rows_in"] == c["rows_out"] + table.filter(pl.col("asset") == asset).height
    m = group_result.manifest
    assert m["rows_in"] == m["rows_out"] + m["rows_quarantined"]


def test_corrupt_jpeg_is_quarantined_by_residuals(planted):
    _, _, _, pairs, group_result = planted
    qr = group_result.quarantine
    assert qr["reason"].to_list() == ["corrupt_image"]
    pair = json.loads(qr["original"][0])
    # the row named is the pair's first question row in pairs.parquet
    assert pairs.row(qr["row"][0] - 1, named=True)["pair_id"] == pair["pair_id"]
    assert group_result.manifest["rows_out"] == pairs.filter(pl.col("group") == group_result.group)["pair_id"].n_unique() - 1
