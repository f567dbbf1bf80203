"""`spotdiff synth`: generate the embedded dataset (MIMIC-CXR-JPG v2.0.0 + Medical-Diff-VQA
layout, rendered from a real chest CT). Unset options come from params.yaml's `synth` section of
the chosen profile. Domain code: assets/synth/generate.py."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipelines.commands.common import UserError, params_for, user_errors


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    out: Path = typer.Option(..., "--out", help="Output root (gets mimic-cxr-jpg/, medical-diff-vqa/, ground_truth/)."),
    subjects: Optional[int] = typer.Option(None, "--subjects", help="Number of subjects (default: params.yaml)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed: same seed and params, same bytes."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="JPEG side in pixels."),
    profile: Optional[str] = typer.Option(None, "--profile", help="params.yaml profile: smoke or default."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: params.yaml)."),
) -> None:
    """Render the embedded chest X-ray dataset with exact ground truth."""
    with user_errors():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from assets.synth.generate import generate
        from assets.synth.plan import SynthConfig

        p = params_for(profile)["synth"]
        try:
            cfg = SynthConfig.from_section(p, subjects=subjects, seed=seed, image_size=image_size, workers=workers)
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"synth options: {e}") from e
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a directory")
        with Progress(TextColumn("rendering subjects"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            task = bar.add_task("synth", total=cfg.subjects)
            summary = generate(out, cfg, progress=lambda n: bar.advance(task, n))
        typer.echo(
            f"wrote {summary['subjects']} subjects, {summary['studies']} studies, {summary['images']} images "
            f"({summary['frontal_images']} frontal), {summary['questions']} questions "
            f"({summary['difference_questions']} difference) to {out} in {summary['seconds']} s"
        )
