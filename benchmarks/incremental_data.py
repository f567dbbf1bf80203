"""New subjects arrive: how much of the data stage's work is done again?

A dataset of N subjects is rendered and prepared (ingest, pairs, residual shards); then
`synth.added_subjects` brings a batch of new subjects (10 % by default) and every step runs again
on the same folders, as `dvc repro` (persisted outputs) or the Dagster loop would. Compared with
preparing the grown dataset from scratch: wall time per step and the pairs registered (the
residual step, where the image work is). The same public functions as the CLI, DVC stages and
Dagster assets (assets/synth/generate.py, assets/prepare.py).

    python -m benchmarks.incremental_data [--subjects 100] [--added 10] [--workdir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pipelines.env  # noqa: F401  (telemetry off first)

from benchmarks.common import emit


def prepare_all(root: Path, cfg_synth, residual_cfg) -> dict:
    """synth, ingest, pairs and residuals into root; seconds per step and pairs registered."""
    from assets import prepare
    from assets.residuals import GROUPS
    from assets.storage import Storage
    from assets.synth.generate import generate

    data, prepared, shards = root / "embedded", Storage(str(root / "prepared")), Storage(str(root / "residuals"))
    t = {}
    t0 = time.perf_counter()
    rendered = generate(data, cfg_synth)["rendered_subjects"]
    t["synth"] = time.perf_counter() - t0
    mimic, dvqa = Storage(str(data / "mimic-cxr-jpg")), Storage(str(data / "medical-diff-vqa"))
    t0 = time.perf_counter()
    prepare.run_ingest_images(mimic, prepared)
    prepare.run_ingest_questions(dvqa, prepared, ["all"])
    t["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare.run_pairs(prepared, dvqa)
    t["pairs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results, _ = prepare.run_residuals(prepared, shards, residual_cfg, list(GROUPS), base=str(root))
    t["residuals"] = time.perf_counter() - t0
    registered = sum(r.manifest.get("rows_added", r.manifest["rows_in"]) for r in results if not r.skipped)
    return {"seconds": {k: round(v, 1) for k, v in t.items()}, "subjects_rendered": rendered,
            "pairs": sum(r.manifest["rows_in"] for r in results), "pairs_registered": registered}


def main() -> None:
    from assets.params import load_params
    from assets.prepare import residual_config
    from assets.synth.plan import SynthConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=100)
    ap.add_argument("--added", type=int, default=10)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    params = load_params()
    base = SynthConfig.from_section(params["synth"], subjects=args.subjects, added_subjects=0)
    grown = SynthConfig.from_section(params["synth"], subjects=args.subjects, added_subjects=args.added)
    residual_cfg = residual_config(params)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="incremental-"))
    try:
        first = prepare_all(work / "grown", base, residual_cfg)
        again = prepare_all(work / "grown", grown, residual_cfg)
        scratch = prepare_all(work / "scratch", grown, residual_cfg)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    total = lambda run, steps: sum(run["seconds"][s] for s in steps)  # noqa: E731
    data_steps = ("ingest", "pairs", "residuals")
    emit({"benchmark": "incremental_data", "date": time.strftime("%Y-%m-%d"),
          "subjects": args.subjects, "added": args.added, "first": first, "after_adding": again,
          "from_scratch": scratch,
          "share_of_scratch": {
              "pairs_registered": round(again["pairs_registered"] / max(scratch["pairs_registered"], 1), 3),
              "data_seconds": round(total(again, data_steps) / max(total(scratch, data_steps), 1e-9), 3),
              "synth_seconds": round(again["seconds"]["synth"] / max(scratch["seconds"]["synth"], 1e-9), 3)}},
         args.out)


if __name__ == "__main__":
    main()
