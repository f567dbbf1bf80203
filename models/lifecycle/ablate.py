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


def variant_data(params: dict, folder: str, log: Callable[[str], None] = lambda line: None) -> dict:
    """A variant that pairs differently gets its own pairs and residual shards in `folder`, made
    by the data stages' own functions and gated by the same GX suites, from the ingested tables
    of params' prepared_root; returns params pointing at them. Shared by the variant's seeds
    (the residuals of an unchanged group are kept: their content hashes match)."""
    from assets import prepare
    from assets.params import repo_root, resolve_path, storage_for
    from assets.residuals import GROUPS

    src = storage_for(resolve_path(params["data"]["prepared_root"]))
    dst = storage_for(resolve_path(f"{folder}/prepared"))
    out = storage_for(resolve_path(f"{folder}/residuals"))
    for name in (prepare.IMAGES, prepare.QUESTIONS):
        if not src.exists(name):
            raise UserError(f"{src.url(name)}: not found; run the data stages first (`dvc repro residuals`)")
        dst.write_parquet(src.read_parquet(name), name)
    _, counts = prepare.run_pairs(dst, storage_for(params["data"]["diffvqa_root"]), **prepare.pairs_options(params))
    failure = prepare.blocking_failure(prepare.check_pairs(dst))
    if failure:
        raise UserError(f"{dst.url(prepare.PAIRS)}: {failure}")
    log(f"variant data: {counts['rows_out']} question rows ({counts['rows_quarantined']} quarantined) "
        f"in {dst.url(prepare.PAIRS)}; residuals in {out.root}")
    prepare.run_residuals(dst, out, prepare.residual_config(params), list(GROUPS), out.options,
                          base=str(repo_root()), within=prepare.image_root(params, dst))
    failure = prepare.blocking_failure(prepare.check_residuals(out, list(GROUPS)))
    if failure:
        raise UserError(f"{out.root}: {failure}")
    return deep_merge(params, {"data": {"prepared_root": f"{folder}/prepared", "residuals_root": f"{folder}/residuals"}})


def run_variants(params: dict, seeds: list[int], variants: list[str], group: str,
                 log: Callable[[str], None] = lambda line: None, root: str = "runs/ablate") -> None:
    """Train every variant (models/ablation.py VARIANTS) for every seed with the same params, each
    through the same pretrain() and train() as the main job, tagged ablation=<group>."""
    from models.ablation import PARAMS_OVERLAYS, PRETRAIN_EPOCHS, VARIANTS
    from models.lifecycle.pretrain import pretrain
    from models.lifecycle.train import train

    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise UserError(f"--variants: unknown {unknown} (known: {list(VARIANTS)})")
    for seed in seeds:
        for name in variants:
            slug = name.replace("+", "p").replace(" ", "-")
            run_dir = f"{root}/{group}/{slug}-s{seed}"
            p = deep_merge(params, {"model": VARIANTS[name], "train": {"seed": seed, "output_dir": run_dir},
                                    "pretrain": {"epochs": PRETRAIN_EPOCHS.get(name, 0),
                                                 "output_dir": f"{run_dir}/pretrain"}})
            p = deep_merge(p, PARAMS_OVERLAYS.get(name, {}))
            log(f"ablation {group}: {name} seed {seed}")
            if "pairs" in PARAMS_OVERLAYS.get(name, {}):
                p = variant_data(p, f"{root}/{group}/{slug}-data", log)
            pretrain(p)  # writes only a `skipped` note for most variants
            train(p, f"ablate-{group}-{slug}-s{seed}", tags={"ablation": group, "variant": name, "seed": str(seed)})
