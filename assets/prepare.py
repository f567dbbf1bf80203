"""The data steps as whole units of work over storage roots: what the `spotdiff ingest|pairs|
residuals` commands, the DVC stages and the Dagster assets all call, so the three entry points
write the same files.

Layout of the prepared root (the output contract, docs/data.md):
    images.parquet  questions.parquet  pairs.parquet  quarantine.parquet
    quarantine/{asset}.parquet + quarantine/{asset}.counts.json   (one part per asset)
and of the residuals root: group=p1X/{shard-*.parquet, manifest.json, quarantine.parquet} and
manifest.json over all groups."""

from __future__ import annotations

from typing import Callable

import polars as pl

from assets import quarantine as q
from assets.finding_states import finding_targets
from assets.ingest import ingest_images, ingest_questions
from assets.pairs import build_pairs, read_mimic_all
from assets.params import ParamsError, UserError, resolve_path, typed
from assets.registration import RegistrationConfig
from assets.residuals import GroupResult, ResidualConfig, materialize_group, write_root_manifest
from assets.storage import Storage

IMAGES, QUESTIONS, PAIRS, QUARANTINE = "images.parquet", "questions.parquet", "pairs.parquet", "quarantine.parquet"
# Per-pair finding states (assets/finding_states.py): the encoder's extra supervision.
FINDING_TARGETS = "finding_targets.parquet"
TABLE_ASSETS = ("mimic_images", "diffvqa_questions", "study_pairs")


def _part(asset: str, quarantined: pl.DataFrame, counts: dict) -> dict:
    return {f"quarantine/{asset}.parquet": quarantined, f"quarantine/{asset}.counts.json": counts}


def run_ingest_images(mimic: Storage, prepared: Storage, check_files: bool = True) -> tuple[pl.DataFrame, dict]:
    res = ingest_images(mimic, check_files=check_files)
    prepared.write_set({IMAGES: res.table, **_part("mimic_images", res.quarantine, res.counts)})
    return res.table, res.counts


def run_ingest_questions(diffvqa: Storage, prepared: Storage, question_types) -> tuple[pl.DataFrame, dict]:
    res = ingest_questions(diffvqa, question_types)
    prepared.write_set({QUESTIONS: res.table, **_part("diffvqa_questions", res.quarantine, res.counts)})
    return res.table, res.counts


def ingest_set(mimic: Storage, diffvqa: Storage, check_files: bool, question_types,
               progress: Callable[[], None] | None = None) -> tuple[dict, dict, dict]:
    """The ingest step's files, in memory: ({name: table}, image counts, question counts)."""
    images = ingest_images(mimic, check_files=check_files)
    if progress:
        progress()
    questions = ingest_questions(diffvqa, question_types)
    if progress:
        progress()
    files = {IMAGES: images.table, QUESTIONS: questions.table,
             **_part("mimic_images", images.quarantine, images.counts),
             **_part("diffvqa_questions", questions.quarantine, questions.counts)}
    return files, images.counts, questions.counts


def run_ingest(mimic: Storage, diffvqa: Storage, prepared: Storage, check_files: bool, question_types,
               progress: Callable[[], None] | None = None) -> tuple[dict, dict]:
    """Both tables read first, then written as one set: a question file that fails to read
    leaves the previous images.parquet too, not a new one beside old questions."""
    files, c_images, c_questions = ingest_set(mimic, diffvqa, check_files, question_types, progress)
    prepared.write_set(files)
    return c_images, c_questions


def run_ingest_and_pairs(mimic: Storage, diffvqa: Storage, prepared: Storage, check_files: bool,
                         question_types, progress: Callable[[], None] | None = None,
                         **pairs_kwargs) -> tuple[dict, dict, dict]:
    """Ingest and pairing written as one set (`spotdiff pairs` without --from-ingest): a pairing
    that fails leaves the previous tables whole, not new images and questions beside old pairs.
    Returns the image, question and pair counts."""
    files, c_images, c_questions = ingest_set(mimic, diffvqa, check_files, question_types, progress)
    paired, c_pairs = pairs_set(files[QUESTIONS], files[IMAGES], diffvqa, **pairs_kwargs)
    prepared.write_set({**files, **paired})
    return c_images, c_questions, c_pairs


def pairs_options(params: dict) -> dict:
    """run_pairs' keyword arguments from params' `pairs` section (one reading for every entry point)."""
    p = params["pairs"]
    return {"resplit_by_subject": bool(p["resplit_by_subject"]),
            "single_image_reference": p["single_image_reference"]}


