"""`spotdiff ablate [--profile P] [--seeds 0 1] [--variants baseline ...] [--report-only --group G]`

Trains every ablation variant (models/ablation.py: baseline, +residual, +residual+RFA,
registered vs naive residual) with the same train params and seeds through the same `launch()`
as `spotdiff train`, tags the MLflow runs `ablation=<group>`, then writes docs/results.md and its
bar chart from those runs (so the page can be rebuilt from MLflow alone)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import typer

from pipelines.commands.common import UserError, params_for, user_errors
from pipelines.params import deep_merge, repo_root

NOTES_MARKER = "<!-- analysis: hand-written, kept when the page is regenerated -->"


def write_report(params: dict, group: str, out: Path) -> Path:
    from models.ablation import VARIANTS, bar_chart, results_markdown, summarize
    from models.tracking import tagged_runs
    from pipelines.commands.registry import prior_scores
    from pipelines.commands.train import tracking_uri, training_question_types

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


def register(app: typer.Typer) -> None:
    @app.command()
    def ablate(
        profile: str = typer.Option(None, help="params.yaml profile"),
        seeds: list[int] = typer.Option([0], "--seeds", help="repeatable: --seeds 0 --seeds 1"),
        variants: list[str] = typer.Option([], "--variants", help="subset of the variants (default: all)"),
        set_: list[str] = typer.Option([], "--set", help="override for every variant, e.g. train.epochs=3"),
        group: str = typer.Option(None, help="ablation group id (default: a new timestamp)"),
        report_only: bool = typer.Option(False, help="only rebuild the report from MLflow"),
        out: Path = typer.Option(Path("docs/results.md"), help="the results page to write"),
    ) -> None:
        """Train the paper's ablation variants and write docs/results.md from their MLflow runs."""
        from models.ablation import PRETRAIN_EPOCHS, VARIANTS
        from pipelines.commands.pretrain import pretrain_from_params
        from pipelines.commands.train import launch, parse_sets

        with user_errors():
            params = params_for(profile, parse_sets(set_) or None)
            group = group or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            chosen = variants or list(VARIANTS)
            unknown = sorted(set(chosen) - set(VARIANTS))
            if unknown:
                raise UserError(f"--variants: unknown {unknown} (known: {list(VARIANTS)})")
            if not report_only:
                for seed in seeds:
                    for name in chosen:
                        slug = name.replace("+", "p").replace(" ", "-")
                        run_dir = f"runs/ablate/{group}/{slug}-s{seed}"
                        p = deep_merge(params, {"model": VARIANTS[name], "train": {
                            "seed": seed, "output_dir": run_dir}, "pretrain": {
                            "epochs": PRETRAIN_EPOCHS.get(name, 0), "output_dir": f"{run_dir}/pretrain"}})
                        typer.echo(f"ablation {group}: {name} seed {seed}", err=True)
                        pretrain_from_params(p)  # writes only a `skipped` note for most variants
                        launch(p, f"ablate-{group}-{slug}-s{seed}",
                               tags={"ablation": group, "variant": name, "seed": str(seed)})
            path = write_report(params, group, repo_root() / out)
        typer.echo(str(path))
