"""One training at a time writes a train.output_dir (models/lifecycle/writer_lock.py): a second
writer is refused with the holder's pid, and the lock goes with its holder, even one killed with
SIGKILL. (The CLI's one-line refusal: tests/reliability/test_train_resources.py.)
`python -m pytest tests/reliability/test_writer_lock.py`"""

import os
import signal
import subprocess
import sys
import time

import pytest

from assets.params import UserError
from models.lifecycle.writer_lock import LOCK_FILE, sole_writer


def test_the_lock_goes_with_its_holder(tmp_path):
    out = tmp_path / "out"
    with sole_writer(out):
        with pytest.raises(UserError, match="is writing there"):
            with sole_writer(out):
                pass
    with sole_writer(out):  # released on exit
        pass
    # a holder killed outright leaves no stale lock: the kernel drops a flock with its process
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from models.lifecycle.writer_lock import sole_writer\n"
        f"with sole_writer(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            with sole_writer(out):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10
        while True:
            try:
                with sole_writer(out):
                    break
            except UserError:
                assert time.monotonic() < deadline, "the killed holder's lock stayed"
                time.sleep(0.1)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (out / LOCK_FILE).read_text() == str(os.getpid())
