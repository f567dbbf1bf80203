"""Healthy-control references for single-image questions (See-in-Pairs, docs/data.md "Control
references"): with `pairs.single_image_reference: control`, a question about one study (which
abnormalities, is there X, where, which level, which type) is asked of the pair (that study, a
matched normal training study of another patient), so the model answers it by comparison with what
normal looks like rather than from the image alone. Difference questions keep their pairing.

How a control is chosen, each rule tested in tests/assets/test_controls.py:
1. Normal: every finding's presence in the control study is known and absent (from its own
   single-image questions, assets/finding_states.py) — never a study with findings.
2. Another patient: never the same subject.
3. From the training split, for every split: the bank of normals a deployed model compares
   with is the one it was trained with, and no validation or test patient's image ever enters
   a pair the model trains on (the splits stay subject-disjoint in what is learned).
4. Same view (PA or AP) as the main image, the closest acquisition time among those (the
   nearest scanner generation and protocol), then the smallest study id: deterministic.
A single-image row without any candidate is quarantined (`no_control`), never silently kept
with its old reference: rows in = rows out + rows quarantined."""

from __future__ import annotations

import polars as pl

from assets import quarantine as q

PREVIOUS, CONTROL = "previous", "control"
TRAIN = "train"  # the split controls are drawn from
REFERENCE_MODES = (PREVIOUS, CONTROL)


def normal_studies(targets: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """Studies whose 30 presence cells are all known and absent, with their chosen frontal
    image: study_id, subject_id, dicom_id, path, view, acquired, split."""
    presence = pl.concat([
        targets.join(pairs.select("pair_id", pl.col(f"{side}_study_id").alias("study_id")).unique(),
                     on="pair_id").select("study_id", pl.col(f"{side}_presence").alias("presence"))
        for side in ("main", "ref")])
    normal = (presence.with_columns(pl.col("presence").list.max().alias("hi"),
                                    pl.col("presence").list.min().alias("lo"))
              .group_by("study_id").agg(((pl.col("hi") == 0) & (pl.col("lo") == 0)).all().alias("normal"))
              .filter("normal").select("study_id"))
    images = pl.concat([
        pairs.select(pl.col(f"{side}_study_id").alias("study_id"),
                     pl.col("ref_subject_id" if side == "ref" else "subject_id").alias("subject_id"),
                     *(pl.col(f"{side}_{c}").alias(c) for c in ("dicom_id", "path", "view", "acquired")),
                     "split")
        for side in ("main", "ref")]).unique("study_id", keep="first", maintain_order=True)
    return images.join(normal, on="study_id").sort("study_id")


def with_controls(pairs: pl.DataFrame, targets: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The pairs table with every single-image row's reference replaced by a matched control;
    returns (table, quarantined rows, number of distinct controls used)."""
    controls = normal_studies(targets, pairs)
    single = pairs.filter(pl.col("question_type") != "difference")
    keep = pairs.filter(pl.col("question_type") == "difference")
    mains = single.select("main_study_id", "subject_id", "main_view", "main_acquired").unique("main_study_id")
    bank = controls.filter(pl.col("split") == TRAIN).drop("split")
    cand = (mains.join(bank.rename({c: f"c_{c}" for c in bank.columns}), left_on="main_view", right_on="c_view")
            .filter(pl.col("c_subject_id") != pl.col("subject_id"))
            .with_columns(gap=(pl.col("c_acquired") - pl.col("main_acquired")).abs())
            .sort(["main_study_id", "gap", "c_study_id"])
            .group_by("main_study_id", maintain_order=True).first()
            .select("main_study_id", *(pl.col(f"c_{c}").alias(f"ref_{c}")
                                       for c in ("study_id", "subject_id", "dicom_id", "path", "acquired"))))
    joined = single.drop("ref_study_id", "ref_subject_id", "ref_dicom_id", "ref_path", "ref_acquired", "ref_view") \
        .join(cand, on="main_study_id", how="left").with_columns(ref_view=pl.col("main_view"))
    s = q.Sieve(joined, "study_pairs")
    s.drop(pl.col("ref_study_id").is_null(), "no_control",
           pl.format("no normal training study of another patient with a {} image to serve as the "
                     "control for main study {}", pl.col("main_view"), pl.col("main_study_id")))
    ctl = s.df.with_columns(
        pair_id=pl.concat_str([pl.col("main_dicom_id"), pl.lit("__"), pl.col("ref_dicom_id")]),
        reference=pl.lit(CONTROL)).select(keep.columns)
    out = pl.concat([keep, ctl]).sort(["group", "subject_id", "main_study_id", "question_type", "question_id"])
    s.counts(ctl.height)  # the Sieve's own accounting: single-image rows in = out + quarantined
    return out, s.quarantine, ctl["ref_study_id"].n_unique()
