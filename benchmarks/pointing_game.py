"""Pointing game: for each change between a pair's studies, does the model's evidence fall on it?

The embedded dataset knows exactly where each change shows (assets/synth/footprints.py: the
projected attenuation the finding adds or removes, in the main image's own geometry). For every
changed finding of every pair of the split, the change head's logit for the true (finding, kind)
cell is explained by Grad-CAM on the residual encoder (models/grounding.py); a hit is the map's
maximum landing on the footprint (pixels at ≥ 10 % of its peak), within `--tolerance` pixels
of the model's input frame (15 px at 224 in the pointing game's original form, ~8 px at 128).
Two baselines say what a hit rate means here: always pointing at the image centre, and the hit
rate a uniformly random point expects (the tolerant footprint's share of the frame).

    python -m benchmarks.pointing_game [--checkpoint runs/model/best] [--split test] [--max-pairs N]
        [--tolerance 8] [--picture docs/img/pointing-game.png] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pipelines.env  # noqa: F401  (telemetry off first)

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import emit

REPO = Path(__file__).resolve().parents[1]
FOOTPRINT_LEVEL = 0.1  # share of the footprint's peak that counts as "on the finding"


def model_frame(footprint: np.ndarray, stored_size: int, aug) -> torch.Tensor:
    """A footprint at render size -> the model's input frame: resized to the shards' image size,
    then the evaluation view's crop and resize (the same function the images went through)."""
    from models.augment import augment_pair

    fp = torch.from_numpy(footprint)[None, None]
    fp = F.interpolate(fp, size=(stored_size, stored_size), mode="bilinear", align_corners=False)[0]
    return augment_pair(fp, fp, aug, None)[0][0]


