"""Dagster assets of the data half: thin adapters over assets.prepare (the same functions the
`spotdiff` CLI and the DVC stages call), with their asset checks.

                      ┌─ mimic_images ──────┐
    embedded_dataset ─┤                     ├─ study_pairs ─┬─ quarantine
                      └─ diffvqa_questions ─┘               └─ residual_images
                                                                 (partitioned p10..p19)

embedded_dataset renders the embedded dataset when the data roots point into it (a fresh
clone's "Materialize all" has data) and only fingerprints a user's download otherwise.

Each asset writes its own files under params data.prepared_root / data.residuals_root (no IO
manager: the files are the contract training and DVC read) and reports row counts, schema, a
preview, the quarantine accounting and a data version that is the content hash of its output.
Blocking checks (GX suites) stop downstream assets from running on bad data."""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.

import base64
import hashlib

import dagster as dg
import polars as pl

from assets import prepare, validation
from assets.quarantine import reason_counts
from assets.residuals import GROUPS, preview_grid
from assets.shards import SHARD_SCHEMA
from assets.storage import frame_hash
from assets.embedded import data_version as embedded_version
from assets.embedded import materialize_embedded
from assets.params import repo_root, storage_for
from assets.prepare import residual_config
from pipelines.defs.failures import one_line_failures
from pipelines.resources import GreatExpectationsResource, SpotdiffParams
from pipelines.defs.automation import FOLLOW

GROUP = "data"
mimic_groups = dg.StaticPartitionsDefinition(list(GROUPS))


def _preview_md(df: pl.DataFrame, n: int = 5, width: int = 40) -> str:
    cols = [c for c in df.columns if not c.startswith("_")][:8]
    rows = [[str(v)[:width] for v in r] for r in df.select(cols).head(n).iter_rows()]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _schema(df: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(n, str(t)) for n, t in df.schema.items() if not n.startswith("_")])


# The shard contract of assets/shards.py, shown on residual_images.
SHARD_TABLE_SCHEMA = dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in SHARD_SCHEMA])


def _table_result(df: pl.DataFrame, counts: dict, path: str, quarantined: pl.DataFrame | None = None) -> dg.MaterializeResult:
    meta = {
        "dagster/row_count": df.height,
        "dagster/column_schema": _schema(df),
        "path": dg.MetadataValue.path(path),
        "preview": dg.MetadataValue.md(_preview_md(df)),
        **{k: v for k, v in counts.items()},
    }
    if quarantined is not None:
        meta["quarantine_reasons"] = dg.MetadataValue.json(reason_counts(quarantined))
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(frame_hash(df)))


def _quarantine_part(params: SpotdiffParams, asset: str) -> pl.DataFrame:
    return params.storage("prepared_root").read_parquet("quarantine", f"{asset}.parquet")


@dg.asset(group_name=GROUP, kinds={"python"},
          description="The raw input: the embedded dataset rendered into data.embedded_root, or the "
                      "MIMIC-CXR-JPG / Medical-Diff-VQA download the data roots name, observed (fingerprinted).")
@one_line_failures
def embedded_dataset(context: dg.AssetExecutionContext, params: SpotdiffParams) -> dg.MaterializeResult:
    report = materialize_embedded(params.params())
    tables = report.pop("tables")
    meta = {k: (v if isinstance(v, (int, float, str)) else dg.MetadataValue.json(v)) for k, v in report.items()}
    meta["tables"] = dg.MetadataValue.json(tables)
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(embedded_version({"tables": tables})))


@dg.asset(group_name=GROUP, kinds={"polars", "parquet"}, deps=[embedded_dataset],
          description="MIMIC-CXR-JPG metadata ⨝ split ⨝ chexpert (polars lazy scans): one row per image with its path.")
@one_line_failures
def mimic_images(params: SpotdiffParams) -> dg.MaterializeResult:
    d = params.params()["data"]
    prepared = storage_for(d["prepared_root"])
    table, counts = prepare.run_ingest_images(storage_for(d["mimic_root"]), prepared, bool(d["check_files"]))
    return _table_result(table, counts, prepared.url(prepare.IMAGES), _quarantine_part(params, "mimic_images"))


@dg.asset(group_name=GROUP, kinds={"polars", "parquet"}, deps=[embedded_dataset],
          description="mimic_pair_questions.csv normalised; the configured question types kept; stable question_id.")
