"""Ingestion: the MIMIC-CXR-JPG tables and Medical-Diff-VQA's question file, read as downloaded
(gzip CSVs, files/pXX/...), normalised, and sieved into clean rows + quarantine.

Every CSV is read with all columns as strings and cast here, so a malformed value becomes a
quarantined row with its line number, not a parse error that stops the whole file."""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass, field

import polars as pl

from assets import quarantine as q
from assets.diffvqa.grammar import AnswerParseError, parse_answer
from assets.storage import FileRefused, Storage, gzip_problem

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz"
QUESTIONS_CSV = "mimic_pair_questions.csv"
MIMIC_ALL_CSV = "mimic_all.csv"

METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime")
CHEXPERT_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other",
    "Pneumonia", "Pneumothorax", "Support Devices",
)
QUESTION_COLUMNS = ("study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split")
QUESTION_TYPES = ("abnormality", "presence", "view", "location", "level", "type", "difference")
MIMIC_SPLITS = ("train", "validate", "test")
QUESTION_SPLITS = ("train", "val", "test")

# Real ID forms: subject 8 digits from 1 (groups p10..p19), study 8 digits from 5, dicom five
# dash-separated 8-hex blocks.
SUBJECT_RE, STUDY_RE = r"^1\d{7}$", r"^5\d{7}$"
DICOM_RE = r"^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$"


class SchemaError(ValueError):
    """A source file that cannot be read as rows (not a regular file, not a whole gzip, a
    required column missing): nothing row-level can be done about it."""


@dataclass
class Ingested:
    table: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


# A byte sequence that is not UTF-8 (a latin-1 export, say) is read as U+FFFD, "lossy", so the
# bad rows are quarantined with their line instead of the whole file failing to parse.
REPLACEMENT_CHAR = "\ufffd"


def scan_table(store: Storage, name: str, required: tuple[str, ...]) -> pl.LazyFrame:
    """A lazy scan of one CSV table of a data root, after its file checks (kind, gzip whole, a
    header, no repeated or missing column; each a SchemaError naming the file), with each row's
    source file and line."""
    if not store.exists(name):
        raise FileNotFoundError(f"{store.url(name)}: not found")
    # Checked before polars reads it: a FIFO would block the scan forever, and a truncated or
    # non-gzip .gz fails inside polars with a message that names no file (or as "missing
    # columns", when random bytes happen to decompress to nothing).
    try:
        with store.open(name) as f:
            problem = gzip_problem(f) if name.endswith(".gz") else None
    except FileRefused as e:
        raise SchemaError(e.detail) from e
    if problem:
        raise SchemaError(f"{store.url(name)}: {problem}")
    lf = store.scan_csv(name, infer_schema=False, encoding="utf8-lossy")
    try:
        names = lf.collect_schema().names()
    except pl.exceptions.NoDataError as e:
        raise SchemaError(f"{store.url(name)}: empty file, not even a header row") from e
    # polars renames a repeated header name to <name>_duplicated_<n> and reads on: which of the
    # two columns is "answer" would then be an accident of order
    dupes = sorted({m.group(1) for c in names if (m := _DUPLICATED.fullmatch(c))})
    if dupes:
        raise SchemaError(f"{store.url(name)}: column(s) {dupes} appear more than once in the header")
    missing = [c for c in required if c not in names]
    if missing:
        raise SchemaError(f"{store.url(name)}: missing column(s) {missing}")
    lf = q.with_provenance(lf, store.url(name))
    lines = record_lines(store, name)
    if lines is not None:
        # a quoted field spans lines: the k-th record does not start on line k + 2
        fix = pl.LazyFrame({q.ROW_COL: pl.Series(range(2, len(lines) + 2), dtype=pl.Int64),
                            "_line": pl.Series(lines, dtype=pl.Int64)})
        lf = (lf.join(fix, on=q.ROW_COL, how="left", maintain_order="left")
              .with_columns(pl.coalesce("_line", q.ROW_COL).alias(q.ROW_COL)).drop("_line"))
    return lf


_DUPLICATED = re.compile(r"(.+)_duplicated_\d+")


