"""The pipelines' one training chain (tests/pipelines/dagster_chain.py), shared: the Dagster UI
tests judge its first half, the DVC and registry tests go on in the same clone."""

import pickle
import subprocess

import pytest

# above the sum of the chain's bounded waits (two of 900 s, the start, the clone, the pictures)
CHAIN_WAIT_S = 2400


@pytest.fixture(scope="session")
def dagster_chain(chain_beside) -> dict:
    """What the chain saw, once its process (started with the session, tests/conftest.py) is done."""
    proc, out = chain_beside
    log = out / "chain.log"
    try:
        rc = proc.wait(timeout=CHAIN_WAIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the Dagster chain did not end in {CHAIN_WAIT_S} s\n{log.read_text()[-5000:]}")
    if rc != 0 or not (out / "seen.pkl").is_file():
        pytest.fail(f"the Dagster chain failed (exit {rc}):\n{log.read_text()[-5000:]}")
    return pickle.loads((out / "seen.pkl").read_bytes())
