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
from pipelines.params import ParamsError, load_params


def storage_options(root: str) -> dict[str, Any]:
    if not root.startswith("s3://"):
        return {}
    endpoint = os.environ.get("SPOTDIFF_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def storage_for(root: str) -> Storage:
    return Storage(str(root), storage_options(str(root)))


def _typed(section: dict, where: str, key: str, kind: type):
    """section[key] as `kind`, or a ParamsError naming the key: `image_size: big` must say so
    before any work, not surface as a ValueError traceback from deep inside. bool is strict
    (bool("no") is True)."""
    value = section[key]
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ParamsError(f"params.yaml: {where}.{key} = {value!r} is not a {kind.__name__}") from None


def residual_config(params: dict) -> ResidualConfig:
    r = params["residuals"]
    get = lambda key, kind: _typed(r, "residuals", key, kind)  # noqa: E731
    iters = r["register_iters"]
    if not isinstance(iters, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in iters):
        raise ParamsError(f"params.yaml: residuals.register_iters = {iters!r} is not a list of int")
    return ResidualConfig(image_size=get("image_size", int), register=get("register", bool),
                          shard_max_mb=get("shard_max_mb", float), workers=get("workers", int),
                          batch_size=get("batch_size", int), low_pct=get("low_pct", float),
                          high_pct=get("high_pct", float),
                          registration=RegistrationConfig(iters=tuple(iters)))


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
