"""Dagster assets of the model registry: `registered_model` logs the evaluated model as the
MLflow pyfunc and registers it (alias candidate), `champion_model` applies the promotion rule
(alias champion), and the asset check `promotion_rule` re-derives the decision from the registry
tags and checks the aliases agree with it. Same functions as `spotdiff register/promote` and the
DVC stages (pipelines/commands/registry.py)."""

# No `from __future__ import annotations`: Dagster resolves Config annotations at definition time.
import base64
from pathlib import Path

import dagster as dg

from pipelines.params import load_params


class RegistryConfig(dg.Config):
    profile: str | None = None      # params.yaml profile; None: params' own `profile`


def _png_md(path) -> dg.MetadataValue:
    """An inline picture in the asset's metadata panel."""
    return dg.MetadataValue.md(f"![{path.name}](data:image/png;base64,"
                               f"{base64.b64encode(path.read_bytes()).decode()})")


@dg.asset(deps=["evaluation"], group_name="registry", kinds={"mlflow"})
def registered_model(config: RegistryConfig) -> dg.MaterializeResult:
    """The trained ReAl as an MLflow pyfunc, a version of spotdiff-real with alias candidate."""
    from pipelines.commands.registry import register_from_params, registry_dir
    from pipelines.params import resolve_path

    params = load_params(profile=config.profile)
    # the evaluation asset's re-scoring of the test predictions becomes the test.* tags
    reg = register_from_params(params, Path(resolve_path(params["train"]["output_dir"])) / "evaluation.json")
    folder = registry_dir(params)
    return dg.MaterializeResult(metadata={
        "model_uri": reg.model_uri, "version": reg.version, "mlflow_run_id": reg.run_id,
        "new_version": reg.created,
        "sample_sheet": _png_md(folder / "sample_sheet.png"),
        "change_confusion": _png_md(folder / "change_confusion.png"),
        "exported_model": dg.MetadataValue.path(str(folder / "model")),
    })


@dg.asset(deps=[registered_model], group_name="registry", kinds={"mlflow"})
def champion_model(config: RegistryConfig) -> dg.MaterializeResult:
    """Alias champion, moved to the candidate only when the promotion rule says so."""
    from pipelines.commands.registry import promote_from_params

    _, summary = promote_from_params(load_params(profile=config.profile))
    return dg.MaterializeResult(metadata={k: ("" if v is None else v) for k, v in summary.items()})


@dg.asset_check(asset=champion_model, description="the champion alias agrees with the promotion "
                "rule re-applied to the registry's tags")
def promotion_rule() -> dg.AssetCheckResult:
    from models.promotion import PromotionRule, decide
    from models.registry import CANDIDATE, CHAMPION, _metrics_from_tags, _version_by_alias
    from models.tracking import client_for
    from pipelines.commands.train import tracking_uri

    params = load_params()
    r = params["registry"]
    client = client_for(tracking_uri(params))
    cand = _version_by_alias(client, r["model_name"], CANDIDATE)
    champ = _version_by_alias(client, r["model_name"], CHAMPION)
    if cand is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "candidate alias missing"})
    rule = PromotionRule.from_params(r)
    before = cand.tags.get("promotion.champion_before") or None
    prev = client.get_model_version(r["model_name"], before) if before else None
    d = decide(rule, _metrics_from_tags(cand.tags), _metrics_from_tags(prev.tags) if prev else None)
    expected = str(cand.version) if d.promote else before
    now = str(champ.version) if champ is not None else None  # a gate may refuse the first candidate
    ok = now == expected and cand.tags.get("promotion.decision") in ("promoted", "kept_champion")
    return dg.AssetCheckResult(passed=ok, metadata={
        "candidate": str(cand.version), "champion": now or "none", "rule_says": d.code,
        "reason": cand.tags.get("promotion.reason", "")})


defs = dg.Definitions(assets=[registered_model, champion_model], asset_checks=[promotion_rule])
