"""Ingestion + pairing at MIMIC scale: CSVs of the real sizes (377,110 images, 227,835 studies,
65,379 subjects, 700,703 questions; no images, so the file check is off), then the table work of
`spotdiff pairs` timed step by step. Goal: under 10 s on 2 cores.

    python benchmarks/ingest_scale.py [--workdir /tmp/ingest-scale] [--types difference|all]

Figures go to docs/benchmarks.md, section "Data: ingestion and pairing at MIMIC scale"."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from assets import prepare
from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer
from assets.diffvqa.vocabulary import FINDINGS, LEVELS
from assets.ingest import CHEXPERT_LABELS
from assets.storage import Storage

N_SUBJECTS, N_STUDIES, N_IMAGES, N_QUESTIONS = 65_379, 227_835, 377_110, 700_703
OTHER_TYPES = ["abnormality", "presence", "view", "location", "level", "type"]


def _write_gz(df: pl.DataFrame, path: Path) -> None:
    path.write_bytes(gzip.compress(df.write_csv().encode(), compresslevel=1, mtime=0))


def generate(root: Path, seed: int = 0) -> tuple[Storage, Storage]:
    rng = np.random.default_rng(seed)
    mimic, dvqa = root / "mimic", root / "dvqa"
    mimic.mkdir(parents=True, exist_ok=True)
    dvqa.mkdir(parents=True, exist_ok=True)
    subjects = np.sort(rng.choice(np.arange(10_000_000, 20_000_000), N_SUBJECTS, replace=False))
    # every subject >= 1 study, the rest spread at random; studies numbered in date order
    study_subject = np.concatenate([subjects, rng.choice(subjects, N_STUDIES - N_SUBJECTS)])
    study_subject.sort()
    study_ids = np.sort(rng.choice(np.arange(50_000_000, 60_000_000), N_STUDIES, replace=False))
    rank = pl.DataFrame({"s": study_subject}).with_columns(r=pl.int_range(pl.len()).over("s"))["r"].to_numpy()
    days = rank * 40 + rng.integers(0, 30, N_STUDIES)
    dates = (np.datetime64("2150-01-01") + days.astype("timedelta64[D]")).astype(str)
    image_study = np.concatenate([np.arange(N_STUDIES), rng.integers(0, N_STUDIES, N_IMAGES - N_STUDIES)])
    image_study.sort()
    view = np.where(np.r_[True, image_study[1:] != image_study[:-1]], rng.choice(["PA", "AP"], N_IMAGES),
                    rng.choice(["LATERAL", "LL", "AP", "PA"], N_IMAGES, p=[0.6, 0.2, 0.1, 0.1]))
    hexes = rng.integers(0, 2**32, (N_IMAGES, 5), dtype=np.uint64)
    dicoms = ["-".join(f"{x:08x}" for x in row) for row in hexes]
    time_s = rng.integers(0, 86_400, N_IMAGES)
    meta = pl.DataFrame({
        "dicom_id": dicoms, "subject_id": study_subject[image_study], "study_id": study_ids[image_study],
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
        "Rows": 3056, "Columns": 2544,
        "StudyDate": np.char.replace(dates[image_study], "-", ""),
        "StudyTime": [f"{t // 3600:02d}{t // 60 % 60:02d}{t % 60:02d}.000" for t in time_s],
        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)", "ViewCodeSequence_CodeMeaning": "postero-anterior",
        "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
    _write_gz(meta, mimic / "mimic-cxr-2.0.0-metadata.csv.gz")
    sub_split = dict(zip(subjects, rng.choice(["train", "validate", "test"], N_SUBJECTS, p=[0.8, 0.1, 0.1])))
    split = np.array([sub_split[s] for s in study_subject])
    _write_gz(meta.select("dicom_id", "study_id", "subject_id").with_columns(split=split[image_study]),
              mimic / "mimic-cxr-2.0.0-split.csv.gz")
    labels = {c: rng.choice(["1.0", "0.0", "-1.0", ""], N_STUDIES) for c in CHEXPERT_LABELS}
    _write_gz(pl.DataFrame({"subject_id": study_subject, "study_id": study_ids, **labels}),
              mimic / "mimic-cxr-2.0.0-chexpert.csv.gz")
    first_image = np.r_[0, np.flatnonzero(image_study[1:] != image_study[:-1]) + 1]
    pl.DataFrame({"subject_id": study_subject, "study_id": study_ids, **labels,
                  "dicom_id": [dicoms[i] for i in first_image], "view": "postero-anterior",
                  "split": split, "study_date": np.char.replace(dates, "-", ""), "study_order": rank + 1.0}
                 ).write_csv(dvqa / "mimic_all.csv")
    # questions: one difference question per main study (each study but a subject's first, ref =
    # the previous study), the other types filling up to the real row count
    main = np.flatnonzero(rank > 0)
    answers = [compose_answer(ChangeSet(added=tuple(rng.choice(FINDINGS, rng.integers(0, 3), replace=False)),
                                        levels=tuple(LevelChange(f, *rng.choice(LEVELS, 2, replace=False))
                                                     for f in rng.choice(FINDINGS, rng.integers(0, 2)))))
               for _ in range(3000)]
    n_other = N_QUESTIONS - len(main)
    other = rng.choice(main, n_other)
    idx = np.concatenate([main, other])
    qtype = np.array(["difference"] * len(main) + list(rng.choice(OTHER_TYPES, n_other)))
    q = pl.DataFrame({"study_id": study_ids[idx], "subject_id": study_subject[idx], "ref_id": study_ids[idx - 1],
                      "question_type": qtype,
                      "question": np.where(qtype == "difference", "what has changed compared to the reference image?",
                                           np.char.add("is there evidence of finding ", (np.arange(len(idx)) % 50).astype(str))),
                      "answer": np.where(qtype == "difference", np.array(answers, dtype=object)[rng.integers(0, 3000, len(idx))], "yes"),
                      "split": np.vectorize({"train": "train", "validate": "val", "test": "test"}.get)(split[idx])})
    q.write_csv(dvqa / "mimic_pair_questions.csv")
    return Storage(str(mimic)), Storage(str(dvqa))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/spotdiff-ingest-scale")
    ap.add_argument("--types", default="difference", choices=["difference", "all"])
    args = ap.parse_args()
    root = Path(args.workdir)
    t0 = time.perf_counter()
    mimic, dvqa = generate(root)
    gen_s = time.perf_counter() - t0
    prepared = Storage(str(root / "prepared"))
    steps = [
        ("mimic_images", lambda: prepare.run_ingest_images(mimic, prepared, check_files=False)),
        ("diffvqa_questions", lambda: prepare.run_ingest_questions(
            dvqa, prepared, "all" if args.types == "all" else ["difference"])),
        ("study_pairs+quarantine", lambda: (prepare.run_pairs(prepared, dvqa), prepare.collect_quarantine(prepared))),
    ]
    wall, cpu, counts = {}, {}, {}
    for name, step in steps:
        # CPU time next to wall time: on a shared machine the wall clock also counts other
        # people's work; CPU seconds / cores is what the step costs on idle cores.
        w, c = time.perf_counter(), time.process_time()
        out = step()
        wall[name], cpu[name] = time.perf_counter() - w, time.process_time() - c
        counts[name] = out[1] if isinstance(out[1], dict) else out[0][1]
    print(json.dumps({"cores": os.cpu_count(), "polars_threads": pl.thread_pool_size(), "types": args.types,
                      "load_avg_1m": os.getloadavg()[0], "generate_s": round(gen_s, 1),
                      "wall_s": {k: round(v, 2) for k, v in wall.items()}, "wall_total_s": round(sum(wall.values()), 2),
                      "cpu_s": {k: round(v, 2) for k, v in cpu.items()}, "cpu_total_s": round(sum(cpu.values()), 2),
                      "counts": counts}, indent=1))


if __name__ == "__main__":
    main()
