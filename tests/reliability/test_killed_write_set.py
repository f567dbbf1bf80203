"""A step killed while its output set is being renamed into place: the next reader of that root
finishes the set, so no step ever reads new images.parquet beside old questions.parquet.
`python -m pytest tests/reliability/test_killed_write_set.py`"""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from assets.storage import SET_JOURNAL, Storage

REPO = Path(__file__).resolve().parents[2]

# the child writes a set of three tables and is SIGKILLed right after its first rename
CHILD = """
import os, signal, sys
import polars as pl
from fsspec.implementations.local import LocalFileSystem
from assets.storage import Storage

mv = LocalFileSystem.mv
def mv_then_die(self, *a, **k):
    out = mv(self, *a, **k)
    if not a[0].endswith(".write-set.json") and ".tmp-" in a[0]:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
LocalFileSystem.mv = mv_then_die
Storage(sys.argv[1]).write_set({n: pl.DataFrame({"v": [2]}) for n in ("a.parquet", "b.parquet", "q/c.parquet")})
"""


@pytest.mark.timeout(60)
def test_a_set_killed_between_renames_is_finished_by_the_next_reader(tmp_path):
    root = tmp_path / "prepared"
    old = Storage(str(root))
    old.write_set({n: pl.DataFrame({"v": [1]}) for n in ("a.parquet", "b.parquet", "q/c.parquet")})
    assert not (root / SET_JOURNAL).exists()

    # relative root, run from tmp_path: the journal must not depend on the writer's directory
    r = subprocess.run([sys.executable, "-c", CHILD, "prepared"], cwd=tmp_path, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == -9, r.stderr
    versions = {n: pl.read_parquet(root / n)["v"][0] for n in ("a.parquet", "b.parquet", "q/c.parquet")}
    assert sorted(versions.values()) == [1, 1, 2]  # the mixed state a kill leaves on disk ...
    assert (root / SET_JOURNAL).exists()

    # ... which no reader sees: the first read through the storage layer finishes the set
    assert Storage(str(root)).read_parquet("b.parquet")["v"][0] == 2
    assert {n: pl.read_parquet(root / n)["v"][0] for n in versions} == dict.fromkeys(versions, 2)
    assert not (root / SET_JOURNAL).exists()
    assert not [p for p in root.rglob(".tmp-*")]
