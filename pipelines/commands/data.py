"""`spotdiff ingest`, `spotdiff pairs`, `spotdiff residuals`: the data steps from the command line
(and from the DVC stages in dvc.yaml). Thin adapters over assets.prepare; the Dagster assets in
pipelines/defs/data.py call the same functions.

    spotdiff ingest  [--mimic-root DIR] [--diffvqa-root DIR] [--out DIR] [--profile smoke]
    spotdiff pairs   [--mimic-root DIR] [--diffvqa-root DIR] [--out DIR] [--from-ingest]
    spotdiff residuals [--prepared DIR] [--out DIR] [--group p10 ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pipelines.commands.common import UserError, err_console, params_for, user_errors

ProfileOpt = typer.Option(None, "--profile", help="params.yaml profile (smoke | default)")


def _flag_path(value: str) -> str:
    """A folder given on the command line is relative to where the command runs; made absolute
    here, the image paths the tables record resolve wherever the next step runs. (Roots from
    params.yaml stay relative to the repo root, so the tables of a clone are portable.)"""
    return value if "://" in value else str(Path(value).resolve())


def _params(profile, mimic_root=None, diffvqa_root=None, out=None) -> dict:
    """params for ingest/pairs. Run from another folder than the repo root ($SPOTDIFF_PARAMS), the
    relative roots of params.yaml are made absolute: they name the repo's folders, and the image
    paths the tables record then resolve wherever the next step runs."""
    import os

    from assets.params import repo_root, resolve_path

    data = {k: _flag_path(v) for k, v in (("mimic_root", mimic_root), ("diffvqa_root", diffvqa_root),
                                          ("prepared_root", out)) if v}
    p = params_for(profile, {"data": data} if data else None)
    if Path.cwd().resolve() != repo_root():
        for key in ("mimic_root", "diffvqa_root", "prepared_root"):
            if not os.path.isabs(p["data"][key]) and "://" not in p["data"][key]:
                p["data"][key] = resolve_path(p["data"][key])
    return p


def gx_gate(checked: tuple[list, list]) -> None:
    """The GX suites Dagster runs as asset checks, here after the CLI / DVC step: a failed
    blocking suite stops the command (exit 2) as Dagster's blocking check stops the run."""
    from assets import prepare

    blocking, warnings = checked
    for r in blocking + warnings:
        s = r.statistics
        err_console.print(f"GX {r.name}: {'passed' if r.success else 'FAILED'} "
                          f"({s.get('successful_expectations')}/{s.get('evaluated_expectations')})")
    for r in warnings:
        if not r.success:
            err_console.print(f"[yellow]warning:[/] GX {r.name} failed (not blocking): {r.failures[:1]}")
    failure = prepare.blocking_failure(checked)
    if failure:
        raise UserError(failure)


def _report(name: str, counts: dict) -> None:
    extra = "".join(f", {k} {v}" for k, v in counts.items() if k not in ("rows_in", "rows_out", "rows_quarantined"))
    err_console.print(f"{name}: {counts['rows_in']} in = {counts['rows_out']} out + "
                      f"{counts['rows_quarantined']} quarantined{extra}")


def _ingest(p: dict, with_pairs: bool = False):
    """`spotdiff ingest`, or with_pairs (`spotdiff pairs` without --from-ingest) ingestion and
    pairing written as one set, so a failed pairing leaves the previous tables whole."""
    from rich.progress import Progress

    from assets import prepare
    from assets.params import storage_for

    d = p["data"]
    prepared, mimic, diffvqa = (storage_for(d[k]) for k in ("prepared_root", "mimic_root", "diffvqa_root"))
    args = (mimic, diffvqa, prepared, bool(d["check_files"]), p["pairs"]["question_types"])
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("ingest", total=2)
        # a SchemaError (a table that cannot be read) is one line through user_errors
        if with_pairs:
            c1, c2, c3 = prepare.run_ingest_and_pairs(*args, progress=lambda: bar.advance(task),
                                                      **prepare.pairs_options(p))
        else:
            c1, c2 = prepare.run_ingest(*args, progress=lambda: bar.advance(task))
    _report("mimic_images", c1)
    _report("diffvqa_questions", c2)
    gx_gate(prepare.check_ingest(prepared, mimic))
    if with_pairs:
        _pairs_written(p, c3)


def _pairs(p: dict):
    from assets import prepare
    from assets.params import storage_for

    d = p["data"]
    prepared = storage_for(d["prepared_root"])
    for f in (prepare.IMAGES, prepare.QUESTIONS):
        if not prepared.exists(f):
            raise UserError(f"{prepared.url(f)}: not found; run `spotdiff ingest` first or drop --from-ingest")
    _, c = prepare.run_pairs(prepared, storage_for(d["diffvqa_root"]), **prepare.pairs_options(p))
    _pairs_written(p, c)


