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


def _rendered_before(out: Path, cfg: SynthConfig) -> int | None:
    """How many subjects the dataset at `out` already holds, if it is this configuration with
    fewer (or as many) added subjects; None when it must be rendered from scratch."""
    config = out / "ground_truth" / "config.json"
    if not all((out / name).exists() for name in OUTPUTS) or not config.is_file():
        return None
    try:
        before = json.loads(config.read_text())
    except ValueError:
        return None
    now = _settings(cfg)
    same = {k: v for k, v in before.items() if k != "added_subjects"} == {k: v for k, v in now.items()
                                                                            if k != "added_subjects"}
    added = before.get("added_subjects", 0)
    return cfg.subjects + added if same and isinstance(added, int) and added <= cfg.added_subjects else None


def _settings(cfg: SynthConfig) -> dict:
    # `workers` is left out: it changes how fast, never what is written; added_subjects only when
    # there are some, so a dataset without them keeps the bytes it always had
    return {k: v for k, v in asdict(cfg).items()
            if k != "workers" and not (k == "added_subjects" and v == 0)}


def generate(out: Path, cfg: SynthConfig, progress: Callable[[int], None] = lambda n: None,
             on_total: Callable[[int], None] = lambda n: None) -> dict:
    """Render the dataset into `out`. When `out` already holds this configuration with fewer
    added subjects, only the new subjects are rendered: every existing image keeps its bytes,
    every table keeps its rows (the new ones follow), the ground truth gains the new studies."""
    out = Path(out)
    done = _rendered_before(out, cfg)
    if done is None:
        done = 0
        for name in OUTPUTS:  # stale files from a bigger earlier run must not survive
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    mimic_root, vqa_root, gt_root = out / "mimic-cxr-jpg", out / "medical-diff-vqa", out / "ground_truth"
    t0 = time.perf_counter()
    plans = make_plan(cfg)
    on_total(len(plans) - done)
    results = _render_all(plans[done:], cfg, mimic_root, progress)
    t_render = time.perf_counter() - t0

    tables = writer.mimic_tables(plans, cfg.image_size, cfg.seed)
    writer.write_csv(tables["metadata"], mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz")
    writer.write_csv(tables["split"], mimic_root / "mimic-cxr-2.0.0-split.csv.gz")
    writer.write_csv(tables["chexpert"], mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    writer.write_csv(tables["mimic_all"], vqa_root / "mimic_all.csv")
    pairs, question_truth = writer.question_tables(plans, cfg.seed)
    writer.write_csv(pairs, vqa_root / "mimic_pair_questions.csv")
    images = {im["dicom_id"]: im for r in results for im in r.images}
    studies = writer.study_truth(plans[done:], images)
    if done:  # the studies already rendered keep their recorded acquisitions
        studies = pl.concat([pl.read_parquet(gt_root / "studies.parquet"), studies]).rechunk()
    writer.write_parquet(studies, gt_root / "studies.parquet")
    writer.write_parquet(question_truth, gt_root / "questions.parquet")
    (gt_root / "config.json").write_text(json.dumps(_settings(cfg), indent=2, sort_keys=True) + "\n")
    write_contact_sheet(mimic_root, pairs, tables["mimic_all"], out / "contact_sheet.png")

    timings = Timings()
    for r in results:
        timings.add(r.timings)
    frontal = tables["metadata"].filter(pl.col("ViewPosition") != "LATERAL").height
    return {
        "subjects": len(plans), "rendered_subjects": len(plans) - done, "studies": tables["mimic_all"].height, "images": tables["metadata"].height,
        "frontal_images": frontal, "questions": pairs.height,
        "difference_questions": pairs.filter(pl.col("question_type") == "difference").height,
        "seconds": round(time.perf_counter() - t0, 1), "render_seconds": round(t_render, 1),
        "worker_seconds": {"edit": round(timings.edit, 1), "render": round(timings.render, 1),
                           "write": round(timings.write, 1)},
    }
