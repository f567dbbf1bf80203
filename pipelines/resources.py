"""Dagster resources of the data assets: the resolved params.yaml, storage roots (local or s3://,
options from the environment through assets.params.storage_for), and our Great Expectations runner."""

from __future__ import annotations

from typing import Optional

import dagster as dg

from assets.params import load_params, storage_for
from assets.storage import Storage


class SpotdiffParams(dg.ConfigurableResource):
    """params.yaml, resolved (profile, env vars for the data roots), plus optional root overrides
    (tests point the assets at a temporary dataset this way)."""

    profile: Optional[str] = None
    mimic_root: Optional[str] = None
    diffvqa_root: Optional[str] = None
    prepared_root: Optional[str] = None
    residuals_root: Optional[str] = None
    check_files: Optional[bool] = None
    # dotted params overrides, as `spotdiff … --set` and `dvc exp run -S` take them:
    # e.g. ["pairs.single_image_reference=control"] for the See-in-Pairs pairing
    sets: Optional[list[str]] = None

    def params(self) -> dict:
        from assets.params import parse_sets

        overrides = parse_sets(self.sets)
        data = {k: getattr(self, k) for k in ("mimic_root", "diffvqa_root", "prepared_root", "residuals_root",
                                              "check_files") if getattr(self, k) is not None}
        if data:
            overrides.setdefault("data", {}).update(data)
        return load_params(profile=self.profile, overrides=overrides or None)

    def storage(self, key: str) -> Storage:
        return storage_for(self.params()["data"][key])


class GreatExpectationsResource(dg.ConfigurableResource):
    """Runs a suite of assets.validation and turns its summary into an asset check result."""

    def check(self, suite_fn, *args, asset: str, check_name: str | None = None) -> dg.AssetCheckResult:
        res = suite_fn(*args)
        return dg.AssetCheckResult(
            passed=res.success, asset_key=asset, check_name=check_name,
            metadata={"gx_summary": dg.MetadataValue.md(res.markdown()),
                      "gx_statistics": dg.MetadataValue.json(res.statistics),
                      "failed_expectations": dg.MetadataValue.json(res.failures)})
