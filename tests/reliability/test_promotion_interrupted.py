"""A promotion interrupted at each registry write in turn, in a real MLflow sqlite registry: the
fault is a client that raises once on its Nth write (tag or alias), as a dropped connection or
a killed process would. After a plain re-run of `promote`, aliases and promotion tags equal those
of an uninterrupted promotion. `python -m pytest tests/reliability/test_promotion_interrupted.py`"""

import shutil

import pytest
from mlflow import MlflowClient

from models.promotion import PromotionRule
from models.registry import CANDIDATE, CHAMPION, promote, tag_version

NAME = "spotdiff-real-fault"
RULE = PromotionRule(metric="change_f1", tie_breaker="CIDEr", margin=0.0)


class Interrupted(RuntimeError):
    pass


class FailingClient(MlflowClient):
    """A real MlflowClient whose `fail_at`-th registry write raises instead of running."""

    def __init__(self, uri: str, fail_at: int):
        super().__init__(uri, uri)
        self.fail_at, self.writes = fail_at, 0

    def _write(self):
        self.writes += 1
        if self.writes == self.fail_at:
            raise Interrupted(f"registry write {self.writes} interrupted")

    def set_model_version_tag(self, *args, **kwargs):
        self._write()
        return super().set_model_version_tag(*args, **kwargs)

    def set_registered_model_alias(self, *args, **kwargs):
        self._write()
        return super().set_registered_model_alias(*args, **kwargs)


def _registry(tmp_path) -> str:
    """v1 champion, v2 a better candidate: the promotion moves the alias."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = MlflowClient(uri, uri)
    c.create_registered_model(NAME)
    for i, metrics in enumerate(({"change_f1": 0.40, "CIDEr": 1.0}, {"change_f1": 0.50, "CIDEr": 1.0})):
        v = c.create_model_version(NAME, source=str(tmp_path / "model"))
        tag_version(c, NAME, str(v.version), val_metrics=metrics, data_version="d", git_commit="c")
        if i == 0:
            promote(c, RULE, NAME)
    return uri


def _state(uri: str) -> dict:
    c = MlflowClient(uri, uri)
    aliases = {a: str(c.get_model_version_by_alias(NAME, a).version) for a in (CANDIDATE, CHAMPION)}
    tags = {v: {k: t for k, t in c.get_model_version(NAME, v).tags.items() if k.startswith("promotion.")}
            for v in ("1", "2")}
    return {"aliases": aliases, "tags": tags}


@pytest.fixture(scope="module")
def seed_db(tmp_path_factory):
    """One registry built once (schema migrations take seconds); each test gets a copy."""
    tmp = tmp_path_factory.mktemp("seed")
    _registry(tmp)
    return tmp / "mlflow.db"


def _copy(seed_db, tmp_path) -> str:
    shutil.copy(seed_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="module")
def reference(seed_db, tmp_path_factory):
    uri = _copy(seed_db, tmp_path_factory.mktemp("ref"))
    counter = FailingClient(uri, fail_at=0)  # never fails; counts the writes of one promotion
    result = promote(counter, RULE, NAME)
    assert result.decision.promote and result.champion_after == "2"
    return _state(uri), counter.writes


def test_reference_promotion_moves_champion(reference):
    state, writes = reference
    assert state["aliases"] == {CANDIDATE: "2", CHAMPION: "2"}
    assert state["tags"]["2"]["promotion.decision"] == "promoted"
    assert state["tags"]["2"]["promotion.champion_before"] == "1"
    assert writes >= 2


@pytest.mark.parametrize("fail_at", range(1, 8))
def test_interrupted_at_each_write_then_rerun_is_consistent(reference, seed_db, tmp_path, fail_at):
    ref_state, writes = reference
    assert fail_at <= writes, f"a promotion now makes {writes} writes: adjust the range"
    uri = _copy(seed_db, tmp_path)
    with pytest.raises(Interrupted):
        promote(FailingClient(uri, fail_at), RULE, NAME)
    mid = _state(uri)
    # mid-way the champion is either still v1 or v2; it is never missing
    assert mid["aliases"][CHAMPION] in ("1", "2")
    if mid["aliases"][CHAMPION] == "2":  # moved: the why is already recorded on the version
        assert mid["tags"]["2"]["promotion.code"] == ref_state["tags"]["2"]["promotion.code"]
    promote(MlflowClient(uri, uri), RULE, NAME)
    assert _state(uri) == ref_state
    promote(MlflowClient(uri, uri), RULE, NAME)  # and once more changes nothing
    assert _state(uri) == ref_state
