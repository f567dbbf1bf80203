"""Encoder pretraining: one epoch on the tiny shards writes an encoder state_dict that ReAl's
encoders load exactly; the stage skips cleanly (and says why) when the user brings weights or
switches it off, and `train` then starts from the user's weights.
`python -m pytest tests/models/test_pretrain.py`"""

import json

import pytest
import torch

from models.encoders import ImageEncoder
from models.pretrain import ENCODER_FILE, REPORT_FILE, PretrainConfig, data_batches, pretrain
from models.train_loop import DataSpec, TrainConfig
from tests.fixtures.tiny_shards import write_tiny_shards


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("data"), n_shards=2)


def test_one_epoch_writes_an_encoder_reals_encoders_load(tiny, tmp_path):
    data = DataSpec(str(tiny.residuals_root), str(tiny.pairs_parquet), "",
                    targets_parquet=str(tiny.pairs_parquet.parent / "finding_targets.parquet"))
    aug = TrainConfig(question_types=("all",), crop_scale=0.875)
    model_cfg = {"image_size": 32, "residual_kind": "naive"}
    train, n = data_batches(data, "train", aug, model_cfg, 4, augment=True)
    val, _ = data_batches(data, "val", aug, model_cfg, 4, augment=False)
    logged = []
    report = pretrain(PretrainConfig(epochs=1, pairs_per_batch=4, lr=3e-3, warmup_steps=1), "tiny",
                      train, lambda: val(0), -(-n // 4), tmp_path, log=lambda m, s: logged.append(m))
    assert n == 16 and report["steps"] == 4 and 0.0 <= report["val_presence_accuracy"] <= 1.0
    assert any("pretrain/loss" in m for m in logged)
    assert json.loads((tmp_path / REPORT_FILE).read_text())["encoder"] == ENCODER_FILE
    saved = torch.load(tmp_path / ENCODER_FILE, weights_only=True)
    enc = ImageEncoder("tiny", centered=False, pretrained=str(tmp_path / ENCODER_FILE))
    for k, v in enc.backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k
    fresh = ImageEncoder("tiny", centered=False)
    assert any(not torch.equal(v, saved[k]) for k, v in fresh.backbone.state_dict().items())


def test_resnet_encoder_round_trips_through_torchvision_names(tmp_path):
    from models.pretrain import EncoderPretrainer

    model = EncoderPretrainer("resnet18")
    torch.save(model.backbone_state(), tmp_path / ENCODER_FILE)
    assert "conv1.weight" in model.backbone_state()  # torchvision's names: any ResNet loader reads it
    enc = ImageEncoder("resnet18", centered=True, pretrained=str(tmp_path / ENCODER_FILE))
    assert torch.equal(enc.backbone.net.conv1.weight, model.encoder.backbone.net.conv1.weight)


@pytest.mark.parametrize("override, reason", [
    ({"model": {"pretrained_resnet": "/weights/mine.pth"}}, "model.pretrained_resnet is set"),
    ({"pretrain": {"epochs": 0}}, "pretrain.epochs is 0"),
])
def test_stage_skips_cleanly_and_train_uses_the_users_weights(tmp_path, monkeypatch, override, reason):
    from models.lifecycle.pretrain import encoder_for_training, pretrain
    from assets.params import load_params

    params = load_params(profile="smoke", overrides={"pretrain": {"output_dir": str(tmp_path / "pre")},
                                                     **{k: v for k, v in override.items() if k != "pretrain"}})
    if "pretrain" in override:
        params["pretrain"].update(override["pretrain"])
    report = pretrain(params)
    assert reason in report["skipped"]
    assert json.loads((tmp_path / "pre" / REPORT_FILE).read_text())["skipped"] == report["skipped"]
    assert not (tmp_path / "pre" / ENCODER_FILE).exists()
    assert encoder_for_training(params) == params["model"]["pretrained_resnet"]


def test_train_refuses_to_start_without_the_stages_encoder(tmp_path):
    from pipelines.commands.common import UserError
    from models.lifecycle.pretrain import encoder_for_training
    from assets.params import load_params

    params = load_params(profile="smoke", overrides={"pretrain": {"epochs": 1, "output_dir": str(tmp_path)}})
    with pytest.raises(UserError, match="run the pretraining stage first"):
        encoder_for_training(params)
