"""`spotdiff register`, `spotdiff promote`, `spotdiff ask`, `spotdiff serve`: the model registry
and answering questions. Thin adapters over models.lifecycle.registry, whose `register` /
`promote` also back the Dagster assets registered_model / champion_model and the DVC stages."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from models.lifecycle import registry as model_registry
from models.lifecycle.runs import tracking_uri
from pipelines.commands.common import UserError, params_for, user_errors

ProfileOpt = typer.Option(None, help="params.yaml profile (default: params' `profile`)")
SummaryOpt = typer.Option(False, "--summary", help="one line, not the JSON (the main job's terminal)")


def _check_output_file(option: str, path: Path) -> None:
    """A file the command will write must be writable as a file: found out only at the end,
    it was a traceback after the work (the answer) was done."""
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory; give a file name, e.g. {path / 'heatmap.png'}")
    if not path.parent.is_dir():
        raise UserError(f"{option} {path}: folder {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise UserError(f"{option} {path}: exists and is not a regular file")


def register(app: typer.Typer) -> None:
    @app.command("register")
    def register_cmd(
        metrics: Path = typer.Option(None, help="evaluation scores added as test.* tags "
                                                "(default: evaluate.metrics_file)"),
        profile: str = ProfileOpt,
        summary: bool = SummaryOpt,
    ) -> None:
        """Log the trained model as the MLflow pyfunc, register it (alias `candidate`), export it."""
        with user_errors():
            reg = model_registry.register(params_for(profile), metrics)
        typer.echo(f"registered {reg.model_uri} (alias candidate), MLflow run {reg.run_id}" if summary
                   else json.dumps(asdict(reg), indent=2))

    @app.command("promote")
    def promote_cmd(profile: str = ProfileOpt, summary: bool = SummaryOpt) -> None:
        """Move alias `champion` to the candidate if the promotion rule says so (idempotent)."""
        with user_errors():
            _, decision = model_registry.promote(params_for(profile))
        typer.echo(f"{'promoted' if decision['promoted'] else 'not promoted'}: {decision['reason']}" if summary
                   else json.dumps(decision, indent=2))

    @app.command()
    def ask(
        question: str = typer.Argument("what has changed compared to the reference image?"),
        main: Path = typer.Option(..., "--main", help="main (current) image: JPEG/PNG"),
        ref: Path = typer.Option(..., "--ref", help="reference (earlier) image: JPEG/PNG"),
        model_uri: str = typer.Option(None, help="default: models:/<registry.model_name>@champion"),
        heatmap: Path = typer.Option(None, help="also write pair, residual and Grad-CAM here (PNG)"),
        profile: str = ProfileOpt,
    ) -> None:
        """Answer a question about a main/reference pair with the champion model."""
        from models.answer import InputError, answer_rows

        with user_errors():
            params = params_for(profile)
            for p in (main, ref):  # its kind and size are checked where it is read (image_bytes)
                if not os.path.lexists(p):
                    raise UserError(f"{p}: no such file")
            if heatmap is not None:  # checked before the model answers, not after
                _check_output_file("--heatmap", heatmap)
            uri = model_uri or f"models:/{params['registry']['model_name']}@champion"
            answerer = model_registry.load_answerer(uri, tracking_uri(params))
            try:  # keep_inputs: the heatmap reuses the pair as decoded and registered for the answer
                out = answer_rows(answerer, [{"main_image": str(main), "ref_image": str(ref),
                                              "question": question}], allow_paths=True,
                                  keep_inputs=heatmap is not None)
            except InputError as e:
                raise UserError(str(e)) from e
            answer = out[0]["answer"]
            typer.echo(answer)
            if heatmap is not None:
                from models.pictures import ask_heatmap

                ask_heatmap(answerer, out[0]["inputs"], question, answer, heatmap)
                typer.echo(f"heatmap: {heatmap}", err=True)

    @app.command()
    def serve(
        model_uri: str = typer.Option(None, help="default: models:/<registry.model_name>@champion"),
        host: str = typer.Option("127.0.0.1", help="bind address; 127.0.0.1 keeps it off the network"),
        port: int = typer.Option(5001),
        profile: str = ProfileOpt,
    ) -> None:
        """Serve the champion over HTTP (MLflow's scoring app: POST /invocations), localhost by default."""
        with user_errors():
            params = params_for(profile)
            uri = model_uri or f"models:/{params['registry']['model_name']}@champion"
            folder = model_registry.checked_serving_folder(uri, tracking_uri(params))
        from models.serving_app import MODEL_FOLDER_ENV

        # MLflow's scoring app (what `mlflow models serve` runs) behind spotdiff's body bound and
        # one-line error bodies (models/serving_app.py), on the folder checked above
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(params), MODEL_FOLDER_ENV: str(folder)}
        os.execvpe(sys.executable, [sys.executable, "-m", "uvicorn", "models.serving_app:app",
                                    "--host", host, "--port", str(port)], env)
