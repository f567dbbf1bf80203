"""The model card's content follows its inputs (models/model_card.py); the registry side is in
tests/pipelines/test_registry_chain.py. `python -m pytest tests/models/test_model_card.py -q`"""

import yaml

from models.model_card import dvc_hash, model_card

REPORT = {"n": 40, "change_f1": 0.61, "change_precision": 0.6, "exact_match": 0.3,
          "ci95": {"change_f1": [0.55, 0.67]},
          "per_type": {"difference": {"n": 40, "change_f1": 0.61}, "presence": {"n": 12, "accuracy": 0.75}}}


def test_the_card_carries_provenance_metrics_with_intervals_and_per_type_rows():
    card = model_card("m", "3", "run123", {"profile": "default", "train.epochs": 8, "secret.other": 1},
                      REPORT, {"change_f1": 0.58}, "dv16", "abc.dir", "deadbeef", "runs:/run123/evaluation/s.png")
    assert card.startswith("# m version 3")
    for text in ("`run123`", "`deadbeef`", "`dv16`", "`abc.dir`", "| train.epochs | 8 |",
                 "| change_f1 | 0.610 | [0.550, 0.670] |", "| exact_match | 0.300 | — |",
                 "| presence | 12 | accuracy 0.750 |", "runs:/run123/evaluation/s.png", "## Known limits"):
        assert text in card, text
    assert "secret.other" not in card  # only the key parameters; the rest is on the run


def test_dvc_hash_is_read_from_the_lock_of_any_stage():
    lock = yaml.safe_dump({"schema": "2.0", "stages": {
        "residuals": {"outs": [{"path": "data/residuals", "md5": "f00.dir"}]},
        "train": {"outs": [{"path": "runs/model/best", "md5": "b4r.dir"}]}}})
    assert dvc_hash(lock, "data/residuals") == "f00.dir"
    assert dvc_hash(lock, "data/residuals/") == "f00.dir"
    assert dvc_hash(lock, "data/other") is None
    assert dvc_hash(None, "data/residuals") is None and dvc_hash(": not yaml [", "x") is None
