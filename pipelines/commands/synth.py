"""`spotdiff synth`: the embedded dataset (MIMIC-CXR-JPG v2.0.0 + Medical-Diff-VQA layout,
rendered from a real chest CT). Without --out it is the pipeline's raw-input step
(assets/embedded.py, the same call as the DVC stage `synth` and the Dagster asset
`embedded_dataset`): rendered into data.embedded_root, or only observed when params' data roots
point at a download. With --out it renders a dataset there (options override params' `synth`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipelines.commands.common import UserError, params_for, user_errors


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def _summary_line(summary: dict, out) -> str:
    added = summary["subjects"] - summary["rendered_subjects"]
    kept = f" ({added} already there, kept)" if added else ""
    return (f"wrote {summary['subjects']} subjects{kept}, {summary['studies']} studies, {summary['images']} images "
            f"({summary['frontal_images']} frontal), {summary['questions']} questions "
            f"({summary['difference_questions']} difference) to {out} in {summary['seconds']} s")


def synth(
    out: Optional[Path] = typer.Option(None, "--out", help="Output root (gets mimic-cxr-jpg/, medical-diff-vqa/, "
                                                           "ground_truth/); default: data.embedded_root, "
                                                           "rendered only when the data roots point into it"),
    subjects: Optional[int] = typer.Option(None, "--subjects", help="Number of subjects (default: params.yaml)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed: same seed and params, same bytes."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="JPEG side in pixels."),
    profile: Optional[str] = typer.Option(None, "--profile", help="params.yaml profile: smoke or default."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: params.yaml)."),
    added_subjects: Optional[int] = typer.Option(None, "--added-subjects",
                                                 help="Subjects arriving after the first --subjects: "
                                                      "only those not yet in --out are rendered."),
) -> None:
    """Render the embedded chest X-ray dataset with exact ground truth (or observe a download)."""
    with user_errors():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from assets.embedded import materialize_embedded, renders_embedded, synth_config

        params = params_for(profile)
        options = {"subjects": subjects, "seed": seed, "image_size": image_size, "workers": workers,
                   "added_subjects": added_subjects}
        if out is None and any(v is not None for v in options.values()):
            raise UserError("--subjects/--seed/--image-size/--workers/--added-subjects need --out; the "
                            "pipeline's dataset takes params.yaml's synth section (synth.added_subjects)")
        cfg = synth_config(params, **options) if out is not None else None  # checked before any bar
        if out is not None and out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a directory")
        if out is None and not renders_embedded(params):
            report = materialize_embedded(params)  # a download: observed, nothing to render
        else:
            with Progress(TextColumn("rendering subjects"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn()) as bar:
                task = bar.add_task("synth", total=None)
                advance = lambda n: bar.advance(task, n)  # noqa: E731
                if out is None:
                    report = materialize_embedded(params, advance, on_total=lambda n: bar.update(task, total=n))
                else:
                    from assets.synth.generate import generate

                    report = {"mode": "rendered", **generate(out, cfg, progress=advance,
                                                              on_total=lambda n: bar.update(task, total=n))}
        out = out or params["data"]["embedded_root"]
        if report["mode"] == "observed":
            typer.echo(f"observed the download at {report['mimic_root']} and {report['diffvqa_root']} "
                       f"(nothing rendered): {sum(len(t) for t in report['tables'].values())} tables "
                       f"fingerprinted in {out}/observed.json")
        else:
            typer.echo(_summary_line(report, out))
