"""Process-wide environment every entry point sets before importing Dagster, Ray, MLflow or GX.

Telemetry is off (patient-data pipelines must not phone home, and the machines have no internet),
hub downloads are off (weights and tokenizers come from local paths), and local Ray runs without
token auth, and training progress prints once. `setdefault` so a user's explicit setting wins."""

import os

DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "RAY_AUTH_MODE": "disabled",
    # Ray Train V2 turns a worker's print() into a log record AND, when something (MLflow's
    # system-metrics monitor) has wrapped sys.stdout, prints it too: every progress line reached
    # the driver twice. Plain print: once, still forwarded by Ray as "(RayTrainWorker pid=..)".
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "DO_NOT_TRACK": "1",
    # MLflow draws a progress bar per artifact download (register, promote): lines of bars on
    # the main job's terminal for files of a few KB
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow's INFO notices (database set-up, input-example validation, "registered model"): the
    # commands print what they did themselves; warnings and errors still show
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}

for _key, _value in DEFAULTS.items():
    os.environ.setdefault(_key, _value)
