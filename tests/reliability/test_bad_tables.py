"""Bad CSVs at ingestion. A bad row is quarantined with its line and reason (rows in = rows out +
rows quarantined); a file that cannot be read as rows at all is refused by `spotdiff ingest` in
one line naming the file, exit code 2, no traceback. `python -m pytest tests/reliability/test_bad_tables.py`"""

import gzip
import os
import shutil

import pytest
from typer.testing import CliRunner

from assets.ingest import MIMIC_ALL_CSV, QUESTIONS_CSV, ingest_images, ingest_questions
from assets.storage import Storage
from pipelines.cli import app
from tests.fixtures.tiny_mimic import META_COLS, csv_bytes, read_csv_rows, write_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"), subjects=3)


def _questions(tiny, tmp_path, data: bytes) -> Storage:
    root = tmp_path / "dq"
    root.mkdir(exist_ok=True)
    (root / QUESTIONS_CSV).write_bytes(data)
    return Storage(str(root))


def _first_diff(tiny) -> int:
    return next(i for i, r in enumerate(tiny.questions) if r["question_type"] == "difference")


@pytest.mark.parametrize("field, value, reason", [
    ("subject_id", "nan", "bad_subject_id"),                 # NaN id (pandas' NaN written out)
    ("study_id", "50000001.0", "bad_study_id"),              # float-formatted id
    ("ref_id", "abc", "bad_ref_id"),                         # non-numeric id
    ("study_id", "../../etc/passwd", "bad_study_id"),        # path traversal in an id
    ("subject_id", "10/000001", "bad_subject_id"),           # path separator in an id
    ("answer", "", "missing_value"),                         # empty answer
    ("answer", "   ", "bad_terminator"),                     # blank answer: not a sentence
    ("question_type", "diference", "unknown_question_type"),
    ("split", "training", "unknown_split"),
])
def test_bad_question_field_is_quarantined_with_its_line(tiny, tmp_path, field, value, reason):
    rows = [dict(r) for r in tiny.questions]
    i = _first_diff(tiny)
    rows[i][field] = value
    res = ingest_questions(_questions(tiny, tmp_path, csv_bytes(list(rows[0]), rows)), ["difference"])
    assert res.quarantine.select("reason", "row").rows() == [(reason, i + 2)]
    assert res.counts["rows_in"] == res.counts["rows_out"] + 1


def test_non_utf8_row_is_quarantined_not_fatal(tiny, tmp_path):
    rows = [dict(r) for r in tiny.questions]
    i = _first_diff(tiny)
    data = csv_bytes(list(rows[0]), rows).split(b"\n")
    data[i + 1] = data[i + 1].replace(b"what", "wh\xe4t".encode("latin-1"))  # latin-1 byte
    res = ingest_questions(_questions(tiny, tmp_path, b"\n".join(data)), ["difference"])
    assert res.quarantine.select("reason", "row").rows() == [("bad_encoding", i + 2)]
    assert res.counts["rows_in"] == res.counts["rows_out"] + 1


def test_bom_and_extra_columns_are_read_as_usual(tiny, tmp_path):
    rows = [{**r, "note": "extra"} for r in tiny.questions]
    res = ingest_questions(_questions(tiny, tmp_path, b"\xef\xbb\xbf" + csv_bytes(list(rows[0]), rows)), ["difference"])
    n = sum(r["question_type"] == "difference" for r in tiny.questions)
    assert res.table.height == n and res.quarantine.height == 0


def test_short_row_is_quarantined_not_silently_unselected(tiny, tmp_path):
    rows = tiny.questions
    data = csv_bytes(list(rows[0]), rows) + b"50000001,10100000\n"
    res = ingest_questions(_questions(tiny, tmp_path, data), ["difference"])
    assert res.quarantine.select("reason", "row").rows() == [("unknown_question_type", len(rows) + 2)]
    assert res.quarantine["detail"][0]  # a sentence even though the field is empty


