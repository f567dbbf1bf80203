"""Great Expectations 1.x suites over the data assets' outputs, as plain functions returning a
summary. No Dagster here: pipelines/defs/data.py runs them inside asset checks (through our own
resource; the dagster-ge integration is pinned to GX 0.x) and puts the summary in the metadata.

Some expectations need a value GX cannot compute itself (does the file exist? does the answer
parse under the Medical-Diff-VQA grammar?); those are computed here as a boolean column, and the
expectation is that the column is all true, so the failing rows still show up in GX's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl

from assets.diffvqa.grammar import try_parse_answer
from assets.ingest import DICOM_RE, MIMIC_SPLITS, QUESTION_SPLITS, QUESTION_TYPES
from assets.pairs import FRONTAL

QUESTION_ID_RE = r"^q[0-9a-f]{16}$"


@dataclass
class SuiteResult:
    name: str
    success: bool
    statistics: dict[str, Any]
    failures: list[dict] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {"suite": self.name, "success": self.success, **{k: v for k, v in self.statistics.items()},
                "failed_expectations": self.failures}

    def markdown(self) -> str:
        lines = [f"**{self.name}**: {'passed' if self.success else 'FAILED'} "
                 f"({self.statistics.get('successful_expectations')}/{self.statistics.get('evaluated_expectations')})"]
        if self.failures:
            lines += ["", "| expectation | column(s) | unexpected | examples |", "|---|---|---|---|"]
            lines += [f"| {f['type']} | {f['columns']} | {f['unexpected_count']} | {f['examples']} |" for f in self.failures]
        return "\n".join(lines)


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    # No metric progress bars in logs and test output.
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def run_suite(name: str, df: pl.DataFrame, expectations: list[Any]) -> SuiteResult:
    """Validate a polars table against a list of GX expectations (one ephemeral context each:
    creating one costs milliseconds, and no state leaks between suites)."""
    import great_expectations as gx

    ctx = _context()
    batch = (ctx.data_sources.add_pandas(name).add_dataframe_asset(name)
             .add_batch_definition_whole_dataframe(name)
             .get_batch(batch_parameters={"dataframe": df.to_pandas()}))
    suite = gx.ExpectationSuite(name=name)
    for e in expectations:
        suite.add_expectation(e)
    res = batch.validate(suite, result_format="SUMMARY")
    failures = []
    for r in res.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kw = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
        cols = kw.get("column") or ", ".join(str(kw[k]) for k in ("column_A", "column_B", "column_list") if k in kw)
        result = r.result or {}
        failures.append({"type": cfg.type, "columns": str(cols),
                         "unexpected_count": int(result.get("unexpected_count") or 0),
                         "examples": str(result.get("partial_unexpected_list", result.get("observed_value", "")))[:200],
                         "exception": (r.exception_info or {}).get("exception_message")})
    stats = {k: (float(v) if isinstance(v, float) else v) for k, v in res.statistics.items()}
    stats["rows"] = df.height
    return SuiteResult(name, bool(res.success), stats, failures)


def _required(columns: dict[str, str]) -> list[Any]:
    import great_expectations.expectations as gxe

    out = [gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=False)]
    import pandas as pd

    # pandas spells a string column "object" before 3.0 and "str" from 3.0 on: ask pandas.
    string = str(pd.Series(["x"]).dtype)
    out += [gxe.ExpectColumnValuesToBeOfType(column=c, type_=string if t == "object" else t) for c, t in columns.items()]
    return out


def validate_images(images: pl.DataFrame, existing: set[str] | None = None) -> SuiteResult:
    """mimic_images: IDs well-formed and unique, split values, and (given a listing of the MIMIC
    root, relative paths) every image file present."""
    import great_expectations.expectations as gxe

    df = images
    exp = _required({"dicom_id": "object", "subject_id": "int64", "study_id": "int64", "path": "object",
                     "split": "object", "ViewPosition": "object"})
    exp += [
        gxe.ExpectColumnValuesToNotBeNull(column="dicom_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="dicom_id", regex=DICOM_RE),
        gxe.ExpectColumnValuesToBeUnique(column="dicom_id"),
        gxe.ExpectColumnValuesToBeBetween(column="subject_id", min_value=10_000_000, max_value=19_999_999),
        gxe.ExpectColumnValuesToBeBetween(column="study_id", min_value=50_000_000, max_value=59_999_999),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(MIMIC_SPLITS)),
        gxe.ExpectColumnValuesToNotBeNull(column="acquired"),
    ]
    if existing is not None:
        df = df.with_columns(file_exists=pl.col("rel_path").is_in(list(existing)))
        exp.append(gxe.ExpectColumnValuesToBeInSet(column="file_exists", value_set=[True]))
    return run_suite("mimic_images", df, exp)


def validate_questions(questions: pl.DataFrame) -> SuiteResult:
    """diffvqa_questions: stable unique ids, split values, types, and 100 % of difference answers
    parsing under the answer grammar."""
    import great_expectations.expectations as gxe

    answers = questions.filter(pl.col("question_type") == "difference")["answer"].unique().to_list()
    parses = {a: try_parse_answer(a) is not None for a in answers}
    df = questions.with_columns(answer_parses=pl.when(pl.col("question_type") == "difference")
                                .then(pl.col("answer").replace_strict(parses, default=False, return_dtype=pl.Boolean))
                                .otherwise(True))
    exp = _required({"question_id": "object", "subject_id": "int64", "main_study_id": "int64",
                     "ref_study_id": "int64", "question_type": "object", "question": "object",
                     "answer": "object", "split": "object"})
    exp += [
        gxe.ExpectColumnValuesToBeUnique(column="question_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="question_id", regex=QUESTION_ID_RE),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(QUESTION_SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="question_type", value_set=list(QUESTION_TYPES)),
        gxe.ExpectColumnValuesToNotBeNull(column="answer"),
        gxe.ExpectColumnValuesToBeInSet(column="answer_parses", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="main_study_id", min_value=50_000_000, max_value=59_999_999),
        gxe.ExpectColumnValuesToBeBetween(column="ref_study_id", min_value=50_000_000, max_value=59_999_999),
    ]
    return run_suite("diffvqa_questions", df, exp)


def validate_pairs(pairs: pl.DataFrame) -> SuiteResult:
    """study_pairs: one row per question, frontal images, pair_id form, split values; a pair with
    the patient's previous study (reference "previous") has the same subject and an earlier
    reference. Control references have their own suite (validate_control_pairs)."""
    import great_expectations.expectations as gxe

    if "reference" not in pairs.columns:
        pairs = pairs.with_columns(reference=pl.lit("previous"))
    previous = {"row_condition": 'reference=="previous"', "condition_parser": "pandas"}
    exp = _required({"question_id": "object", "pair_id": "object", "subject_id": "int64",
                     "main_study_id": "int64", "ref_study_id": "int64", "main_dicom_id": "object",
                     "ref_dicom_id": "object", "main_path": "object", "ref_path": "object",
                     "question": "object", "answer": "object", "split": "object", "question_type": "object"})
    exp += [
        gxe.ExpectColumnValuesToBeUnique(column="question_id"),
        gxe.ExpectColumnValuesToBeInSet(column="reference", value_set=["previous", "control"]),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="main_acquired", column_B="ref_acquired", or_equal=False,
                                                    **previous),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="subject_id", column_B="ref_subject_id", **previous),
        gxe.ExpectColumnValuesToBeInSet(column="main_view", value_set=list(FRONTAL)),
        gxe.ExpectColumnValuesToBeInSet(column="ref_view", value_set=list(FRONTAL)),
        gxe.ExpectColumnValuesToMatchRegex(column="pair_id", regex=DICOM_RE[:-1] + "__" + DICOM_RE[1:]),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(QUESTION_SPLITS)),
        gxe.ExpectColumnValuesToNotBeNull(column="main_path"),
        gxe.ExpectColumnValuesToNotBeNull(column="ref_path"),
    ]
    return run_suite("study_pairs", pairs, exp)


def validate_control_pairs(pairs: pl.DataFrame, targets: pl.DataFrame) -> SuiteResult:
    """control_pairs (pairs.single_image_reference: control): every control is another patient's
    study with no finding (all 30 presence cells known absent), from the training split, in the
    main image's view, and only single-image questions use one (assets/controls.py)."""
    import great_expectations.expectations as gxe

    if "reference" not in pairs.columns:
        pairs = pairs.with_columns(reference=pl.lit("previous"))
    split_of = pairs.select(pl.col("subject_id").alias("ref_subject_id"), pl.col("split").alias("ref_split")) \
        .unique("ref_subject_id", keep="first")
    ctl = (pairs.filter(pl.col("reference") == "control")
           .join(targets.select("pair_id", "ref_presence"), on="pair_id", how="left")
           .join(split_of, on="ref_subject_id", how="left")
           .with_columns(
               other_subject=pl.col("ref_subject_id") != pl.col("subject_id"),
               control_normal=(pl.col("ref_presence").list.max() == 0) & (pl.col("ref_presence").list.min() == 0),
               control_from_train=pl.col("ref_split") == "train")
           .with_columns(pl.col(c).fill_null(False) for c in ("other_subject", "control_normal", "control_from_train"))
           .drop("ref_presence"))
    exp = [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
           for c in ("other_subject", "control_normal", "control_from_train")]
    exp += [gxe.ExpectColumnValuesToNotBeInSet(column="question_type", value_set=["difference"]),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="main_view", column_B="ref_view")]
    return run_suite("control_pairs", ctl, exp)


def validate_subject_disjoint(pairs: pl.DataFrame) -> SuiteResult:
    """Every subject's questions in one split (no patient in both train and test)."""
    import great_expectations.expectations as gxe

    per_subject = pairs.group_by("subject_id").agg(pl.col("split").n_unique().alias("n_splits"))
    return run_suite("subject_disjoint_splits", per_subject,
                     [gxe.ExpectColumnValuesToBeBetween(column="n_splits", min_value=1, max_value=1)])


def validate_residual_stats(stats: pl.DataFrame) -> SuiteResult:
    """residual_images: every residual finite and within [-1, 1]. `stats` has one row per pair
    (assets.residuals.pair_residual_stats)."""
    import great_expectations.expectations as gxe

    return run_suite("residual_images", stats, [
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="min", min_value=-1.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="max", min_value=-1.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
    ])


SUITES: dict[str, Callable[..., SuiteResult]] = {
    "mimic_images": validate_images, "diffvqa_questions": validate_questions, "study_pairs": validate_pairs,
    "subject_disjoint_splits": validate_subject_disjoint, "residual_images": validate_residual_stats,
}
