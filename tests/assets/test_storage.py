"""The storage layer: atomic writes, relative roots kept relative, one listing, deterministic
parquet. `python -m pytest tests/assets/test_storage.py`"""

import polars as pl

from assets.storage import Storage, frame_hash, parquet_bytes, read_url


def test_atomic_write_leaves_only_the_target(tmp_path):
    s = Storage(str(tmp_path / "root"))
    s.write_bytes(b"one", "a", "b.bin")
    s.write_bytes(b"two", "a", "b.bin")  # overwrite is a rename too
    assert (tmp_path / "root/a/b.bin").read_bytes() == b"two"
    assert [p.name for p in (tmp_path / "root/a").iterdir()] == ["b.bin"]
    assert read_url(s.url("a", "b.bin")) == b"two"


def test_relative_root_stays_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Storage("data/x")
    assert s.url("files", "a.jpg") == "data/x/files/a.jpg"
    s.write_json({"k": 1}, "m.json")
    assert s.read_json("m.json") == {"k": 1}
    assert s.list_files() == {"m.json"}


def test_list_files_relative_to_root(tmp_path):
    s = Storage(str(tmp_path))
    s.write_bytes(b"", "files", "p10", "x.jpg")
    s.write_bytes(b"", "files", "p11", "y.jpg")
    assert s.list_files("files") == {"files/p10/x.jpg", "files/p11/y.jpg"}
    assert s.list_files("absent") == set()


def test_parquet_roundtrip_and_content_hash(tmp_path):
    df = pl.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    s = Storage(str(tmp_path))
    s.write_parquet(df, "t.parquet")
    assert s.read_parquet("t.parquet").equals(df)
    assert s.scan_parquet("t.parquet").collect().equals(df)
    assert parquet_bytes(df) == parquet_bytes(df.clone())
    assert frame_hash(df) != frame_hash(df.with_columns(pl.col("a") + 1))


def test_memory_filesystem_url_works_like_a_path():
    # any fsspec URL goes through the same code: what s3:// will use (#6)
    s = Storage("memory://spotdiff-test")
    s.write_parquet(pl.DataFrame({"a": [1]}), "t.parquet")
    assert s.read_parquet("t.parquet")["a"].to_list() == [1]
    assert not s.is_local
