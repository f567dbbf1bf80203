"""Residual images: preprocessing keeps the aspect and pads, shards follow the contract training
reads (assets/shards.py), writes are atomic and idempotent, registration lowers the residual on
no-change pairs. `python -m pytest tests/assets/test_residuals.py`"""

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from assets import prepare
from assets.residuals import (ResidualConfig, decode_resize, load_preprocessed, materialize_group, normalise_pad,
                              preview_grid, read_group_back)
import pyarrow.parquet as pq

from assets.shards import SHARD_SCHEMA, iter_pairs, iter_shard, read_manifest
from assets.storage import Storage
from tests.fixtures.tiny_mimic import NOTHING, write_tiny


def jpeg(w, h, value=128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), value).save(buf, format="JPEG")
    return buf.getvalue()


def test_resize_keeps_aspect_and_pads_centred():
    img = decode_resize(jpeg(200, 100), 64)
    assert img.shape == (32, 64)
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    out = normalise_pad(ramp, 64, 1.0, 99.0)
    assert out.shape == (64, 64)
    assert (out[:16] == 0).all() and (out[48:] == 0).all()  # 16 rows of padding above and below
    assert out[16:48].max() == 255 and out[16:48, 0].max() == 0  # percentile stretch to the full range


def test_normalisation_removes_exposure_differences():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (64, 64)).astype(np.float32)
    a = normalise_pad(base.astype(np.uint8), 64, 1, 99)
    b = normalise_pad(np.clip(base * 0.6 + 30, 0, 255).astype(np.uint8), 64, 1, 99)  # darker, flatter film
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    root = tmp_path_factory.mktemp("res")
    t = write_tiny(root, subjects=6)
    prepared, out = Storage(str(root / "prep")), Storage(str(root / "res"))
    prepare.run_ingest_images(Storage(str(t.mimic_root)), prepared)
    prepare.run_ingest_questions(Storage(str(t.diffvqa_root)), prepared, ["difference"])
    pairs, _ = prepare.run_pairs(prepared, Storage(str(t.diffvqa_root)))
    cfg = ResidualConfig(image_size=64, shard_max_mb=0.03, batch_size=4)
    groups = sorted(pairs["group"].unique().to_list())
    results, manifest = prepare.run_residuals(prepared, out, cfg, groups)
    return t, pairs, out, cfg, results, manifest


def test_shards_follow_the_contract(materialized):
    _, pairs, out, cfg, results, manifest = materialized
    recs = list(iter_pairs(out.root))
    assert {r.pair_id for r in recs} == set(pairs["pair_id"])  # training joins questions on pair_id
    assert read_manifest(out.root)["image_size"] == cfg.image_size
    assert sum(s["rows"] for s in manifest["shards"]) == len(recs)
    assert len(manifest["shards"]) > len(results)  # shard_max_mb splits a group into several shards
    by_id = {r.pair_id: r for r in recs}
    for row in pairs.unique("pair_id").iter_rows(named=True):
        r = by_id[row["pair_id"]]
        assert (r.subject_id, r.main_study_id, r.ref_study_id, r.split, r.group) == (
            row["subject_id"], row["main_study_id"], row["ref_study_id"], row["split"], row["group"])
        assert r.main.shape == (cfg.image_size, cfg.image_size)
        assert np.isfinite(r.registered_residual).all() and np.abs(r.registered_residual).max() <= 1
    # the shard contract: images only (uint8), the residuals are computed when read
    shard = next(p for p in out.list_files() if p.endswith(".parquet") and "shard-" in p)
    with out.fs.open(out.url(shard), "rb") as f:
        assert pq.ParquetFile(f).schema_arrow.names == SHARD_SCHEMA.names
    assert not {"naive_residual", "registered_residual"} & set(SHARD_SCHEMA.names)
    main = load_preprocessed(pairs["main_path"][0], cfg)
    assert np.array_equal(by_id[pairs["pair_id"][0]].main, main / np.float32(255.0))


