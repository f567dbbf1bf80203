"""The shape of params.yaml as pydantic models (strict types, unknown keys forbidden): every
resolved config — base, profile, environment, overrides — is checked once, where it is read
(assets/params.py), so `train.epochs: ten` or a misspelt key is one line naming the key before
any work, whichever entry point read it. The `model` section is checked by models/config.py's
ModelConfig, which owns it. Strict: a bool is a YAML bool (bool("no") is True), an int an int; an
int is accepted where a float is expected."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Data(_Section):
    embedded_root: str
    mimic_root: str
    diffvqa_root: str
    prepared_root: str
    residuals_root: str
    check_files: bool
    links_may_leave_root: bool


class Synth(_Section):
    subjects: int
    seed: int
    image_size: int
    render_size: int
    min_studies: int
    max_studies: int
    lateral_fraction: float
    workers: int
    jpeg_quality: int
    added_subjects: int


class Pairs(_Section):
    question_types: list[str]
    resplit_by_subject: bool
    single_image_reference: Literal["previous", "control"]


class Residuals(_Section):
    image_size: int
    register_: bool = Field(alias="register")  # `register` would shadow a BaseModel attribute
    shard_max_mb: float
    workers: int
    batch_size: int
    low_pct: float
    high_pct: float
    register_iters: list[int]


class Registry(_Section):
    model_name: str
    metric: str
    tie_breaker: str
    margin: float
    floor_margin: float
    min_parse_rate: float
    output_dir: str
    sample_pairs: int


class Pretrain(_Section):
    epochs: int
    pairs_per_batch: int
    lr: float
    output_dir: str


class Train(_Section):
    num_workers: int
    use_gpu: bool
    question_types: list[str]
    resources_per_worker: dict[str, float]
    storage_path: str
    output_dir: str
    log_dir: str
    run_name: str
    reuse: bool
    max_failures: int
    num_to_keep: int
    seed: int
    deterministic: bool
    bf16: bool
    epochs: int
    pairs_per_batch: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    crop_scale: float
    brightness: float
    contrast: float
    sharpness: float
    shuffle_buffer: int
    swap_prob: float
    log_every: int
    val_max_pairs: int
    val_num_beams: int
    test_num_beams: int
    select_metric: str
    select_mode: Literal["max", "min"]


class Tracking(_Section):
    uri: str
    experiment: str
    system_metrics: bool
    system_metrics_interval_s: float
    sample_predictions: int


class Automation(_Section):
    enabled: bool
    poll_seconds: int


class Evaluate(_Section):
    bootstrap: int
    seed: int
    metrics_file: str


class Params(_Section):
    profile: str
    data: Data
    synth: Synth
    pairs: Pairs
    residuals: Residuals
    registry: Registry
    model: dict[str, Any]
    pretrain: Pretrain
    train: Train
    tracking: Tracking
    automation: Automation
    evaluate: Evaluate


def problem(params: dict) -> str | None:
    """The first thing wrong with a resolved params dict, as `section.key = value: why`; None if fine."""
    from pydantic import ValidationError

    try:
        Params.model_validate(params)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            return f"{where} is missing"
        if err["type"] == "extra_forbidden":
            return f"unknown key {where!r}"
        return f"{where} = {err.get('input')!r}: {err['msg'].lower()}"
    return None
