"""The ablation from params: train the variants with seeds (`spotdiff ablate`), then write
docs/results.md and its bar chart from their MLflow runs alone (so the page can be rebuilt)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from assets.params import UserError, deep_merge
from models.lifecycle.runs import tracking_uri, training_question_types

NOTES_MARKER = "<!-- analysis: hand-written, kept when the page is regenerated -->"


def write_report(params: dict, group: str, out: Path) -> Path:
    from models.ablation import VARIANTS, bar_chart, results_markdown, summarize
    from models.lifecycle.registry import prior_scores
    from models.tracking import tagged_runs

    raw = tagged_runs(tracking_uri(params), params["tracking"]["experiment"], "ablation", group)
    runs = [{"variant": r["tags"]["variant"], "seed": int(r["tags"]["seed"]), "run_id": r["run_id"],
             "run_name": r["run_name"], "metrics": r["metrics"]}
            for r in raw if r["tags"].get("variant") in VARIANTS]
    if not runs:
        raise UserError(f"no finished MLflow runs tagged ablation={group!r}")
    summary = summarize(runs)
    chart = out.parent / "figures" / f"ablation-{group}.png"
    bar_chart(summary, chart)
    t, m = params["train"], params["model"]
    setup = (f"Setup: profile `{params['profile']}`, backbone `{m['backbone']}`, image "
             f"{m['image_size']} px, GPT-2 {m['n_layer']}x{m['n_embd']}, {t['epochs']} epochs, "
             f"{t['pairs_per_batch']} pairs/batch, lr {t['lr']}, {t['num_workers']} Ray workers, "
             f"question types {list(training_question_types(params))}.")
    page = results_markdown(summary, runs, group, str(chart.relative_to(out.parent)), setup,
                            prior=prior_scores(params, "test"))
    # Hand-written analysis below the marker survives regeneration.
    if out.exists() and NOTES_MARKER in out.read_text():
        page += "\n" + NOTES_MARKER + out.read_text().split(NOTES_MARKER, 1)[1]
    out.write_text(page)
    return out


def run_variants(params: dict, seeds: list[int], variants: list[str], group: str,
                 log: Callable[[str], None] = lambda line: None) -> None:
    """Train every variant (models/ablation.py VARIANTS) for every seed with the same params, each
    through the same pretrain() and train() as the main job, tagged ablation=<group>."""
    from models.ablation import PRETRAIN_EPOCHS, VARIANTS
    from models.lifecycle.pretrain import pretrain
    from models.lifecycle.train import train

    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise UserError(f"--variants: unknown {unknown} (known: {list(VARIANTS)})")
    for seed in seeds:
        for name in variants:
            slug = name.replace("+", "p").replace(" ", "-")
            run_dir = f"runs/ablate/{group}/{slug}-s{seed}"
            p = deep_merge(params, {"model": VARIANTS[name], "train": {"seed": seed, "output_dir": run_dir},
                                    "pretrain": {"epochs": PRETRAIN_EPOCHS.get(name, 0),
                                                 "output_dir": f"{run_dir}/pretrain"}})
            log(f"ablation {group}: {name} seed {seed}")
            pretrain(p)  # writes only a `skipped` note for most variants
            train(p, f"ablate-{group}-{slug}-s{seed}", tags={"ablation": group, "variant": name, "seed": str(seed)})
