"""Files that are not what their name says, refused from their kind and size before a byte is
read (no hang on a FIFO, no endless read of /dev/zero), and gzip tables that are not whole gzip,
refused in one line naming the file before polars reads them.
`python -m pytest tests/reliability/test_bad_files.py`"""

import gzip
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from assets import prepare
from assets.ingest import METADATA_CSV, QUESTIONS_CSV, SPLIT_CSV
from assets.residuals import MAX_FILE_BYTES, ImageError, ResidualConfig, load_preprocessed, materialize_group
from assets.storage import FileRefused, Storage, gzip_problem, read_url
from pipelines.cli import app
from tests.fixtures.tiny_mimic import ingested_group, write_tiny

CFG = ResidualConfig(image_size=32, batch_size=4, register=False)  # registration is not under test
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"), subjects=3)


# ---- file kinds and sizes ------------------------------------------------------------------

def _fifo(path):
    os.mkfifo(path)


def _dev_zero(path):
    os.symlink("/dev/zero", path)


def _folder(path):
    path.mkdir()


def _sparse_too_large(path):  # its size says 65 MB, yet it takes no disk and is never read
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)


KINDS = {
    "fifo": (_fifo, "not_regular_file", "is a FIFO"),
    "symlink_to_dev_zero": (_dev_zero, "not_regular_file", "is a character device"),
    "directory": (_folder, "not_regular_file", "is a directory"),
    "over_size_bound": (_sparse_too_large, "file_too_large", f"over the bound of {MAX_FILE_BYTES}"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(KINDS))
def test_image_path_of_the_wrong_kind_is_refused_before_reading(tmp_path, name):
    make, reason, words = KINDS[name]
    path = tmp_path / f"{name}.jpg"
    make(path)
    with pytest.raises(ImageError) as e:
        load_preprocessed(str(path), CFG)
    assert e.value.reason == reason and words in e.value.detail and str(path) in e.value.detail


@pytest.mark.timeout(60)
def test_symlink_to_a_regular_file_is_read_as_that_file(tmp_path):
    target = tmp_path / "film.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 80), dtype=np.uint8)).save(target)
    os.symlink(target, tmp_path / "link.jpg")
    assert load_preprocessed(str(tmp_path / "link.jpg"), CFG).shape == (32, 32)
    assert read_url(str(tmp_path / "link.jpg")) == target.read_bytes()


def _own_files(rows):
    """(pair_id, image path) for each image that belongs to no other pair of the rows."""
    used = list(rows["main_path"]) + list(rows["ref_path"])
    return [(r["pair_id"], p) for r in rows.iter_rows(named=True) for p in (r["main_path"], r["ref_path"])
            if used.count(p) == 1]


@pytest.mark.timeout(60)
def test_fifo_and_dev_zero_in_a_group_are_quarantined_and_the_rest_written(tmp_path):
    """In `files/` as MIMIC names them: ingestion lists them, the residual step quarantines each
    pair with `not_regular_file` instead of blocking forever or reading gigabytes."""
    t, prepared, res, pairs, group, rows = ingested_group(tmp_path)
    # two pairs, each with one planted file that belongs to no other pair of the group
    targets = _own_files(rows)
    (fifo_pair, fifo_path), (zero_pair, zero_path) = targets[0], next(x for x in targets if x[0] != targets[0][0])
    os.remove(fifo_path)
    os.mkfifo(fifo_path)
    os.remove(zero_path)
    os.symlink("/dev/zero", zero_path)
    result = materialize_group(pairs, group, res, CFG, pairs_source=prepared.url("pairs.parquet"))
    qt = result.quarantine
    got = {json.loads(o)["pair_id"]: (r, d) for o, r, d in zip(qt["original"], qt["reason"], qt["detail"])}
    assert {k: v[0] for k, v in got.items()} == {fifo_pair: "not_regular_file", zero_pair: "not_regular_file"}
    assert "FIFO" in got[fifo_pair][1] and "character device" in got[zero_pair][1]
    m = result.manifest
    assert m["rows_in"] == rows.height == m["rows_out"] + m["rows_quarantined"] and m["rows_quarantined"] == 2



@pytest.mark.timeout(60)
def test_a_link_out_of_the_data_root_is_refused_and_a_link_inside_it_read(tmp_path):
    root, outside = tmp_path / "mimic", tmp_path / "elsewhere"
    root.mkdir(), outside.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (96, 80), dtype=np.uint8)
    Image.fromarray(img).save(root / "film.jpg")
    Image.fromarray(img).save(outside / "secret.jpg")
    os.symlink(root / "film.jpg", root / "inside.jpg")
    os.symlink(outside / "secret.jpg", root / "out.jpg")
    assert load_preprocessed(str(root / "inside.jpg"), CFG, within=str(root)).shape == (32, 32)
    with pytest.raises(ImageError) as e:
        load_preprocessed(str(root / "out.jpg"), CFG, within=str(root))
    assert e.value.reason == "outside_root" and str(outside / "secret.jpg") in e.value.detail
    # without a root (data.links_may_leave_root: true) the same link is read as its target
    assert load_preprocessed(str(root / "out.jpg"), CFG).shape == (32, 32)
    # a root that is itself a link (a download mounted elsewhere) holds what it links to
    os.symlink(root, tmp_path / "linked-root")
    assert read_url(str(tmp_path / "linked-root" / "film.jpg"), within=str(tmp_path / "linked-root"))