def _pairs_written(p: dict, counts: dict):
    from assets import prepare
    from assets.params import storage_for

    prepared = storage_for(p["data"]["prepared_root"])
    _report("study_pairs", counts)
    table, _ = prepare.collect_quarantine(prepared)
    err_console.print(f"wrote {prepared.url(prepare.PAIRS)} and {prepared.url(prepare.QUARANTINE)} ({table.height} quarantined rows)")
    gx_gate(prepare.check_pairs(prepared))


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        mimic_root: Optional[str] = typer.Option(None, help="MIMIC-CXR-JPG v2.0.0 root (default: params data.mimic_root)"),
        diffvqa_root: Optional[str] = typer.Option(None, help="Medical-Diff-VQA folder (default: params data.diffvqa_root)"),
        out: Optional[str] = typer.Option(None, help="prepared root (default: params data.prepared_root)"),
        profile: Optional[str] = ProfileOpt,
    ) -> None:
        """Ingest the MIMIC tables and the Diff-VQA questions: images.parquet, questions.parquet."""
        import pipelines.env  # noqa: F401

        with user_errors():
            _ingest(_params(profile, mimic_root, diffvqa_root, out))

    @app.command()
    def pairs(
        mimic_root: Optional[str] = typer.Option(None, help="MIMIC-CXR-JPG v2.0.0 root"),
        diffvqa_root: Optional[str] = typer.Option(None, help="Medical-Diff-VQA folder"),
        out: Optional[str] = typer.Option(None, help="prepared root: pairs.parquet + quarantine.parquet land here"),
        from_ingest: bool = typer.Option(False, "--from-ingest", help="reuse images/questions.parquet already in --out"),
        profile: Optional[str] = ProfileOpt,
    ) -> None:
        """Main/reference pairs, one row per question: pairs.parquet and quarantine.parquet."""
        import pipelines.env  # noqa: F401

        with user_errors():
            p = _params(profile, mimic_root, diffvqa_root, out)
            if from_ingest:
                _pairs(p)
            else:
                _ingest(p, with_pairs=True)

    @app.command()
    def residuals(
        prepared: Optional[str] = typer.Option(None, help="folder with pairs.parquet (default: params data.prepared_root)"),
        out: Optional[str] = typer.Option(None, help="residuals root (default: params data.residuals_root)"),
        group: Optional[List[str]] = typer.Option(None, "--group", help="MIMIC group(s) p10..p19 (default: all)"),
        profile: Optional[str] = ProfileOpt,
    ) -> None:
        """Preprocess, register and subtract every pair; write residual shards + manifest."""
        import pipelines.env  # noqa: F401

        with user_errors():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from assets import prepare
            from assets.residuals import GROUPS, group_dir
            from assets.params import repo_root
            from assets.params import storage_for
            from assets.prepare import residual_config

            p = params_for(profile)
            from assets.params import resolve_path

            pre = storage_for(_flag_path(prepared) if prepared else resolve_path(p["data"]["prepared_root"]))
            dest = storage_for(_flag_path(out) if out else resolve_path(p["data"]["residuals_root"]))
            groups = list(group) if group else list(GROUPS)
            bad = [g for g in groups if g not in GROUPS]
            if bad:
                raise UserError(f"--group {bad[0]!r}: not one of {', '.join(GROUPS)}")
            if not pre.exists(prepare.PAIRS):
                raise UserError(f"{pre.url(prepare.PAIRS)}: not found; run `spotdiff pairs` first")
            total = prepare.count_pairs(pre, groups)
            cols = (TextColumn("residuals"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*cols, console=err_console) as bar:
                task = bar.add_task("residuals", total=total)
                results, manifest = prepare.run_residuals(pre, dest, residual_config(p), groups, dest.options,
                                                          progress=lambda n: bar.advance(task, n),
                                                          base=str(repo_root()), within=prepare.image_root(p, pre))
            done = prepare.residual_summary(results)
            n_groups = len(done["recomputed"]) + len(done["up_to_date"])
            err_console.print(f"residual_images: {done['rows_in']} pairs = {done['rows_out']} written + "
                              f"{done['rows_quarantined']} quarantined, {n_groups} groups "
                              f"({len(done['up_to_date'])} up to date)")
            for r in results:
                if r.manifest["rows_quarantined"]:
                    err_console.print(f"  {r.group}: {r.manifest['rows_quarantined']} quarantined "
                                      f"(see {dest.url(group_dir(r.group), 'quarantine.parquet')})")
            err_console.print(f"wrote {dest.url('manifest.json')}: {len(manifest['shards'])} shards")
            gx_gate(prepare.check_residuals(dest, groups))
