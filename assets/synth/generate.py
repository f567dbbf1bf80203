"""`spotdiff synth`'s domain function: plan the dataset, render it over worker processes, write
the MIMIC-CXR-JPG and Medical-Diff-VQA files, the ground truth and the contact sheet.

Layout under `out`:
    mimic-cxr-jpg/      files/p1X/p{subject}/s{study}/{dicom}.jpg, mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz
    medical-diff-vqa/   mimic_pair_questions.csv, mimic_all.csv
    ground_truth/       studies.parquet, questions.parquet, config.json
    contact_sheet.png"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import polars as pl

from assets.synth import writer
from assets.synth.contact_sheet import write_contact_sheet
from assets.synth.plan import SynthConfig, make_plan
from assets.synth.render import SubjectResult, Timings, init_worker, render_subject

OUTPUTS = ("mimic-cxr-jpg", "medical-diff-vqa", "ground_truth", "contact_sheet.png")


def _render_all(plans, cfg: SynthConfig, mimic_root: Path, progress: Callable[[int], None]) -> list[SubjectResult]:
    if cfg.workers <= 1:
        init_worker()
        results = []
        for p in plans:
            results.append(render_subject(p, cfg, mimic_root))
            progress(1)
        return results
    # spawn, not fork: torch's thread pools do not survive a fork, and each worker loads the CT
    # once in its initializer.
    with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=init_worker) as pool:
        futures = [pool.submit(render_subject, p, cfg, mimic_root) for p in plans]
        results = []
        for f in futures:  # in plan order: the tables never depend on completion order
            results.append(f.result())
            progress(1)
        return results


def generate(out: Path, cfg: SynthConfig, progress: Callable[[int], None] = lambda n: None) -> dict:
    out = Path(out)
    for name in OUTPUTS:  # stale files from a bigger earlier run must not survive
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    mimic_root, vqa_root, gt_root = out / "mimic-cxr-jpg", out / "medical-diff-vqa", out / "ground_truth"
    t0 = time.perf_counter()
    plans = make_plan(cfg)
    results = _render_all(plans, cfg, mimic_root, progress)
    t_render = time.perf_counter() - t0

    tables = writer.mimic_tables(plans, cfg.image_size, cfg.seed)
    writer.write_csv(tables["metadata"], mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz")
    writer.write_csv(tables["split"], mimic_root / "mimic-cxr-2.0.0-split.csv.gz")
    writer.write_csv(tables["chexpert"], mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    writer.write_csv(tables["mimic_all"], vqa_root / "mimic_all.csv")
    pairs, question_truth = writer.question_tables(plans, cfg.seed)
    writer.write_csv(pairs, vqa_root / "mimic_pair_questions.csv")
    images = {im["dicom_id"]: im for r in results for im in r.images}
    writer.write_parquet(writer.study_truth(plans, images), gt_root / "studies.parquet")
    writer.write_parquet(question_truth, gt_root / "questions.parquet")
    # `workers` is left out: it changes how fast, never what is written.
    settings = {k: v for k, v in asdict(cfg).items() if k != "workers"}
    (gt_root / "config.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    write_contact_sheet(mimic_root, pairs, tables["mimic_all"], out / "contact_sheet.png")

    timings = Timings()
    for r in results:
        timings.add(r.timings)
    frontal = tables["metadata"].filter(pl.col("ViewPosition") != "LATERAL").height
    return {
        "subjects": len(plans), "studies": tables["mimic_all"].height, "images": tables["metadata"].height,
        "frontal_images": frontal, "questions": pairs.height,
        "difference_questions": pairs.filter(pl.col("question_type") == "difference").height,
        "seconds": round(time.perf_counter() - t0, 1), "render_seconds": round(t_render, 1),
        "worker_seconds": {"edit": round(timings.edit, 1), "render": round(timings.render, 1),
                           "write": round(timings.write, 1)},
    }