def test_registration_lowers_residual_on_no_change_pairs(materialized):
    _, pairs, out, _, _, _ = materialized
    same = set(pairs.filter(pl.col("answer") == NOTHING)["pair_id"])
    recs = [r for r in iter_pairs(out.root) if r.pair_id in same]
    assert recs
    naive = np.mean([(r.naive_residual ** 2).mean() for r in recs])
    registered = np.mean([(r.registered_residual ** 2).mean() for r in recs])
    assert registered < 0.6 * naive, (naive, registered)


def test_idempotent_and_atomic(materialized, monkeypatch):
    _, pairs, out, cfg, results, _ = materialized
    g = results[0].group
    before = {p: out.read_bytes(p) for p in out.list_files(f"group={g}")}
    again = materialize_group(pairs, g, out, cfg)
    assert again.skipped and {p: out.read_bytes(p) for p in out.list_files(f"group={g}")} == before
    assert not [p for p in out.list_files() if ".tmp-" in p]
    # a changed config rewrites the group, and the same config twice gives the same bytes
    changed = materialize_group(pairs, g, out, ResidualConfig(**{**cfg.__dict__, "register": False}))
    assert not changed.skipped
    redo = materialize_group(pairs, g, out, cfg)
    assert not redo.skipped and {p: out.read_bytes(p) for p in out.list_files(f"group={g}")} == before
    # a shard truncated on disk is not "up to date": its manifest's sha256 no longer matches
    shard = next(p for p in before if p.endswith(".parquet") and "shard-" in p)
    out.write_bytes(before[shard][: len(before[shard]) // 2], shard)
    healed = materialize_group(pairs, g, out, cfg)
    assert not healed.skipped and out.read_bytes(shard) == before[shard]
    # shards of another contract version are rebuilt, not trusted
    import assets.residuals as residuals

    monkeypatch.setattr(residuals, "SHARD_FORMAT", residuals.SHARD_FORMAT - 1)
    assert not materialize_group(pairs, g, out, cfg).skipped


def test_read_back_and_preview(materialized):
    _, _, out, _, results, _ = materialized
    stats, previews = read_group_back(out, results[0].group, n_previews=2)
    assert stats.height == results[0].manifest["rows_out"] and stats["finite"].all()
    png = Image.open(io.BytesIO(preview_grid(previews, tile=32)))
    assert png.size == (4 * 32, 2 * 32)


def test_a_group_grows_by_its_new_pairs_only(materialized, tmp_path):
    """New pairs of a group go into new shards beside the kept ones; a changed pair rebuilds it."""
    _, pairs, _, cfg, _, _ = materialized
    g = pairs.group_by("group").agg(pl.col("pair_id").n_unique()).sort("pair_id", descending=True)["group"][0]
    ids = sorted(pairs.filter(pl.col("group") == g)["pair_id"].unique().to_list())
    early = pairs.filter(~pl.col("pair_id").is_in(ids[::3]))  # a third of the group arrives later
    out = Storage(str(tmp_path / "res"))
    first = materialize_group(early, g, out, cfg)
    kept = {p: out.read_bytes(p) for p in out.list_files(f"group={g}") if "shard-" in p}
    grown = materialize_group(pairs, g, out, cfg)
    assert not grown.skipped and grown.manifest["rows_added"] == len(ids[::3])
    assert grown.manifest["rows_in"] == len(ids) == grown.manifest["rows_out"] + grown.manifest["rows_quarantined"]
    assert all(out.read_bytes(p) == b for p, b in kept.items())  # earlier shards untouched
    assert [s["path"] for s in grown.manifest["shards"][:len(first.manifest["shards"])]] == \
        [s["path"] for s in first.manifest["shards"]]
    held = {r.pair_id for s in grown.manifest["shards"] for r in iter_shard(out.fs.open(out.url(s["path"]), "rb"), 64)}
    assert held == set(ids)
    assert materialize_group(pairs, g, out, cfg).skipped  # nothing new: nothing done
    # a pair whose image path changed: the group is rebuilt, not patched
    moved = pairs.with_columns(pl.when(pl.col("pair_id") == ids[1]).then(pl.col("main_path") + "?")
                               .otherwise(pl.col("main_path")).alias("main_path"))
    rebuilt = materialize_group(moved, g, out, cfg)
    assert rebuilt.manifest["rows_added"] == len(ids) and rebuilt.manifest["rows_quarantined"] == 1
