"""Does the model generalise beyond the dataset it was tuned on? Render subjects it never saw
(`spotdiff synth` with another seed), run them through the same data stages, answer every
difference question of every split with a trained checkpoint, and score the change set
(change-F1 and recall per change kind). Compare with the test split of the training data.

    python -m benchmarks.unseen_subjects --checkpoint runs/model/best [--subjects 120] [--seed 7]
        [--work /tmp/spotdiff-unseen] [--out benchmarks/results/unseen.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import pipelines.env  # noqa: F401  (telemetry off first)

import yaml

from benchmarks.common import emit

REPO = Path(__file__).resolve().parents[1]
QUESTION_TYPES = ("difference",)


def prepare(work: Path, subjects: int, seed: int) -> Path:
    """A params.yaml whose data roots live under `work`, and the data stages run on it."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    emb = work / "embedded"
    params["data"].update(embedded_root=str(emb), mimic_root=str(emb / "mimic-cxr-jpg"),
                          diffvqa_root=str(emb / "medical-diff-vqa"), prepared_root=str(work / "prepared"),
                          residuals_root=str(work / "residuals"))
    path = work / "params.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "SPOTDIFF_PARAMS": str(path)}
    if not (work / "residuals" / "manifest.json").exists():
        for cmd in (["synth", "--out", str(emb), "--subjects", str(subjects), "--seed", str(seed)],
                    ["ingest"], ["pairs", "--from-ingest"], ["residuals"]):
            subprocess.run(["spotdiff", *cmd], cwd=work, env=env, check=True, timeout=3600)
    return path


def score(checkpoint: Path, work: Path) -> dict:
    from models import checkpoint as ckpt
    from models.data import batches
    from models.metrics import change_scores
    from models.predict import predict
    from models.train_loop import DataSpec, TrainConfig, collate_for, make_stream

    model, tokenizer, _ = ckpt.load_model_from(checkpoint)
    model_cfg = model.cfg.to_dict()
    data = DataSpec(str(work / "residuals"), str(work / "prepared" / "pairs.parquet"), "",
                    targets_parquet=str(work / "prepared" / "finding_targets.parquet"))
    cfg = TrainConfig(question_types=QUESTION_TYPES, crop_scale=float(
        yaml.safe_load((REPO / "params.yaml").read_text())["train"]["crop_scale"]))
    records = []
    for split in ("train", "val", "test"):  # every subject is unseen: every split counts
        stream = make_stream(data, split, cfg, model_cfg, augment=False)
        records += predict(model, batches(stream, collate_for(tokenizer, model_cfg), 8), tokenizer, "cpu")
    scores = change_scores([r["prediction"] for r in records], [r["answer"] for r in records])
    return {"questions": len(records), **scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=REPO / "runs/model/best")
    ap.add_argument("--subjects", type=int, default=120)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=Path("/tmp/spotdiff-unseen"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    prepare(args.work, args.subjects, args.seed)
    result = {"benchmark": "unseen_subjects", "date": time.strftime("%Y-%m-%d"),
              "checkpoint": str(args.checkpoint), "subjects": args.subjects, "synth_seed": args.seed,
              **score(args.checkpoint, args.work), "wall_s": round(time.perf_counter() - t0, 1)}
    emit(result, args.out)


if __name__ == "__main__":
    main()