def record_lines(store: Storage, name: str) -> list[int] | None:
    """The line each data record starts on, when some quoted field holds a line break (None
    otherwise: record k is on line k + 2). One streaming pass of Python's csv reader, which
    counts physical lines (`line_num`) as it goes; the file has passed its kind/gzip checks."""
    import codecs
    import csv

    with store.open(name) as raw:
        f = gzip.open(raw) if name.endswith(".gz") else raw
        text = codecs.getreader("utf-8")(f, errors="replace")
        reader = csv.reader(text)
        starts, line = [], 1
        try:
            next(reader)  # header
            line = reader.line_num + 1
            for _ in reader:  # a blank line is a record to polars (all null) and to csv ([])
                starts.append(line)
                line = reader.line_num + 1
        except (StopIteration, csv.Error):
            return None
    if all(s == k + 2 for k, s in enumerate(starts)):
        return None
    return starts


def collect_table(lf: pl.LazyFrame, what: str) -> pl.DataFrame:
    """A CSV polars cannot split into rows (a line with more fields than the header) is refused
    as a whole, naming the file: there is no row to quarantine."""
    try:
        return lf.collect()
    except pl.exceptions.ComputeError as e:
        raise SchemaError(f"{what}: not a well-formed CSV ({str(e).splitlines()[0]})") from e


def _drop_bad_encoding(s: q.Sieve) -> None:
    text = [c for c, t in s.df.schema.items() if t == pl.String and not c.startswith("_")]
    s.drop(pl.any_horizontal(pl.col(c).str.contains(REPLACEMENT_CHAR, literal=True).fill_null(False) for c in text), "bad_encoding",
           "the row has bytes that are not UTF-8")