@one_line_failures
def diffvqa_questions(params: SpotdiffParams) -> dg.MaterializeResult:
    p = params.params()
    prepared = storage_for(p["data"]["prepared_root"])
    table, counts = prepare.run_ingest_questions(storage_for(p["data"]["diffvqa_root"]), prepared,
                                                 p["pairs"]["question_types"])
    return _table_result(table, counts, prepared.url(prepare.QUESTIONS), _quarantine_part(params, "diffvqa_questions"))


@dg.asset(automation_condition=FOLLOW, group_name=GROUP, kinds={"polars", "parquet"}, deps=[mimic_images, diffvqa_questions],
          description="One row per question with its main and reference study and the frontal image of each "
                      "(rules: docs/data.md).")
@one_line_failures
def study_pairs(params: SpotdiffParams) -> dg.MaterializeResult:
    p = params.params()
    prepared = storage_for(p["data"]["prepared_root"])
    table, counts = prepare.run_pairs(prepared, storage_for(p["data"]["diffvqa_root"]), **prepare.pairs_options(p))
    counts["unique_pairs"] = table["pair_id"].n_unique()
    return _table_result(table, counts, prepared.url(prepare.PAIRS), _quarantine_part(params, "study_pairs"))


@dg.asset(automation_condition=FOLLOW, group_name=GROUP, kinds={"parquet"}, deps=[mimic_images, diffvqa_questions, study_pairs],
          description="Every row a table asset dropped: asset, source file, line, reason, detail, original columns.")
@one_line_failures
def quarantine(params: SpotdiffParams) -> dg.MaterializeResult:
    prepared = params.storage("prepared_root")
    table, counts = prepare.collect_quarantine(prepared)
    meta = {f"{a}.{k}": v for a, c in counts.items() for k, v in c.items()}
    by_asset = (table.group_by("asset", "reason").len().sort("asset", "reason") if table.height
                else pl.DataFrame(schema={"asset": pl.String, "reason": pl.String, "len": pl.UInt32}))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": table.height, "dagster/column_schema": _schema(table),
        "path": dg.MetadataValue.path(prepared.url(prepare.QUARANTINE)),
        "by_asset_and_reason": dg.MetadataValue.md(_preview_md(by_asset, n=100, width=80)),
        "preview": dg.MetadataValue.md(_preview_md(table)), **meta,
    }, data_version=dg.DataVersion(frame_hash(table)))


@dg.asset(automation_condition=FOLLOW, group_name=GROUP, kinds={"torch", "parquet"}, deps=[study_pairs],
          partitions_def=mimic_groups, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("residuals_finite_in_range", asset="residual_images", blocking=True,
                                         description="GX: every residual finite and in [-1, 1], one row per pair")],
          description="Per pair: preprocessed main/reference, registered reference, naive and registered residuals, "
                      "as parquet shards + manifest, one MIMIC group (p10..p19) per partition. A backfill or the "
                      "loop runs all requested groups in one run; a group whose pairs and config are unchanged "
                      "keeps its shards (checked by sha256), so only the groups new pairs land in are recomputed.")
@one_line_failures
def residual_images(context: dg.AssetExecutionContext, params: SpotdiffParams, gx: GreatExpectationsResource):
    # One run for many partitions (single-run backfill policy): ten runs cost ten process
    # start-ups (~10 s each on 2 cores) for groups that are mostly up to date. What is recomputed
    # is decided by the content, in the same function the CLI and the DVC stage call.
    p = params.params()
    groups = list(context.partition_keys)
    prepared, out = storage_for(p["data"]["prepared_root"]), storage_for(p["data"]["residuals_root"])
    results, _ = prepare.run_residuals(prepared, out, residual_config(p), groups, out.options,
                                       base=str(repo_root()), within=prepare.image_root(p, prepared))
    stats, previews = prepare.residual_stats(out, groups, n_previews=4)
    done = prepare.residual_summary(results)
    meta = {
        "dagster/row_count": done["rows_out"], "dagster/column_schema": SHARD_TABLE_SCHEMA,
        **{k: (dg.MetadataValue.json(v) if isinstance(v, list) else v) for k, v in done.items()},
        "shards": sum(len(r.manifest["shards"]) for r in results),
        "quarantine_reasons": dg.MetadataValue.json(reason_counts(pl.concat([r.quarantine for r in results],
                                                                            how="diagonal_relaxed"))),
        "path": dg.MetadataValue.path(out.root), "image_size": residual_config(p).image_size,
    }
    if stats.height:
        meta["mean_naive_energy"] = float(stats["naive_energy"].mean())
        meta["mean_registered_energy"] = float(stats["registered_energy"].mean())
    if previews:
        png = base64.b64encode(preview_grid(previews)).decode()
        meta["preview"] = dg.MetadataValue.md(
            "main | reference | naive residual | registered residual\n\n"
            f"![residual grid](data:image/png;base64,{png})")
    shas = "".join(s["sha256"] for r in results for s in r.manifest["shards"])
    version = hashlib.sha256(shas.encode()).hexdigest()[:24] if shas else "empty"
    yield dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))
    yield gx.check(validation.validate_residual_stats, stats, asset="residual_images",
                   check_name="residuals_finite_in_range")