def test_the_image_root_is_the_root_the_images_were_ingested_from(tmp_path):
    t = write_tiny(tmp_path / "raw", subjects=2)
    prepared = Storage(str(tmp_path / "prep"))
    params = {"data": {"links_may_leave_root": False}}
    assert prepare.image_root(params, prepared) is None  # nothing ingested yet: nothing to say
    prepare.run_ingest_images(Storage(str(t.mimic_root)), prepared)
    assert prepare.image_root(params, prepared) == str(t.mimic_root)
    assert prepare.image_root({"data": {"links_may_leave_root": True}}, prepared) is None


@pytest.mark.timeout(60)
def test_a_link_out_of_the_root_in_a_group_is_quarantined_and_the_rest_written(tmp_path):
    """`spotdiff residuals` on a dataset where one image under files/ links to a file outside
    the MIMIC root: that pair is quarantined `outside_root` with its row, the rest written."""
    t, prepared, res, pairs, group, rows = ingested_group(tmp_path)
    pair_id, path = _own_files(rows)[0]
    outside = tmp_path / "elsewhere.jpg"
    shutil.move(path, outside)
    os.symlink(outside, path)
    result = materialize_group(pairs, group, res, CFG, pairs_source=prepared.url("pairs.parquet"),
                               within=str(t.mimic_root))
    qt = result.quarantine
    assert list(qt["reason"]) == ["outside_root"] and json.loads(qt["original"][0])["pair_id"] == pair_id
    assert str(outside) in qt["detail"][0]
    m = result.manifest
    assert m["rows_in"] == rows.height == m["rows_out"] + 1


# ---- gzip tables ---------------------------------------------------------------------------

def _ingest(tiny, tmp_path, name, data=None, make=None):
    mimic = tmp_path / "mimic"
    shutil.copytree(tiny.mimic_root, mimic, ignore=shutil.ignore_patterns("files"))
    target = mimic / name
    target.unlink()
    if make:
        make(target)
    else:
        target.write_bytes(data)
    return runner.invoke(app, ["ingest", "--mimic-root", str(mimic), "--diffvqa-root", str(tiny.diffvqa_root),
                               "--out", str(tmp_path / "out"), "--profile", "smoke"])


