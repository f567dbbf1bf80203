"""`spotdiff summary [--since UNIX_TIME]`: the main job's closing table — per stage whether it ran
(or DVC found it up to date), its wall time, the rows it carried and its headline result, then
the champion. Read from the files the stages wrote and their journal notes (pipelines/journal.py);
it computes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipelines.commands.common import params_for, user_errors

MAX_JSON_BYTES = 1 << 20  # every file read here is a small report


def _json(path: str | Path) -> dict | None:
    from assets.params import resolve_path

    p = Path(resolve_path(str(path)))
    try:
        if p.is_file() and p.stat().st_size <= MAX_JSON_BYTES:
            return json.loads(p.read_text())
    except (OSError, ValueError):
        pass
    return None


def _quarantined(*counts: dict | None) -> str:
    known = [c for c in counts if c]
    return f"{sum(c['rows_quarantined'] for c in known):,} quarantined" if known else ""


def _synth(params: dict, d: dict, q: str):
    truth = _json(f"{d['embedded_root']}/ground_truth/config.json")
    return (f"{truth['subjects']:,} subjects", "rendered") if truth else ("", "observed")


def _ingest(params: dict, d: dict, q: str):
    images, questions = _json(f"{q}/mimic_images.counts.json"), _json(f"{q}/diffvqa_questions.counts.json")
    return (", ".join(f"{c['rows_out']:,} {what}" for c, what in ((images, "images"), (questions, "questions")) if c),
            _quarantined(images, questions))


def _pairs(params: dict, d: dict, q: str):
    pairs = _json(f"{q}/study_pairs.counts.json")
    return (f"{pairs['rows_out']:,} questions", _quarantined(pairs)) if pairs else None


def _residuals(params: dict, d: dict, q: str):
    groups = (_json(f"{d['residuals_root']}/manifest.json") or {}).get("groups", {})
    return ((f"{sum(g.get('rows_out', 0) for g in groups.values()):,} pairs, {len(groups)} groups",
             _quarantined(*groups.values())) if groups else None)


def _pretrain(params: dict, d: dict, q: str):
    pre = _json(f"{params['pretrain']['output_dir']}/pretrain.json")
    if not pre:
        return None
    return ("", f"val presence F1 {pre['val_presence_f1']:.3f}" if "val_presence_f1" in pre
            else f"skipped: {pre.get('skipped', 'off')}")


def _train(params: dict, d: dict, q: str):
    m = _json(f"{params['train']['output_dir']}/metrics.json")
    return (f"{m.get('steps', 0):,} steps", f"best epoch {m.get('best_epoch', '?')}") if m else None


def _evaluate(params: dict, d: dict, q: str):
    e = _json(params["evaluate"]["metrics_file"])
    if not e or "change_f1" not in e:
        return None
    ci = e.get("ci95", {}).get("change_f1")
    return (f"{int(e.get('n_all_types', e.get('n', 0))):,} test answers",
            f"change-F1 {e['change_f1']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            + f", parse rate {e.get('prediction_parse_rate', float('nan')):.3f}")


def _register(params: dict, d: dict, q: str):
    reg = _json(f"{params['registry']['output_dir']}/registered.json")
    return ("", f"{reg['name']} version {reg['version']} (candidate)") if reg else None


def _promote(params: dict, d: dict, q: str):
    champ = _json(f"{params['registry']['output_dir']}/champion.json")
    return ("", ("promoted: " if champ.get("promoted") else "kept: ") + str(champ.get("reason", ""))) if champ else None


FACTS = {"synth": _synth, "ingest": _ingest, "pairs": _pairs, "residuals": _residuals, "pretrain": _pretrain,
         "train": _train, "evaluate": _evaluate, "register": _register, "promote": _promote}


def stage_facts(params: dict) -> dict[str, tuple[str, str]]:
    """{stage: (rows, result)} from the outputs each stage leaves. A report of an unexpected
    shape (hand-edited, another version's) is said so in its row, not a traceback."""
    d = params["data"]
    q = f"{d['prepared_root']}/quarantine"
    facts: dict[str, tuple[str, str]] = {}
    for stage, read in FACTS.items():
        try:
            got = read(params, d, q)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            got = ("", "[yellow]output of an unexpected shape[/]")
        if got:
            facts[stage] = got
    return facts


def table(params: dict, since: float | None):
    from rich.table import Table

    from pipelines.journal import STAGES, read_notes

    notes, facts = read_notes(), stage_facts(params)
    t = Table(title="spotdiff main job", title_justify="left")
    for col in ("stage", "ran", "wall", "rows", "result"):
        t.add_column(col, overflow="fold")
    for stage in STAGES:
        n = notes.get(stage)
        ran = n is not None and (since is None or n["started"] >= since)
        status = ("ran" if n["ok"] else "[red]failed[/]") if ran else ("up to date" if n or stage in facts else "-")
        wall = f"{n['wall_s'] / 60:.1f} min" if ran and n["wall_s"] >= 60 else (f"{n['wall_s']:.0f} s" if ran else "")
        rows, result = facts.get(stage, ("", ""))
        t.add_row(stage, status, wall, rows, result)
    return t


def champion_line(params: dict) -> str:
    champ = _json(f"{params['registry']['output_dir']}/champion.json")
    if not champ or not champ.get("champion"):
        return "champion: none yet"
    return f"champion: models:/{champ['name']}@champion = version {champ['champion']}"


def register(app: typer.Typer) -> None:
    @app.command()
    def summary(
        since: float = typer.Option(None, help="unix time the job started: stages noted before it "
                                               "count as up to date (default: every note)"),
        profile: str = typer.Option(None, help="params.yaml profile (default: params' `profile`)"),
    ) -> None:
        """One table of the pipeline's stages (ran / up to date, wall time, rows, result) and the champion."""
        from rich.console import Console

        with user_errors():
            params = params_for(profile)
            console = Console(width=max(Console().width, 110))  # logs are not terminals: 80 by default
            console.print(table(params, since))
            console.print(champion_line(params))