# ---- checks ---------------------------------------------------------------------------------

@dg.asset_check(asset=mimic_images, blocking=True,
                description="GX: required columns and dtypes, well-formed unique IDs, split values, image file exists.")
@one_line_failures
def mimic_images_valid(params: SpotdiffParams, gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    d = params.params()["data"]
    images = storage_for(d["prepared_root"]).read_parquet(prepare.IMAGES)
    return gx.check(validation.validate_images, images, storage_for(d["mimic_root"]).list_files("files"),
                    asset="mimic_images")


@dg.asset_check(asset=diffvqa_questions, blocking=True,
                description="GX: unique question_id, split and type values, 100 % of difference answers parse.")
@one_line_failures
def diffvqa_questions_valid(params: SpotdiffParams, gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    return gx.check(validation.validate_questions, params.storage("prepared_root").read_parquet(prepare.QUESTIONS),
                    asset="diffvqa_questions")


@dg.asset_check(asset=study_pairs, blocking=True,
                description="GX: reference earlier than main, same subject, frontal images, pair_id form, split values.")
@one_line_failures
def study_pairs_valid(params: SpotdiffParams, gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    return gx.check(validation.validate_pairs, params.storage("prepared_root").read_parquet(prepare.PAIRS),
                    asset="study_pairs")


@dg.asset_check(asset=study_pairs, blocking=True,
                description="GX: every control reference (pairs.single_image_reference: control) is a normal "
                            "training study of another patient in the main image's view; passes when there is none.")
@one_line_failures
def study_pairs_controls_valid(params: SpotdiffParams, gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    prepared = params.storage("prepared_root")
    return gx.check(validation.validate_control_pairs, prepared.read_parquet(prepare.PAIRS),
                    prepared.read_parquet(prepare.FINDING_TARGETS), asset="study_pairs")


@dg.asset_check(asset=study_pairs, blocking=False,
                description="GX: each subject in one split. A warning, not a stop: the official v1.0.1 split is not "
                            "subject-disjoint on real data (set pairs.resplit_by_subject to fix).")
@one_line_failures
def study_pairs_subject_disjoint(params: SpotdiffParams, gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    r = gx.check(validation.validate_subject_disjoint, params.storage("prepared_root").read_parquet(prepare.PAIRS),
                 asset="study_pairs")
    return dg.AssetCheckResult(passed=r.passed, metadata=r.metadata, severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset=quarantine, blocking=True,
                description="Accounting: for every table asset, rows in = rows out + rows quarantined.")
@one_line_failures
def quarantine_accounts(params: SpotdiffParams) -> dg.AssetCheckResult:
    prepared = params.storage("prepared_root")
    table = prepared.read_parquet(prepare.QUARANTINE)
    rows = {}
    ok = True
    for asset, file in (("mimic_images", prepare.IMAGES), ("diffvqa_questions", prepare.QUESTIONS),
                        ("study_pairs", prepare.PAIRS)):
        c = prepared.read_json("quarantine", f"{asset}.counts.json")
        out = prepared.scan_parquet(file).select(pl.len()).collect().item()
        q = table.filter(pl.col("asset") == asset).height
        rows[asset] = {"rows_in": c["rows_in"], "rows_out": out, "rows_quarantined": q}
        ok &= c["rows_in"] == out + q
    return dg.AssetCheckResult(passed=ok, metadata={"accounting": dg.MetadataValue.json(rows)})


data_job = dg.define_asset_job("data", selection=dg.AssetSelection.groups(GROUP),
                               description="Ingest, pair, validate and materialise residual images.")

defs = dg.Definitions(
    assets=[embedded_dataset, mimic_images, diffvqa_questions, study_pairs, quarantine, residual_images],
    asset_checks=[mimic_images_valid, diffvqa_questions_valid, study_pairs_valid, study_pairs_controls_valid,
                  study_pairs_subject_disjoint, quarantine_accounts],
    jobs=[data_job],
    resources={"params": SpotdiffParams(), "gx": GreatExpectationsResource()},
)