def pairs_set(questions: pl.DataFrame, images: pl.DataFrame, diffvqa: Storage, resplit_by_subject: bool = False,
              single_image_reference: str = "previous") -> tuple[dict, dict]:
    """The pairing step's files, in memory: ({name: table}, counts). single_image_reference
    "control": single-image questions are paired with a matched normal study of another patient
    (assets/controls.py); the rows without one are quarantined."""
    from assets.controls import CONTROL, REFERENCE_MODES, with_controls

    if single_image_reference not in REFERENCE_MODES:
        raise UserError(f"params.yaml: pairs.single_image_reference must be one of {REFERENCE_MODES}, "
                        f"got {single_image_reference!r}")
    res = build_pairs(questions, images, read_mimic_all(diffvqa), resplit_by_subject)
    table, quarantined, counts = res.table, res.quarantine, dict(res.counts)
    targets = finding_targets(table)
    if single_image_reference == CONTROL:
        table, extra, n_controls = with_controls(table, targets)
        quarantined = pl.concat([quarantined, extra]) if extra.height else quarantined
        # both sieves checked their own accounting, so rows in = out + quarantined still holds
        counts.update(rows_out=table.height, rows_quarantined=quarantined.height, controls=n_controls)
        targets = finding_targets(table)
    return {PAIRS: table, FINDING_TARGETS: targets, **_part("study_pairs", quarantined, counts)}, counts


def run_pairs(prepared: Storage, diffvqa: Storage, resplit_by_subject: bool = False,
              single_image_reference: str = "previous") -> tuple[pl.DataFrame, dict]:
    """Pairs from the ingested tables in `prepared`, written there as one set (see pairs_set)."""
    files, counts = pairs_set(prepared.read_parquet(QUESTIONS), prepared.read_parquet(IMAGES), diffvqa,
                              resplit_by_subject, single_image_reference)
    prepared.write_set(files)
    return files[PAIRS], counts


# ---- validation: the same GX suites for every entry point ----------------------------------
# Dagster runs these as blocking asset checks; the CLI and the DVC stages run them after the step
# and stop (exit 2) on a failed blocking suite, so `dvc repro` cannot train on data Dagster
# would have stopped. Returns (blocking, warning) suite results.

def blocking_failure(checked: tuple[list, list]) -> str | None:
    """One line for the first failed blocking suite of a check_* result, or None: what every
    entry point stops with."""
    failed = [r for r in checked[0] if not r.success]
    if not failed:
        return None
    f = failed[0].failures[:1]
    return (f"GX suite {failed[0].name} failed: {f[0]['type']} on {f[0]['columns']} "
            f"({f[0]['unexpected_count']} unexpected, e.g. {f[0]['examples']})" if f else
            f"GX suite {failed[0].name} failed")


def check_ingest(prepared: Storage, mimic: Storage) -> tuple[list, list]:
    """Every image file present is checked here whatever data.check_files says: that flag only
    moves the missing ones from the ingestion quarantine to this blocking check."""
    from assets import validation

    return [validation.validate_images(prepared.read_parquet(IMAGES), mimic.list_files("files")),
            validation.validate_questions(prepared.read_parquet(QUESTIONS))], []


def check_pairs(prepared: Storage) -> tuple[list, list]:
    """study_pairs and control_pairs (vacuous without control references) must hold;
    subject-disjoint splits only warn (the official v1.0.1 split is
    not subject-disjoint on real data: pairs.resplit_by_subject fixes that)."""
    from assets import validation

    pairs = prepared.read_parquet(PAIRS)
    return ([validation.validate_pairs(pairs),
             validation.validate_control_pairs(pairs, prepared.read_parquet(FINDING_TARGETS))],
            [validation.validate_subject_disjoint(pairs)])


def residual_stats(out: Storage, groups: list[str], n_previews: int = 0) -> tuple[pl.DataFrame, list]:
    """Per-pair residual stats of the given groups, read back from their shards (not from memory:
    the check is a check of the files training will stream), and the first n_previews records
    for a picture; groups never written are skipped."""
    from assets.residuals import MANIFEST_NAME, STATS_SCHEMA, group_dir, read_group_back

    stats, previews = [], []
    for g in groups:
        if out.exists(f"{group_dir(g)}/{MANIFEST_NAME}"):
            s, p = read_group_back(out, g, n_previews=n_previews - len(previews))
            stats.append(s)
            previews += p
    return (pl.concat(stats) if stats else pl.DataFrame(schema=STATS_SCHEMA)), previews


