"""The loop that runs itself: new or changed raw tables are noticed, re-ingested, and every asset
down to the champion follows when its parents have new data — training included, promotion only
through the gate (champion_model's rule and check).

- raw_data_sensor polls the tables ingestion reads (one stat each, assets/embedded.py
  table_stamps) and, when they differ from its cursor, requests the ingestion assets (and, for
  a download, the embedded_dataset record of it). No change: a skip, no run, no recomputation.
- Every asset below the ingestion carries AutomationCondition.eager(): requested once any parent
  has a newer materialization, none is missing or in progress. New pairs request every
  residual_images partition; the sensor emits them as one backfill and the asset's single-run
  backfill policy makes that one run, in which a group whose pairs are unchanged keeps its
  shards (the content decides, in the function the CLI and DVC call too), so a batch of new
  subjects recomputes only the groups it lands in. A blocking check that fails stops its
  asset's materialization, so nothing below it runs, and the UI says which check.
- One automation sensor evaluates those conditions. Both sensors start as params.yaml
  automation.enabled says (default off: a retrain takes about an hour on 2 cores)."""

import hashlib
import json

import dagster as dg

from assets.embedded import renders_embedded, table_stamps
from assets.params import ParamsError, load_params
from pipelines.resources import SpotdiffParams

INGESTION = ["mimic_images", "diffvqa_questions"]
# Below the ingestion, in graph order: each follows its parents.
FOLLOWERS = ["study_pairs", "quarantine", "residual_images", "pretrained_encoder", "real_model",
             "evaluation", "registered_model", "champion_model"]


def _settings() -> tuple[bool, int]:
    try:
        a = load_params().get("automation") or {}
    except ParamsError:  # the code location still loads; the assets then say what is wrong
        a = {}
    return bool(a.get("enabled", False)), int(a.get("poll_seconds", 60))


ENABLED, POLL_SECONDS = _settings()
STATUS = dg.DefaultSensorStatus.RUNNING if ENABLED else dg.DefaultSensorStatus.STOPPED


@dg.sensor(name="raw_data_sensor", minimum_interval_seconds=POLL_SECONDS, default_status=STATUS,
           target=dg.AssetSelection.assets("embedded_dataset", *INGESTION),
           description="New or changed MIMIC-CXR-JPG / Medical-Diff-VQA tables: re-ingest.")
def raw_data_sensor(context: dg.SensorEvaluationContext, params: SpotdiffParams):
    p = params.params()
    stamps = table_stamps(p)
    key = hashlib.sha256(json.dumps(stamps, sort_keys=True).encode()).hexdigest()[:16]
    if key == context.cursor:
        return dg.SkipReason("no new or changed raw tables")
    context.update_cursor(key)
    # a download is fingerprinted by embedded_dataset (cheap); a rendered dataset is not re-rendered
    selection = INGESTION if renders_embedded(p) else ["embedded_dataset", *INGESTION]
    return dg.RunRequest(run_key=key, asset_selection=[dg.AssetKey(k) for k in selection],
                         tags={"spotdiff/trigger": "raw_data_sensor", "spotdiff/tables": key})


# On every asset in FOLLOWERS (set in its decorator).
FOLLOW = dg.AutomationCondition.eager()

# emit_backfills (Dagster's default, spelled out): a tick that requests several partitions of
# residual_images hands them to the backfill daemon, which honours the single-run policy.
loop_sensor = dg.AutomationConditionSensorDefinition(
    "spotdiff_loop", target=dg.AssetSelection.assets(*FOLLOWERS), default_status=STATUS,
    minimum_interval_seconds=min(30, POLL_SECONDS), emit_backfills=True, description="Runs each asset below the ingestion when its parents have new data.")


defs = dg.Definitions(sensors=[raw_data_sensor, loop_sensor])
