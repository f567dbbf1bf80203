"""Dagster assets of the model registry: `registered_model` logs the evaluated model as the
MLflow pyfunc and registers it (alias candidate), `champion_model` applies the promotion rule
(alias champion) and, as its check `promotion_rule`, re-derives the decision from the registry
tags with the same params. Same functions as `spotdiff register/promote` and the DVC stages
(models/lifecycle/registry.py)."""

# No `from __future__ import annotations`: Dagster resolves Config annotations at definition time.
import base64

import dagster as dg

from assets.params import load_params
from pipelines.defs.automation import FOLLOW
from pipelines.defs.failures import one_line_failures


class RegistryConfig(dg.Config):
    profile: str | None = None      # params.yaml profile; None: params' own `profile`


def _png_md(path) -> dg.MetadataValue:
    """An inline picture in the asset's metadata panel."""
    return dg.MetadataValue.md(f"![{path.name}](data:image/png;base64,"
                               f"{base64.b64encode(path.read_bytes()).decode()})")


@dg.asset(automation_condition=FOLLOW, deps=["evaluation"], group_name="registry", kinds={"mlflow"})
@one_line_failures
def registered_model(config: RegistryConfig) -> dg.MaterializeResult:
    """The trained ReAl as an MLflow pyfunc, a version of spotdiff-real with alias candidate."""
    from models.lifecycle.registry import register, registry_dir

    params = load_params(profile=config.profile)
    reg = register(params)  # test.* tags from the evaluation asset's metrics file
    folder = registry_dir(params)
    return dg.MaterializeResult(metadata={
        "model_uri": reg.model_uri, "version": reg.version, "mlflow_run_id": reg.run_id,
        "new_version": reg.created,
        "sample_sheet": _png_md(folder / "sample_sheet.png"),
        "change_confusion": _png_md(folder / "change_confusion.png"),
        "exported_model": dg.MetadataValue.path(str(folder / "model")),
        "model_card": dg.MetadataValue.md((folder / "model_card.md").read_text()),
        "model_card_file": dg.MetadataValue.path(str(folder / "model_card.md")),
    })


@dg.asset(automation_condition=FOLLOW, deps=[registered_model], group_name="registry", kinds={"mlflow"},
          check_specs=[dg.AssetCheckSpec("promotion_rule", asset="champion_model",
                                         description="the champion alias agrees with the promotion "
                                                     "rule re-applied to the registry's tags")])
@one_line_failures
def champion_model(config: RegistryConfig):
    """Alias champion, moved to the candidate only when the promotion rule says so."""
    from models.lifecycle.registry import promote, promotion_check

    params = load_params(profile=config.profile)
    _, summary = promote(params)
    yield dg.MaterializeResult(metadata={k: ("" if v is None else v) for k, v in summary.items()})
    ok, seen = promotion_check(params)
    yield dg.AssetCheckResult(check_name="promotion_rule", passed=ok, metadata=seen)


defs = dg.Definitions(assets=[registered_model, champion_model])
