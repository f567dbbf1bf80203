"""A user's mistake in a Dagster run is one line, as in the CLI: the step fails with a
dg.Failure whose description names the file and the reason, with no retry and no Python
traceback of the domain code; an internal error keeps its traceback.
`python -m pytest tests/reliability/test_dagster_failures.py`"""

import shutil

import dagster as dg
import pytest

from assets.ingest import METADATA_CSV
from pipelines.defs import data as D
from pipelines.defs.failures import one_line_failures
from pipelines.resources import GreatExpectationsResource, SpotdiffParams
from tests.fixtures.tiny_mimic import write_tiny


def _failure_of(result, step: str):
    event = next(e for e in result.all_events if e.is_step_failure and e.step_key == step)
    return event.step_failure_data


@pytest.mark.timeout(120)
@pytest.mark.parametrize("defect", ["missing", "empty"])
def test_a_bad_table_fails_the_asset_in_one_line_naming_it(tmp_path, defect):
    t = write_tiny(tmp_path / "raw", subjects=2)
    mimic = tmp_path / "mimic"
    shutil.copytree(t.mimic_root, mimic)
    if defect == "missing":
        (mimic / METADATA_CSV).unlink()
    else:
        (mimic / METADATA_CSV).write_bytes(b"")
    res = {"params": SpotdiffParams(profile="smoke", mimic_root=str(mimic), diffvqa_root=str(t.diffvqa_root),
                                    prepared_root=str(tmp_path / "prepared")),
           "gx": GreatExpectationsResource()}
    result = dg.materialize([D.mimic_images], resources=res, raise_on_error=False)
    assert not result.success
    failure = _failure_of(result, "mimic_images")
    description = failure.user_failure_data.description
    assert METADATA_CSV in description and "\n" not in description
    assert ("not found" if defect == "missing" else "not gzip") in description
    assert failure.error is not None and "Traceback" not in failure.user_failure_data.description


def test_an_internal_error_keeps_its_traceback_and_a_generator_body_is_wrapped_too():
    @one_line_failures
    def broken():
        raise KeyError("a bug")

    @one_line_failures
    def steps():
        yield 1
        raise FileNotFoundError("data/x.csv: not found")

    with pytest.raises(KeyError):
        broken()
    with pytest.raises(dg.Failure) as e:
        list(steps())
    assert e.value.description == "data/x.csv: not found" and e.value.allow_retries is False
