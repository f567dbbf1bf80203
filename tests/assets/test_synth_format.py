"""The embedded dataset read back as a loader for the real files would: columns in the real
order, dtypes, ID forms and ranges, the path scheme, and every JPEG decoding at its stated size.
Uses the session's smoke dataset (tests/conftest.py)."""

import re

import polars as pl
from PIL import Image

from assets.diffvqa.vocabulary import FINDINGS, LEVELS, QUESTION_TYPES

CHEXPERT = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
            "Pneumothorax", "Support Devices"]
DICOM_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


def _mimic(root, name):
    # Label columns that are blank in every row of a small dataset would infer as String; a
    # loader for the real files pins them to Float64, and so does this one.
    overrides = {c: pl.Float64 for c in CHEXPERT} if name == "chexpert" else None
    return pl.read_csv(root / "mimic-cxr-jpg" / f"mimic-cxr-2.0.0-{name}.csv.gz", schema_overrides=overrides)


def test_metadata_columns_dtypes_and_ids(smoke_dataset):
    meta = _mimic(smoke_dataset, "metadata")
    assert meta.columns == ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                            "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                            "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
    assert meta.schema["subject_id"] == pl.Int64 and meta.schema["StudyDate"] == pl.Int64
    assert meta.schema["StudyTime"] == pl.Float64 and meta.schema["Rows"] == pl.Int64
    assert meta["dicom_id"].is_unique().all()
    assert all(DICOM_RE.match(d) for d in meta["dicom_id"])
    assert all(10_000_000 <= s < 20_000_000 for s in meta["subject_id"])
    assert all(50_000_000 <= s < 60_000_000 for s in meta["study_id"])
    years = meta["StudyDate"] // 10000
    assert years.min() >= 2100 and years.max() <= 2200
    assert set(meta["ViewPosition"]) <= {"PA", "AP", "LATERAL"} and "LATERAL" in set(meta["ViewPosition"])
    pairs = {("PA", "postero-anterior"), ("AP", "antero-posterior"), ("LATERAL", "lateral")}
    assert set(zip(meta["ViewPosition"], meta["ViewCodeSequence_CodeMeaning"])) <= pairs
    # HHMMSS.fff: minutes and seconds below 60
    t = meta["StudyTime"].cast(pl.Int64)
    assert ((t % 100) < 60).all() and ((t // 100 % 100) < 60).all() and (t // 10000 < 24).all()
    # One study belongs to one subject.
    assert meta.group_by("study_id").agg(pl.col("subject_id").n_unique())["subject_id"].max() == 1


def test_every_jpeg_exists_decodes_at_its_size_and_follows_the_path_scheme(smoke_dataset):
    meta = _mimic(smoke_dataset, "metadata")
    root = smoke_dataset / "mimic-cxr-jpg"
    on_disk = {p.relative_to(root).as_posix() for p in (root / "files").rglob("*.jpg")}
    expected = {f"files/p{str(r['subject_id'])[:2]}/p{r['subject_id']}/s{r['study_id']}/{r['dicom_id']}.jpg"
                for r in meta.iter_rows(named=True)}
    assert on_disk == expected
    for r in meta.iter_rows(named=True):
        path = root / f"files/p{str(r['subject_id'])[:2]}/p{r['subject_id']}/s{r['study_id']}/{r['dicom_id']}.jpg"
        with Image.open(path) as im:
            im.load()
            assert im.format == "JPEG" and im.mode == "L"
            assert im.size == (r["Columns"], r["Rows"])


def test_split_and_chexpert_files(smoke_dataset):
    meta, split, chex = (_mimic(smoke_dataset, n) for n in ("metadata", "split", "chexpert"))
    assert split.columns == ["dicom_id", "study_id", "subject_id", "split"]
    assert set(split["split"]) == {"train", "validate", "test"}
    assert sorted(split["dicom_id"]) == sorted(meta["dicom_id"])
    assert split.group_by("subject_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert chex.columns == ["subject_id", "study_id", *CHEXPERT]
    assert chex.height == meta["study_id"].n_unique()
    for c in CHEXPERT:
        assert chex.schema[c] == pl.Float64
        assert set(chex[c].drop_nulls()) <= {1.0, 0.0, -1.0}
    assert chex["No Finding"].drop_nulls().len() > 0


def test_diffvqa_files(smoke_dataset):
    root = smoke_dataset / "medical-diff-vqa"
    pairs = pl.read_csv(root / "mimic_pair_questions.csv")
    assert pairs.columns == ["study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split"]
    assert set(pairs["question_type"]) == set(QUESTION_TYPES)
    assert set(pairs["split"]) == {"train", "val", "test"}
    assert pairs.group_by("subject_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert pairs.group_by("study_id").agg(pl.col("ref_id").n_unique())["ref_id"].max() == 1  # one reference
    # Difference rows come last within each main study.
    for _, g in pairs.with_row_index().group_by("study_id"):
        types = g.sort("index")["question_type"].to_list()
        first_diff = types.index("difference")
        assert set(types[first_diff:]) == {"difference"}
        assert all(types.count(t) <= 1 for t in set(types) - {"difference"})
    mimic_all = pl.read_csv(root / "mimic_all.csv", schema_overrides={c: pl.Float64 for c in CHEXPERT})
    assert mimic_all.columns == ["subject_id", "study_id", *CHEXPERT, "dicom_id", "view", "split", "study_date",
                                 "study_order"]
    assert mimic_all.schema["study_order"] == pl.Float64 and mimic_all.schema["study_date"] == pl.Int64
    assert set(mimic_all["view"]) <= {"postero-anterior", "antero-posterior"}
    meta = _mimic(smoke_dataset, "metadata")
    frontal = meta.filter(pl.col("ViewPosition") != "LATERAL")
    assert set(mimic_all["dicom_id"]) == set(frontal["dicom_id"])


def test_vocabulary_only(smoke_dataset):
    truth = pl.read_parquet(smoke_dataset / "ground_truth" / "studies.parquet")
    found = truth.explode("findings").drop_nulls("findings").unnest("findings")
    assert found.height > 0
    assert set(found["name"]) <= set(FINDINGS) and set(found["level"]) <= set(LEVELS)
    pairs = pl.read_csv(smoke_dataset / "medical-diff-vqa" / "mimic_pair_questions.csv")
    text = " ".join(pairs["answer"]) + " " + " ".join(pairs["question"])
    assert "nodule" not in text and "mass" not in text and " large" not in text.replace("moderate to large", "")
