"""The pipelines' one training chain (tests/pipelines/dagster_chain.py), shared: the Dagster UI
tests judge its first half, the DVC and registry tests go on in the same clone."""

import pytest


@pytest.fixture(scope="session")
def dagster_chain(tmp_path_factory) -> dict:
    from tests.pipelines.dagster_chain import materialize_all_then_the_loop

    return materialize_all_then_the_loop(tmp_path_factory.mktemp("chain"))
