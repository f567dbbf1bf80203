"""params.yaml layering: base sections, profile overlay, env overrides, explicit overrides, and a
clear error for every way the file can be wrong. `python -m pytest tests/pipelines/test_params.py`"""

from pathlib import Path

import pytest
import yaml

from assets.params import ParamsError, flatten, load_params

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repo_params_load_for_every_profile():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in raw["profiles"]:
        params = load_params(REPO / "params.yaml", profile=profile)
        assert params["profile"] == profile
        assert "profiles" not in params


def test_every_profile_registers_its_own_model():
    """A smoke run's model must never become (or be compared with) the default champion that
    `ask` and `serve` load: each profile names its own registered model."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    names = {p: load_params(REPO / "params.yaml", profile=p)["registry"]["model_name"] for p in raw["profiles"]}
    assert len(set(names.values())) == len(names), names


def repo_params(tmp_path, edit=lambda raw: None, profiles=None):
    """The repo's params.yaml with an edit, written to tmp_path (the schema wants every section)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "default"
    raw["profiles"] = profiles or {"default": {}}
    edit(raw)
    return write(tmp_path, yaml.safe_dump(raw))


def test_profile_overlay_env_and_overrides(tmp_path, monkeypatch):
    for k in ("SPOTDIFF_PROFILE", "SPOTDIFF_MIMIC_ROOT", "SPOTDIFF_DIFFVQA_ROOT", "DVC_STAGE"):
        monkeypatch.delenv(k, raising=False)
    p = repo_params(tmp_path, lambda raw: raw["synth"].update(subjects=400),
                    {"smoke": {"synth": {"subjects": 12}}, "default": {}})
    assert load_params(p)["synth"]["subjects"] == 400
    assert load_params(p, profile="smoke")["synth"]["subjects"] == 12
    monkeypatch.setenv("SPOTDIFF_PROFILE", "smoke")
    assert load_params(p)["synth"]["subjects"] == 12
    monkeypatch.setenv("SPOTDIFF_MIMIC_ROOT", "/downloads/mimic")
    assert load_params(p)["data"]["mimic_root"] == "/downloads/mimic"
    assert load_params(p, overrides={"data": {"check_files": False}})["data"]["check_files"] is False


@pytest.mark.parametrize(
    "text, message",
    [
        ("profile: default\nsynth: {a: 1}\nprofiles: {default: {synth: {b: 2}}}\n", "unknown key 'synth.b'"),
        ("profile: nope\nprofiles: {default: {}}\n", "profile 'nope' not in profiles"),
        ("profile: default\nsynth: [unclosed\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_params_name_the_problem(tmp_path, text, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_params(write(tmp_path, text))


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw["train"].update(epochs="ten"), "train.epochs = 'ten': input should be a valid integer"),
    (lambda raw: raw["data"].update(check_files="no"), "data.check_files = 'no': input should be a valid boolean"),
    (lambda raw: raw["train"].update(select_mode="best"), "train.select_mode = 'best'"),
    (lambda raw: raw["train"].update(epochz=3), "unknown key 'train.epochz'"),
    (lambda raw: raw["tracking"].pop("uri"), "tracking.uri is missing"),
], ids=["type", "strict-bool", "choice", "unknown-key", "missing-key"])
def test_the_schema_names_the_key_whatever_entry_point_reads_it(tmp_path, edit, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_params(repo_params(tmp_path, edit))


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_a_dvc_stage_refuses_a_profile_params_yaml_does_not_record(tmp_path, monkeypatch):
    """Under DVC (DVC_STAGE set) the profile must be the one params.yaml names: dvc.lock records
    the file, so an environment-only profile would be locked as another."""
    from assets.params import ParamsError, load_params

    path = repo_params(tmp_path, profiles={"default": {}, "smoke": {"synth": {"subjects": 12}}})
    monkeypatch.setenv("SPOTDIFF_PROFILE", "smoke")
    assert load_params(path)["synth"]["subjects"] == 12  # outside DVC the environment picks it
    monkeypatch.setenv("DVC_STAGE", "train")
    with pytest.raises(ParamsError, match="dvc exp run -S profile=smoke"):
        load_params(path)
    path.write_text(path.read_text().replace("profile: default", "profile: smoke"))
    assert load_params(path)["profile"] == "smoke"