def tolerant(mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    """The mask grown by `tolerance` pixels (a square neighbourhood)."""
    if tolerance <= 0:
        return mask
    return F.max_pool2d(mask[None, None].float(), 2 * tolerance + 1, stride=1, padding=tolerance)[0, 0] > 0


def picture(examples: list[dict], path: Path) -> None:
    """A row per example: main image with the footprint (green) and the CAM's maximum (red
    cross), and the CAM itself."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(examples)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for j, ex in enumerate(examples):
        for i, layer in enumerate(("image", "cam")):
            ax = axes[i, j]
            ax.imshow(ex["image"], cmap="gray")
            if layer == "cam":
                ax.imshow(ex["cam"], cmap="jet", alpha=0.45)
            ax.contour(ex["footprint"], levels=[0.5], colors="lime", linewidths=0.8)
            ax.plot([ex["point"][1]], [ex["point"][0]], "r+", markersize=10, mew=2)
            ax.set_axis_off()
        axes[0, j].set_title(f"{ex['kind']}: {ex['finding']}\n{'hit' if ex['hit'] else 'miss'}", fontsize=7)
    fig.suptitle("Pointing game: footprint of the change (green), Grad-CAM maximum (red)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    import polars as pl

    from assets.finding_states import CHANGE_KINDS
    from assets.diffvqa.vocabulary import FINDINGS
    from assets.params import load_params
    from assets.synth.footprints import change_footprints
    from assets.synth.plan import SynthConfig, make_plan
    from models import checkpoint as ckpt
    from models.data import batches
    from models.grounding import change_cams
    from models.train_loop import DataSpec, TrainConfig, augment_config, collate_for, make_stream

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=REPO / "runs/model/best")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-pairs", type=int)
    ap.add_argument("--tolerance", type=int, default=8)
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--picture", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    params = load_params()
    d = params["data"]
    truth_config = REPO / d["embedded_root"] / "ground_truth" / "config.json"
    if not truth_config.is_file():
        print(f"{truth_config}: no ground truth; the pointing game needs the embedded dataset (`spotdiff synth`)")
        return 2
    synth_cfg = SynthConfig(**json.loads(truth_config.read_text()))
    plans = {p.subject_id: p for p in make_plan(synth_cfg)}
    pairs_parquet = REPO / d["prepared_root"] / "pairs.parquet"
    studies = {r["pair_id"]: r for r in pl.scan_parquet(pairs_parquet)
               .filter(pl.col("split") == args.split)
               .select("pair_id", "subject_id", "main_study_id", "ref_study_id")
               .unique("pair_id").collect().iter_rows(named=True)}

    model, tok, _ = ckpt.load_model_from(args.checkpoint)
    if model.finding_heads is None:
        print(f"{args.checkpoint}: the model has no change head to explain (model.finding_heads: false)")
        return 2
    mc = model.cfg.to_dict()
    data = DataSpec(str(REPO / d["residuals_root"]), str(pairs_parquet), "",
                    targets_parquet=str(REPO / d["prepared_root"] / "finding_targets.parquet"))
    cfg = TrainConfig(question_types=("difference",), crop_scale=float(params["train"]["crop_scale"]))
    stream = make_stream(data, args.split, cfg, {**mc, "finding_heads": True}, augment=False,
                         max_pairs=args.max_pairs)
    aug = augment_config(cfg, mc)
    stored_size = int(params["residuals"]["image_size"])

    t0 = time.perf_counter()
    rows, examples = [], []
    for b in batches(stream, collate_for(tok, mc), 8):
        cells, meta = [], []
        for p, pair_id in enumerate(b.pair_ids):
            s = studies[pair_id]
            plan = plans[s["subject_id"]]
            fps = change_footprints(plan, plan.study_ids.index(s["main_study_id"]),
                                    plan.study_ids.index(s["ref_study_id"]), synth_cfg.seed,
                                    synth_cfg.render_size)
            for name, (kind, fp) in fps.items():
                mask = model_frame(fp, stored_size, aug) >= FOOTPRINT_LEVEL
                if not bool(mask.any()):  # outside the crop: nothing to point at
                    continue
                cells.append((p, FINDINGS.index(name), CHANGE_KINDS.index(kind)))
                meta.append((pair_id, name, kind, mask))
        if not cells:
            continue
        cams = change_cams(model, b.main, b.ref, b.residual, cells)
        side = cams.shape[-1]
        centre = (side // 2, side // 2)
        for (p, _, _), (pair_id, name, kind, mask), cam in zip(cells, meta, cams):
            zone = tolerant(mask, args.tolerance)
            point = np.unravel_index(int(cam.argmax()), cam.shape)
            hit = bool(zone[point])
            rows.append({"pair_id": pair_id, "finding": name, "kind": kind, "hit": hit,
                         "centre_hit": bool(zone[centre]), "random_hit": float(zone.float().mean())})
            if len(examples) < args.examples and (kind not in {e["kind"] for e in examples} or len(examples) >= 3):
                examples.append({"image": b.main[p, 0].numpy(), "cam": cam, "footprint": mask.float().numpy(),
                                 "point": point, "kind": kind, "finding": name, "hit": hit})

    def rates(sel: list[dict]) -> dict:
        n = len(sel)
        return {"n": n, "hit_rate": round(sum(r["hit"] for r in sel) / max(n, 1), 4),
                "centre_baseline": round(sum(r["centre_hit"] for r in sel) / max(n, 1), 4),
                "random_baseline": round(sum(r["random_hit"] for r in sel) / max(n, 1), 4)}

    result = {"benchmark": "pointing_game", "date": time.strftime("%Y-%m-%d"),
              "checkpoint": str(args.checkpoint), "split": args.split, "tolerance_px": args.tolerance,
              "input_px": int(mc["image_size"]), "seconds": round(time.perf_counter() - t0, 1),
              "all": rates(rows), **{kind: rates([r for r in rows if r["kind"] == kind])
                                     for kind in ("added", "missing", "level")}}
    if args.picture and examples:
        picture(examples, args.picture)
        result["picture"] = str(args.picture)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