def test_header_only_file_gives_zero_rows(tiny, tmp_path):
    res = ingest_questions(_questions(tiny, tmp_path, csv_bytes(list(tiny.questions[0]), [])), ["difference"])
    assert res.table.height == 0 and res.counts["rows_in"] == 0


def test_metadata_id_with_path_traversal_is_quarantined(tiny, tmp_path):
    """The dicom id becomes part of a file path: `../` must never reach the filesystem."""
    root = tmp_path / "m"
    shutil.copytree(tiny.mimic_root, root)
    rows = read_csv_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    rows[1]["dicom_id"] = "../../../../etc/passwd"
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(gzip.compress(csv_bytes(META_COLS, rows)))
    res = ingest_images(Storage(str(root)))
    assert res.quarantine.select("reason", "row").rows() == [("bad_dicom_id", 3)]
    assert not res.table["path"].str.contains("..", literal=True).any()


def _lines(tiny):
    return (tiny.diffvqa_root / QUESTIONS_CSV).read_bytes()


@pytest.mark.parametrize("name, edit, message", [
    ("empty", lambda b: b"", "empty file"),
    ("missing_column", lambda b: b"\n".join(b",".join(line.split(b",")[:-1]) for line in b.split(b"\n")),
     "missing column(s) ['split']"),
    ("utf16", lambda b: b.decode().encode("utf-16"), "missing column(s)"),
    ("ragged_long_row", lambda b: b + b"1,2,3,4,5,6,7,8,9\n", "not a well-formed CSV"),
])
def test_unreadable_file_is_refused_in_one_line(tiny, tmp_path, name, edit, message):
    dq = tmp_path / "dq"
    shutil.copytree(tiny.diffvqa_root, dq)
    (dq / QUESTIONS_CSV).write_bytes(edit(_lines(tiny)))
    r = runner.invoke(app, ["ingest", "--mimic-root", str(tiny.mimic_root), "--diffvqa-root", str(dq),
                            "--out", str(tmp_path / "out"), "--profile", "smoke"])
    out = "".join(r.output.split())  # rich wraps long lines, even mid-word
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "".join(message.split()) in out and QUESTIONS_CSV in out


def test_a_quoted_line_break_does_not_shift_later_line_numbers(tiny, tmp_path):
    rows = [dict(r) for r in tiny.questions]
    first = _first_diff(tiny)
    last = max(i for i, r in enumerate(rows) if r["question_type"] == "difference")
    assert last > first
    rows[first]["answer"] = "nothing has\nchanged."  # a field spanning two lines (and bad)
    rows[last]["split"] = "training"                  # a bad row after it
    res = ingest_questions(_questions(tiny, tmp_path, csv_bytes(list(rows[0]), rows)), ["difference"])
    got = dict(res.quarantine.select("row", "reason").rows())
    assert got.get(last + 3) == "unknown_split", got  # +2 for header and 1-based, +1 for the break
    assert first + 2 in got  # the record itself keeps the line it starts on


def test_a_repeated_column_name_is_refused_naming_the_column(tiny, tmp_path):
    rows = tiny.questions
    lines = csv_bytes(list(rows[0]), rows).split(b"\n")
    lines[0] += b",answer"
    lines[1:] = [ln + b",nothing has changed." if ln else ln for ln in lines[1:]]
    root = tmp_path / "dq"
    root.mkdir()
    (root / QUESTIONS_CSV).write_bytes(b"\n".join(lines))
    from assets.ingest import SchemaError

    with pytest.raises(SchemaError, match=r"column\(s\) \['answer'\] appear more than once"):
        ingest_questions(Storage(str(root)), ["difference"])