def _truncated(b):
    return b[:len(b) // 2]


def _bad_crc(b):
    return b[:-8] + bytes(x ^ 0xFF for x in b[-8:-4]) + b[-4:]


GZ_CASES = {
    "truncated": (METADATA_CSV, _truncated, "truncated gzip"),
    "random_bytes": (METADATA_CSV, lambda b: np.random.default_rng(0).bytes(len(b)), "not gzip"),
    "plain_csv_named_gz": (SPLIT_CSV, gzip.decompress, "not gzip"),
    "bad_crc": (SPLIT_CSV, _bad_crc, "corrupt gzip"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(GZ_CASES))
def test_gzip_table_that_is_not_whole_gzip_is_one_line(tiny, tmp_path, case):
    name, edit, message = GZ_CASES[case]
    r = _ingest(tiny, tmp_path, name, edit((tiny.mimic_root / name).read_bytes()))
    out = "".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert "".join(message.split()) in out and name in out
    assert "missingcolumn" not in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [METADATA_CSV, QUESTIONS_CSV])
def test_table_that_is_a_fifo_is_refused_not_waited_on(tiny, tmp_path, name):
    if name == QUESTIONS_CSV:
        dq = tmp_path / "dq"
        shutil.copytree(tiny.diffvqa_root, dq)
        (dq / name).unlink()
        os.mkfifo(dq / name)
        r = runner.invoke(app, ["ingest", "--mimic-root", str(tiny.mimic_root), "--diffvqa-root", str(dq),
                                "--out", str(tmp_path / "out"), "--profile", "smoke"])
    else:
        r = _ingest(tiny, tmp_path, name, make=os.mkfifo)
    out = "".join(r.output.split())
    assert r.exit_code == 2 and "isaFIFO,notaregularfile" in out and name in out, r.output


def _members(*parts: bytes) -> bytes:
    return b"".join(gzip.compress(p, mtime=0) for p in parts)


@pytest.mark.parametrize("data, problem", [
    (_members(b"a,b\n1,2\n"), None),
    (_members(b"a,b\n", b"1,2\n" * 5000), None),          # multi-member gzip, read in small chunks
    (_members(b"a,b\n" * 5000)[:-20], "truncated gzip"),
    (b"", "not gzip"),
    (b"\x1f\x8b" + b"\x00" * 30, "corrupt gzip"),
])
def test_gzip_problem(data, problem):
    got = gzip_problem(io.BytesIO(data), chunk=64)
    assert (got is None) if problem is None else got.startswith(problem), got


def test_file_refused_carries_its_reason(tmp_path):
    with pytest.raises(FileRefused) as e:
        read_url(str(tmp_path))
    assert e.value.reason == "not_regular_file"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "dev_zero_link", "sparse_over_bound"])
def test_ask_image_path_of_the_wrong_kind_or_size_is_refused_before_reading(tmp_path, kind):
    """`spotdiff ask --main PATH`: the path is read through the same kind and size check as the
    pipeline's images (a FIFO or a /dev/zero link never ends; a file over the bound is not read)."""
    from models.answer import MAX_IMAGE_BYTES, InputError, image_bytes

    path = tmp_path / "main.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero_link":
        os.symlink("/dev/zero", path)
    else:
        with open(path, "wb") as f:
            f.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(InputError) as e:
        image_bytes(str(path), "--main", allow_paths=True)
    assert str(e.value).startswith("--main: ") and str(path) in str(e.value)
    assert ("over the bound" if kind == "sparse_over_bound" else "not a regular file") in str(e.value)



@pytest.mark.timeout(120)
def test_every_data_step_run_from_another_folder_uses_the_repo_roots(tmp_path, monkeypatch):
    """ingest, pairs and residuals all run from a folder that is not the repo (SPOTDIFF_PARAMS
    names it): params.yaml's relative roots still name the repo's folders, and the residual step
    finds every image the tables record."""
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    repo = tmp_path / "repo"
    repo.mkdir()
    write_tiny(repo / "data", subjects=3)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(mimic_root="data/mimic-cxr-jpg", diffvqa_root="data/medical-diff-vqa",
                          prepared_root="data/prepared", residuals_root="data/residuals")
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(repo / "params.yaml"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for cmd in (["ingest"], ["pairs", "--from-ingest"], ["residuals"]):
        r = CliRunner().invoke(app, cmd + ["--profile", "smoke"])
        assert r.exit_code == 0, r.output
    assert not any(elsewhere.iterdir())  # nothing written where the command ran
    groups = json.loads((repo / "data/residuals/manifest.json").read_text())["groups"]
    assert sum(g["rows_out"] for g in groups.values()) > 0
    assert all(g["rows_quarantined"] == 0 for g in groups.values()), groups


@pytest.mark.timeout(60)
def test_a_fifo_where_a_table_should_be_is_one_line_not_a_hang(tmp_path):
    """A pipeline table (pairs.parquet) replaced by a FIFO: `spotdiff residuals` refuses it in
    one line naming it, exit 2, instead of waiting for a writer."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    prepared = tmp_path / "prep"
    prepared.mkdir()
    os.mkfifo(prepared / "pairs.parquet")
    r = CliRunner().invoke(app, ["residuals", "--prepared", str(prepared), "--out", str(tmp_path / "res"),
                                 "--profile", "smoke"])
    assert r.exit_code == 2 and "pairs.parquet is a FIFO, not a regular file" in r.output, r.output
    assert "Traceback" not in r.output