def check_residuals(out: Storage, groups: list[str]) -> tuple[list, list]:
    """Every residual of the given groups finite and in [-1, 1], read back from the shards: one
    suite over all groups, as Dagster's residuals_finite_in_range check runs it."""
    from assets import validation

    stats, _ = residual_stats(out, groups)
    return ([validation.validate_residual_stats(stats)] if stats.height else []), []


def collect_quarantine(prepared: Storage) -> tuple[pl.DataFrame, dict[str, dict]]:
    """quarantine.parquet: every table asset's dropped rows, in asset order, plus their counts."""
    parts, counts = [], {}
    for asset in TABLE_ASSETS:
        if prepared.exists("quarantine", f"{asset}.parquet"):
            parts.append(prepared.read_parquet("quarantine", f"{asset}.parquet"))
            counts[asset] = prepared.read_json("quarantine", f"{asset}.counts.json")
    table = pl.concat(parts) if parts else q.empty()
    prepared.write_parquet(table, QUARANTINE)
    return table, counts


def residual_config(params: dict) -> ResidualConfig:
    """params.yaml's `residuals` section, each value checked for its type before any work."""
    r = params["residuals"]
    get = lambda key, kind: typed(r, "residuals", key, kind)  # noqa: E731
    iters = r["register_iters"]
    if not isinstance(iters, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in iters):
        raise ParamsError(f"params.yaml: residuals.register_iters = {iters!r} is not a list of int")
    return ResidualConfig(image_size=get("image_size", int), register=get("register", bool),
                          shard_max_mb=get("shard_max_mb", float), workers=get("workers", int),
                          batch_size=get("batch_size", int), low_pct=get("low_pct", float),
                          high_pct=get("high_pct", float),
                          registration=RegistrationConfig(iters=tuple(iters)))


def image_root(params: dict, prepared: Storage) -> str | None:
    """The folder every image read must resolve inside: the MIMIC root the images of `prepared`
    were ingested from (images.parquet's path minus its rel_path), so a symlink planted under
    files/ cannot make the pipeline read (and store in shards) a file from elsewhere. None
    (anywhere) when data.links_may_leave_root allows it, e.g. files/ linked to another disk; for
    object stores, which have no links; and when no images table is there to say."""
    if params["data"].get("links_may_leave_root") or not prepared.exists(IMAGES):
        return None
    first = prepared.scan_parquet(IMAGES).select("path", "rel_path").head(1).collect()
    if not first.height:
        return None
    path, rel = first.row(0)
    root = path[: len(path) - len(rel)].rstrip("/") if path.endswith(rel) else None
    if root is None or "://" in root:
        return None
    return resolve_path(root or ".")


def run_residuals(prepared: Storage, out: Storage, cfg: ResidualConfig, groups: list[str],
                  options: dict | None = None, progress: Callable[[int], None] | None = None,
                  base: str | None = None, within: str | None = None) -> tuple[list[GroupResult], dict]:
    """base: what relative image paths in pairs.parquet are relative to (the repo root, as the
    data roots in params.yaml are); None: the working directory. within: see image_root."""
    pairs = prepared.read_parquet(PAIRS)
    results = [materialize_group(pairs, g, out, cfg, pairs_source=prepared.url(PAIRS), options=options,
                                 progress=progress, base=base, within=within) for g in groups]
    return results, write_root_manifest(out, cfg.image_size)


def residual_summary(results: list[GroupResult]) -> dict:
    """What a residuals run did, as every entry point reports it: pairs in = written +
    quarantined over the groups that have pairs, and which of them were recomputed or kept."""
    ran = [r for r in results if r.manifest["rows_in"]]
    return {**{k: sum(r.manifest[k] for r in ran) for k in ("rows_in", "rows_out", "rows_quarantined")},
            "recomputed": sorted(r.group for r in ran if not r.skipped),
            "up_to_date": sorted(r.group for r in ran if r.skipped)}


def count_pairs(prepared: Storage, groups: list[str]) -> int:
    return prepared.scan_parquet(PAIRS).filter(pl.col("group").is_in(groups)).select(
        pl.col("pair_id").n_unique()).collect().item()