def test_a_failed_ingest_leaves_the_previous_tables_whole(tiny, tmp_path):
    """The images read fine, the questions do not: the earlier run's images.parquet stays (the
    step's outputs are one set), never a new one beside the old questions."""
    out = tmp_path / "out"
    args = ["ingest", "--out", str(out), "--profile", "smoke"]
    first = runner.invoke(app, args + ["--mimic-root", str(tiny.mimic_root), "--diffvqa-root", str(tiny.diffvqa_root)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # the second run's images differ (one file gone: a missing_file row), its questions are unreadable
    mimic = tmp_path / "mimic"
    shutil.copytree(tiny.mimic_root, mimic)
    next(mimic.rglob("*.jpg")).unlink()
    dq = tmp_path / "dq"
    shutil.copytree(tiny.diffvqa_root, dq)
    (dq / QUESTIONS_CSV).write_bytes(b"")
    r = runner.invoke(app, args + ["--mimic-root", str(mimic), "--diffvqa-root", str(dq)])
    assert r.exit_code == 2, r.output
    after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before



def test_a_failed_pairing_leaves_the_previous_tables_whole(tiny, tmp_path):
    """`spotdiff pairs` (ingest + pairing) whose pairing fails on a bad mimic_all.csv: ingestion
    and pairing are one set, so the earlier run's tables all stay, never new images and
    questions beside old pairs."""
    out = tmp_path / "out"
    args = ["pairs", "--out", str(out), "--profile", "smoke", "--mimic-root"]
    first = runner.invoke(app, args + [str(tiny.mimic_root), "--diffvqa-root", str(tiny.diffvqa_root)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    mimic = tmp_path / "mimic"
    shutil.copytree(tiny.mimic_root, mimic)
    next(mimic.rglob("*.jpg")).unlink()  # the second run's images differ
    dq = tmp_path / "dq"
    shutil.copytree(tiny.diffvqa_root, dq)
    (dq / MIMIC_ALL_CSV).write_text("subject_id,study_id\n1,2\n")
    r = runner.invoke(app, args + [str(mimic), "--diffvqa-root", str(dq)])
    assert r.exit_code == 2 and "dicom_id" in r.output and "Traceback" not in r.output, r.output
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "empty", "no_dicom_id"])
def test_a_bad_mimic_all_is_one_line_naming_it(tiny, tmp_path, kind):
    """mimic_all.csv is optional, but one that is there is checked like the ingested tables:
    a FIFO is refused without waiting for a writer, an empty file or one without the columns
    the pairing reads is one line naming it, exit 2."""
    dq = tmp_path / "dq"
    shutil.copytree(tiny.diffvqa_root, dq)
    target = dq / MIMIC_ALL_CSV
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.write_text("" if kind == "empty" else "subject_id,study_id\n1,2\n")
    r = runner.invoke(app, ["pairs", "--out", str(tmp_path / "out"), "--profile", "smoke",
                            "--mimic-root", str(tiny.mimic_root), "--diffvqa-root", str(dq)])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert len(r.output.strip().splitlines()) <= 2 and MIMIC_ALL_CSV in line and "Traceback" not in r.output
    assert {"fifo": "FIFO", "empty": "empty file", "no_dicom_id": "dicom_id"}[kind] in line


def test_the_cli_runs_the_dagster_gx_suites_and_stops_on_a_failed_one(tiny, tmp_path):
    """The suites Dagster runs as blocking asset checks run after the CLI / DVC step too."""
    import polars as pl

    from assets import validation
    from pipelines.commands.common import UserError
    from pipelines.commands.data import gx_gate

    out = tmp_path / "out"
    r = runner.invoke(app, ["ingest", "--mimic-root", str(tiny.mimic_root), "--diffvqa-root", str(tiny.diffvqa_root),
                            "--out", str(out), "--profile", "smoke"])
    assert r.exit_code == 0 and "GX mimic_images: passed" in r.output and "GX diffvqa_questions: passed" in r.output
    r = runner.invoke(app, ["pairs", "--from-ingest", "--diffvqa-root", str(tiny.diffvqa_root), "--out", str(out),
                            "--profile", "smoke"])
    assert r.exit_code == 0 and "GX study_pairs: passed" in r.output, r.output
    # a pairs table GX rejects (a malformed pair_id) stops the step with the suite and the column
    pairs = pl.read_parquet(out / "pairs.parquet").with_columns(pair_id=pl.lit("not-a-pair-id"))
    with pytest.raises(UserError, match="GX suite study_pairs failed: .*pair_id"):
        gx_gate(([validation.validate_pairs(pairs)], []))
