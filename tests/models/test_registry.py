"""Promotion in a real MLflow registry (sqlite store in tmp): candidate alias, champion moves only
when the rule says so, idempotent, refuses unevaluated versions, records its reason.
`python -m pytest tests/models/test_registry.py`"""

import os

import mlflow
import pytest
from mlflow import MlflowClient

from models.promotion import PromotionRefused, PromotionRule, decide
from models.registry import CANDIDATE, CHAMPION, promote, tag_version

NAME = "spotdiff-real-test"


EXPERIMENT = "registry-test"


class _Constant(mlflow.pyfunc.PythonModel):
    # The rule only reads the registry; what the version contains does not matter to it.
    def predict(self, context, model_input, params=None):
        return ["nothing has changed."] * len(model_input)


@pytest.fixture()
def client(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    c = MlflowClient(uri, uri)
    # new_version's runs go to this experiment by id: mlflow.set_experiment would leave it the
    # process's active experiment for every later test
    c.create_experiment(EXPERIMENT)
    yield c
    # set_*_uri also export MLFLOW_*_URI to the environment: undo that for later tests
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def new_version(client, val_metrics=None):
    with mlflow.start_run(experiment_id=client.get_experiment_by_name(EXPERIMENT).experiment_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=_Constant(), pip_requirements=[],
                                       registered_model_name=NAME)
    version = str(info.registered_model_version)
    if val_metrics is not None:
        tag_version(client, NAME, version, val_metrics=val_metrics, data_version="d", git_commit="c")
    else:
        client.set_registered_model_alias(NAME, CANDIDATE, version)
    return version


def alias(client, a):
    return str(client.get_model_version_by_alias(NAME, a).version)


def test_promotion_sequence(client):
    rule = PromotionRule(metric="change_f1", tie_breaker="CIDEr", margin=0.01)
    v1 = new_version(client, {"change_f1": 0.40, "CIDEr": 1.0})
    r = promote(client, rule, NAME)
    assert r.decision.code == "no_champion" and alias(client, CHAMPION) == v1
    # running it twice changes nothing
    tags_before = client.get_model_version(NAME, v1).tags
    r = promote(client, rule, NAME)
    assert r.decision.code == "already_champion" and alias(client, CHAMPION) == v1
    assert client.get_model_version(NAME, v1).tags == tags_before

    v2 = new_version(client, {"change_f1": 0.405, "CIDEr": 2.0})  # within the margin
    r = promote(client, rule, NAME)
    assert not r.decision.promote and alias(client, CHAMPION) == v1
    tags = client.get_model_version(NAME, v2).tags
    assert tags["promotion.decision"] == "kept_champion" and "margin" in tags["promotion.reason"]

    v3 = new_version(client, {"change_f1": 0.50, "CIDEr": 0.5})
    r = promote(client, rule, NAME)
    assert r.decision.code == "better" and alias(client, CHAMPION) == v3
    assert client.get_model_version(NAME, v3).tags["promotion.champion_before"] == v1


def test_unevaluated_version_is_refused(client):
    new_version(client, {"change_f1": 0.4})
    promote(client, PromotionRule(), NAME)
    v2 = new_version(client, None)
    with pytest.raises(PromotionRefused, match="evaluate it"):
        promote(client, PromotionRule(), NAME)
    assert client.get_model_version(NAME, v2).tags["promotion.decision"] == "refused"
    assert alias(client, CHAMPION) != v2


@pytest.mark.parametrize(
    "cand, champ, margin, promoted",
    [
        ({"change_f1": 0.5, "CIDEr": 1.0}, None, 0.0, True),                           # first champion
        ({"change_f1": 0.5, "CIDEr": 1.0}, {"change_f1": 0.5, "CIDEr": 0.9}, 0.0, True),  # tie, CIDEr breaks it
        ({"change_f1": 0.5, "CIDEr": 0.9}, {"change_f1": 0.5, "CIDEr": 1.0}, 0.0, False), # tie, CIDEr worse
        ({"change_f1": 0.52}, {"change_f1": 0.5}, 0.05, False),                          # better, not by margin
        ({"change_f1": 0.56}, {"change_f1": 0.5}, 0.05, True),
        ({"change_f1": 0.4}, {"change_f1": 0.5}, 0.0, False),
    ],
)
def test_rule(cand, champ, margin, promoted):
    assert decide(PromotionRule(margin=margin), cand, champ).promote is promoted


GATE = PromotionRule(floor_margin=0.05, min_parse_rate=0.99)


@pytest.mark.parametrize(
    "cand, champ, code",
    [
        # no champion yet: the gate still applies (a first model that reads no image is refused)
        ({"change_f1": 0.10, "prior_change_f1": 0.08, "prediction_parse_rate": 1.0}, None, "below_floor"),
        ({"change_f1": 0.60, "prior_change_f1": 0.08, "prediction_parse_rate": 1.0}, None, "no_champion"),
        ({"change_f1": 0.60, "prior_change_f1": 0.08, "prediction_parse_rate": 0.9}, None, "unparseable"),
        ({"change_f1": 0.60, "prior_change_f1": 0.08}, None, "unparseable"),  # never measured: refused
        # the gate comes before the champion comparison
        ({"change_f1": 0.12, "prior_change_f1": 0.08, "prediction_parse_rate": 1.0}, {"change_f1": 0.05}, "below_floor"),
        ({"change_f1": 0.70, "prior_change_f1": 0.08, "prediction_parse_rate": 1.0}, {"change_f1": 0.6}, "better"),
    ],
)
def test_gate(cand, champ, code):
    d = decide(GATE, cand, champ)
    assert d.code == code and d.promote is (code in ("no_champion", "better"))


def test_gate_is_built_from_params_once():
    from assets.params import load_params

    rule = PromotionRule.from_params(load_params(profile="default")["registry"])
    assert rule.floor_margin > 0 and rule.min_parse_rate >= 0.99
    assert "prior_change_f1" in rule.describe()
