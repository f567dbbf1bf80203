"""Dagster resources of the data assets: the resolved params.yaml, storage roots (local or s3://,
options from the environment), and our Great Expectations runner.

The S3 endpoint and keys are read here, at the edge, from the usual env vars (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...; SPOTDIFF_S3_ENDPOINT wins) and passed into assets.storage as options."""

from __future__ import annotations

import os
from typing import Any, Optional

import dagster as dg

from assets.residuals import ResidualConfig
from assets.registration import RegistrationConfig
from assets.storage import Storage
from pipelines.params import load_params


def storage_options(root: str) -> dict[str, Any]:
    if not root.startswith("s3://"):
        return {}
    endpoint = os.environ.get("SPOTDIFF_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def storage_for(root: str) -> Storage:
    return Storage(str(root), storage_options(str(root)))


def residual_config(params: dict) -> ResidualConfig:
    r = params["residuals"]
    return ResidualConfig(image_size=int(r["image_size"]), register=bool(r["register"]),
                          shard_max_mb=float(r["shard_max_mb"]), workers=int(r["workers"]),
                          batch_size=int(r["batch_size"]), low_pct=float(r["low_pct"]),
                          high_pct=float(r["high_pct"]),
                          registration=RegistrationConfig(iters=tuple(int(i) for i in r["register_iters"])))


class SpotdiffParams(dg.ConfigurableResource):
    """params.yaml, resolved (profile, env vars for the data roots), plus optional root overrides
    (tests point the assets at a temporary dataset this way)."""

    profile: Optional[str] = None
    mimic_root: Optional[str] = None
    diffvqa_root: Optional[str] = None
    prepared_root: Optional[str] = None
    residuals_root: Optional[str] = None
    check_files: Optional[bool] = None

    def params(self) -> dict:
        data = {k: getattr(self, k) for k in ("mimic_root", "diffvqa_root", "prepared_root", "residuals_root",
                                              "check_files") if getattr(self, k) is not None}
        return load_params(profile=self.profile, overrides={"data": data} if data else None)

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
