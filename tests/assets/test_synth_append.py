"""Subjects arriving later (`synth.added_subjects`): only they are rendered, every existing file
keeps its bytes, and the result is the dataset a single run with them all would have written.
`python -m pytest tests/assets/test_synth_append.py`"""

import gzip
import hashlib
import json

import polars as pl

from assets.synth.generate import generate
from assets.synth.plan import SynthConfig

BASE = dict(subjects=4, seed=5, image_size=64, render_size=48, workers=1)


def _files(root) -> dict[str, str]:
    """Every file's content hash (CSV .gz by its decompressed text: gzip framing is not content)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "contact_sheet.png":
            data = p.read_bytes()
            out[str(p.relative_to(root))] = hashlib.sha256(gzip.decompress(data) if p.suffix == ".gz" else data).hexdigest()
    return out


def test_added_subjects_render_alone_and_keep_every_existing_byte(tmp_path):
    root = tmp_path / "grown"
    first = generate(root, SynthConfig(**BASE))
    before = _files(root)
    grown = generate(root, SynthConfig(**BASE, added_subjects=2))
    assert first["rendered_subjects"] == 4 and grown["rendered_subjects"] == 2 and grown["subjects"] == 6
    after = _files(root)
    images_before = {k: v for k, v in before.items() if k.endswith(".jpg")}
    assert images_before and all(after[k] == v for k, v in images_before.items())  # old images untouched
    assert len([k for k in after if k.endswith(".jpg")]) > len(images_before)
    assert json.loads((root / "ground_truth/config.json").read_text())["added_subjects"] == 2

    # the same as one run with all six subjects from the start
    whole = tmp_path / "whole"
    generate(whole, SynthConfig(**BASE, added_subjects=2))
    assert _files(whole) == after
    # growing again by nothing renders nothing and changes nothing
    assert generate(root, SynthConfig(**BASE, added_subjects=2))["rendered_subjects"] == 0
    assert _files(root) == after


def test_added_subjects_never_change_a_shared_table_row(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    generate(small, SynthConfig(**BASE))
    generate(big, SynthConfig(**BASE, added_subjects=3))
    for table in ("medical-diff-vqa/mimic_pair_questions.csv", "medical-diff-vqa/mimic_all.csv"):
        a, b = (small / table).read_text().splitlines(), (big / table).read_text().splitlines()
        assert b[:len(a)] == a and len(b) > len(a), table
    a = gzip.decompress((small / "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz").read_bytes()).splitlines()
    b = gzip.decompress((big / "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz").read_bytes()).splitlines()
    assert b[:len(a)] == a and len(b) > len(a)
    ids_small = set(pl.read_parquet(small / "ground_truth/studies.parquet")["subject_id"])
    ids_big = pl.read_parquet(big / "ground_truth/studies.parquet")
    assert ids_small < set(ids_big["subject_id"]) and ids_big["study_id"].is_unique().all()


def test_another_configuration_is_rendered_from_scratch(tmp_path):
    root = tmp_path / "d"
    generate(root, SynthConfig(**BASE, added_subjects=1))
    again = generate(root, SynthConfig(**{**BASE, "seed": 6}))
    assert again["rendered_subjects"] == again["subjects"] == 4
    assert "added_subjects" not in json.loads((root / "ground_truth/config.json").read_text())
