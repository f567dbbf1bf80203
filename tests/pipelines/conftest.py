"""The pipelines' one training chain (tests/pipelines/dagster_chain.py), shared: the Dagster UI
tests judge its first half, the DVC and registry tests go on in the same clone. Its process starts
with the session (tests/conftest.py); these fixtures wait for what it saw, bounded."""

import pickle
import time

import pytest

# from the chain's start: above the sum of its bounded waits (the daemon twice 900 s, synth 600 s,
# `dvc repro` 900 s, `dagster dev`'s start 180 s, the clone and the pictures)
CHAIN_WAIT_S = 3900


def _result(chain_beside, name: str) -> dict:
    proc, out, started = chain_beside
    while not (out / name).is_file():
        # ended: looked at again after the exit, for a file written just before it
        if proc.poll() is not None and not (out / name).is_file():
            why = f"ended (exit {proc.returncode}) without {name}"
        elif time.monotonic() > started + CHAIN_WAIT_S:
            why = f"wrote no {name} in {CHAIN_WAIT_S} s"
        else:
            time.sleep(1)
            continue
        pytest.fail(f"the training chain {why}:\n{(out / 'chain.log').read_text(errors='replace')[-5000:]}")
    return pickle.loads((out / name).read_bytes())


@pytest.fixture(scope="session")
def dagster_chain(chain_beside) -> dict:
    """What "Materialize all", the loop and the screenshot did (steps 1-3)."""
    return _result(chain_beside, "seen.pkl")


@pytest.fixture(scope="session")
def dvc_after_dagster(chain_beside, dagster_chain) -> dict:
    """The clone after `dvc repro` over Dagster's files (step 4)."""
    return _result(chain_beside, "repro.pkl")