def _stripped(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars()


def acquired_expr(date: str = "StudyDate", time: str = "StudyTime") -> pl.Expr:
    """StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff, leading zeros sometimes dropped in MIMIC,
    e.g. 45906.0) as one datetime; null when either is not a valid date/time."""
    d = pl.col(date).str.strip_chars().str.to_date("%Y%m%d", strict=False)
    t = pl.col(time).str.strip_chars().cast(pl.Float64, strict=False)
    hh, mm, ss = (t // 10000), (t // 100) % 100, t % 100
    valid = (hh < 24) & (mm < 60) & (ss < 60) & (t >= 0)
    us = ((hh * 3600 + mm * 60 + ss) * 1e6).round(0).cast(pl.Int64, strict=False)
    return pl.when(valid).then(d.cast(pl.Datetime("us")) + pl.duration(microseconds=us)).otherwise(None)


def image_rel_path() -> pl.Expr:
    """files/p{first two digits}/p{subject}/s{study}/{dicom}.jpg, MIMIC-CXR-JPG's layout."""
    s = pl.col("subject_id").cast(pl.String)
    return pl.concat_str([pl.lit("files/p"), s.str.slice(0, 2), pl.lit("/p"), s, pl.lit("/s"),
                          pl.col("study_id").cast(pl.String), pl.lit("/"), pl.col("dicom_id"), pl.lit(".jpg")])


def ingest_images(mimic: Storage, check_files: bool = True) -> Ingested:
    """mimic_images: metadata ⨝ split ⨝ chexpert, one row per image with its resolved path."""
    meta = scan_table(mimic, METADATA_CSV, METADATA_COLUMNS)
    split = scan_table(mimic, SPLIT_CSV, ("dicom_id", "split")).select(
        _stripped("dicom_id"), _stripped("split").alias("split")
    ).unique("dicom_id", keep="first", maintain_order=True)
    chex = scan_table(mimic, CHEXPERT_CSV, ("subject_id", "study_id"))
    labels = [c for c in CHEXPERT_LABELS if c in chex.collect_schema().names()]
    chex = chex.select(
        _stripped("subject_id"), _stripped("study_id"), *[pl.col(c).cast(pl.Float64, strict=False) for c in labels]
    ).unique(["subject_id", "study_id"], keep="first", maintain_order=True)

    df = collect_table(
        meta.with_columns(_stripped(c) for c in ("dicom_id", "subject_id", "study_id", "ViewPosition"))
        .with_columns(acquired=acquired_expr())
        .join(split, on="dicom_id", how="left"),
        f"{mimic.url(METADATA_CSV)} or {SPLIT_CSV}",
    )
    s = q.Sieve(df, "mimic_images")
    _drop_bad_encoding(s)
    s.drop(~pl.col("subject_id").str.contains(SUBJECT_RE), "bad_subject_id",
           pl.format("subject_id {} is not 8 digits starting with 1", pl.col("subject_id")))
    s.drop(~pl.col("study_id").str.contains(STUDY_RE), "bad_study_id",
           pl.format("study_id {} is not 8 digits starting with 5", pl.col("study_id")))
    s.drop(~pl.col("dicom_id").str.contains(DICOM_RE), "bad_dicom_id",
           pl.format("dicom_id {} is not five dash-separated 8-hex blocks", pl.col("dicom_id")))
    s.drop(pl.col("acquired").is_null(), "bad_study_datetime",
           pl.format("StudyDate {} / StudyTime {} is not a valid date and time", pl.col("StudyDate"), pl.col("StudyTime")))
    s.drop(pl.col("dicom_id").is_duplicated() & (pl.int_range(pl.len()).over("dicom_id") > 0), "duplicate_image",
           pl.format("dicom_id {} appears earlier in the metadata; the first row is kept", pl.col("dicom_id")))
    s.drop(pl.col("split").is_null(), "missing_split",
           pl.format("dicom_id {} has no row in " + SPLIT_CSV, pl.col("dicom_id")))
    s.drop(~pl.col("split").is_in(MIMIC_SPLITS), "unknown_split",
           pl.format("split {} is not one of " + "/".join(MIMIC_SPLITS), pl.col("split")))
    s.df = s.df.with_columns(
        pl.col("subject_id").cast(pl.Int64), pl.col("study_id").cast(pl.Int64),
    ).with_columns(
        rel_path=image_rel_path(),
        group=pl.concat_str([pl.lit("p"), pl.col("subject_id").cast(pl.String).str.slice(0, 2)]),
    )
    if check_files:
        present = mimic.list_files("files")
        s.drop(~pl.col("rel_path").is_in(list(present)), "missing_file",
               pl.format("{} does not exist under the MIMIC root", pl.col("rel_path")))
    chex = collect_table(chex.with_columns(pl.col("subject_id").cast(pl.Int64, strict=False),
                                      pl.col("study_id").cast(pl.Int64, strict=False)), mimic.url(CHEXPERT_CSV))
    out = (
        s.df.join(chex, on=["subject_id", "study_id"], how="left")
        .with_columns(path=pl.concat_str([pl.lit(mimic.root.rstrip("/") + "/"), pl.col("rel_path")]))
        .sort(["subject_id", "study_id", "dicom_id"])
    )
    return Ingested(out, s.quarantine, s.counts(out.height))


def question_id_of(main: str, ref: str, qtype: str, question: str) -> str:
    """Stable: a content hash of what identifies a question, not its row number, so re-ordering
    or appending to the question file keeps every existing id."""
    return "q" + hashlib.sha1(f"{main}|{ref}|{qtype}|{question}".encode()).hexdigest()[:16]


def _answer_errors(answers: pl.Series) -> dict[str, tuple[str, str]]:
    """answer -> (reason, detail) for each distinct answer that does not parse. Distinct answers
    are few (thousands for 160k real difference rows), so the grammar runs once per answer."""
    bad = {}
    for a in answers.unique().to_list():
        try:
            parse_answer(a if a is not None else "")
        except AnswerParseError as e:
            bad[a] = (e.reason, f"difference answer does not parse: {e.detail}")
    return bad


def ingest_questions(diffvqa: Storage, question_types: list[str] | str = ("difference",)) -> Ingested:
    """diffvqa_questions: mimic_pair_questions.csv normalised, the chosen types kept.

    Rows of types not selected are counted (rows_not_selected) but are not quarantine: they are
    not bad data. The accounting rows_in = rows_out + rows_quarantined starts after selection."""
    keep = QUESTION_TYPES if question_types == "all" or "all" in question_types else tuple(question_types)
    lf = scan_table(diffvqa, QUESTIONS_CSV, QUESTION_COLUMNS).with_columns(
        _stripped(c) for c in ("study_id", "subject_id", "ref_id", "question_type", "split")
    )
    df = collect_table(lf, diffvqa.url(QUESTIONS_CSV))
    # A short row has a null question_type: selected, so the sieve quarantines it, not counted
    # as "not selected" where nobody would look.
    selected = df.filter((pl.col("question_type").is_in(keep) | ~pl.col("question_type").is_in(QUESTION_TYPES))
                         .fill_null(True))
    not_selected = df.height - selected.height
    s = q.Sieve(selected, "diffvqa_questions")
    _drop_bad_encoding(s)
    s.drop(~pl.col("question_type").is_in(QUESTION_TYPES), "unknown_question_type",
           pl.format("question_type {} is not one of the seven Medical-Diff-VQA types", pl.col("question_type")))
    for col, rx, what in (("subject_id", SUBJECT_RE, "8 digits starting with 1"),
                          ("study_id", STUDY_RE, "8 digits starting with 5"),
                          ("ref_id", STUDY_RE, "8 digits starting with 5")):
        s.drop(~pl.col(col).str.contains(rx), f"bad_{col}", pl.format(f"{col} {{}} is not {what}", pl.col(col)))
    s.drop(pl.col("question").is_null() | pl.col("answer").is_null(), "missing_value",
           "the question or the answer is empty")
    s.drop(~pl.col("split").is_in(QUESTION_SPLITS), "unknown_split",
           pl.format("split {} is not one of " + "/".join(QUESTION_SPLITS), pl.col("split")))
    s.drop(pl.col("study_id") == pl.col("ref_id"), "ref_is_main",
           "the reference study is the main study itself")
    diff = s.df.filter(pl.col("question_type") == "difference")
    errors = _answer_errors(diff["answer"])
    if errors:
        err = pl.DataFrame({"answer": list(errors), "_reason": [r for r, _ in errors.values()],
                            "_detail": [d for _, d in errors.values()]}, schema_overrides={"answer": pl.String})
        s.df = s.df.join(err, on="answer", how="left").with_columns(
            pl.when(pl.col("question_type") == "difference").then(pl.col("_reason")).alias("_reason"))
        for reason in sorted({r for r, _ in errors.values()}):
            s.drop(pl.col("_reason").eq(reason).fill_null(False), reason, pl.col("_detail"))
        s.df = s.df.drop("_reason", "_detail")
    # v1.0.1 repeats some difference pairs: the first row is kept; a repeat with another answer
    # is a conflict, worth telling apart.
    key = ["study_id", "ref_id", "question_type", "question"]
    s.df = s.df.with_columns(
        _rank=pl.int_range(pl.len()).over(key), _first_answer=pl.col("answer").first().over(key))
    s.drop((pl.col("_rank") > 0) & (pl.col("answer") == pl.col("_first_answer")), "duplicate_question",
           pl.format("repeat of the question at line {} (same answer); the first row is kept", pl.col(q.ROW_COL).first().over(key)))
    s.drop(pl.col("_rank") > 0, "conflicting_duplicate",
           pl.format("repeat of the question at line {} with another answer; the first row is kept", pl.col(q.ROW_COL).first().over(key)))
    s.df = s.df.drop("_rank", "_first_answer")
    qids = [question_id_of(*t) for t in zip(*(s.df[c].to_list() for c in key))]
    out = s.df.select(
        pl.Series("question_id", qids, dtype=pl.String),
        pl.col("subject_id").cast(pl.Int64),
        pl.col("study_id").cast(pl.Int64).alias("main_study_id"),
        pl.col("ref_id").cast(pl.Int64).alias("ref_study_id"),
        "question_type", "question", "answer", "split", q.SOURCE_COL, q.ROW_COL,
    ).sort(["subject_id", "main_study_id", "question_type", "question_id"])
    counts = s.counts(out.height)
    counts.update(rows_read=df.height, rows_not_selected=not_selected)
    return Ingested(out, s.quarantine, counts)
