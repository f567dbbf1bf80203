"""One training at a time writes a train.output_dir. Two at once (`spotdiff train` beside a
Dagster materialization, two `dvc exp run`s in one workspace) would interleave their best/,
predictions and trained_with.json; the second is refused in one line instead, before Ray starts.

An advisory `flock` on a file in the folder (assets.storage.lock_within, as the residual
manifest's): a crashed run never leaves a stale lock behind. No waiting: a training holds the
folder for minutes to hours, so the second run is told at once which process holds it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from assets.params import UserError
from assets.storage import lock_within

LOCK_FILE = ".writing.lock"


@contextlib.contextmanager
def sole_writer(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as f:
        if not lock_within(f, 0):
            f.seek(0)
            holder = f.read(32).strip() or "another process"
            raise UserError(f"train.output_dir {out}: another training (pid {holder}) is writing there; "
                            "wait for it, or point train.output_dir elsewhere")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
