"""Read params.yaml: the one config of the Dagster assets, the DVC stages and the CLI.

It lives in the lowest layer because both halves read it: the data API (assets/prepare.py) and
the model API (models/lifecycle/) take the resolved dict, and the adapters in pipelines/ only
choose the profile and the overrides.

Layering, lowest first: params.yaml's top-level sections (the `default` profile), the chosen
profile's overlay from `profiles:`, environment variables for the data roots, then explicit
overrides from a CLI flag or a Dagster run config. The resolved dict is what gets logged."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

PARAMS_ENV = "SPOTDIFF_PARAMS"
PROFILE_ENV = "SPOTDIFF_PROFILE"
# env var -> (section, key): how a user points the pipeline at a download without editing a file.
ENV_OVERRIDES = {
    "SPOTDIFF_MIMIC_ROOT": ("data", "mimic_root"),
    "SPOTDIFF_DIFFVQA_ROOT": ("data", "diffvqa_root"),
}


class UserError(Exception):
    """A mistake the user can fix (bad path, bad value, a step not run yet): every entry point
    prints it as one line (the CLI with exit code 2), never as a traceback."""


class ParamsError(UserError, ValueError):
    """params.yaml is missing, unparseable, or names a profile/key that does not exist."""


def repo_root() -> Path:
    """Where params.yaml lives: $SPOTDIFF_PARAMS's folder, else the working directory (DVC and
    `dagster dev` both run from the repo root)."""
    return params_path().parent


def resolve_path(path: str, base: str | Path | None = None) -> str:
    """A local path resolved against `base` (default: the repo root, where params.yaml's paths
    and the image paths in the tables are relative to; Ray workers, DVC and a user in another
    folder may run elsewhere). Absolute paths and URLs as they are."""
    if "://" in path or os.path.isabs(path):
        return path
    if base is not None:
        return os.path.join(base, path)
    return str((repo_root() / path).resolve())


def storage_options(root: str) -> dict[str, Any]:
    """fsspec options for a root: the S3 endpoint from the usual env vars (SPOTDIFF_S3_ENDPOINT
    wins over AWS_ENDPOINT_URL; keys are read by s3fs itself). Read here, at the edge, so the
    storage layer below never reads the environment."""
    if not root.startswith("s3://"):
        return {}
    endpoint = os.environ.get("SPOTDIFF_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def storage_for(root: str):
    """The Storage (assets/storage.py) of a root from params.yaml: a local path or s3:// URL."""
    from assets.storage import Storage

    return Storage(str(root), storage_options(str(root)))


def params_path() -> Path:
    return Path(os.environ.get(PARAMS_ENV, "params.yaml")).resolve()


def deep_merge(base: dict, overlay: dict, where: str = "") -> dict:
    """Overlay onto a copy of base. A key the base does not have is an error, not a silent new
    setting: a typo in a profile must not be ignored."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        path = f"{where}.{key}" if where else key
        if key not in out:
            raise ParamsError(f"params.yaml: unknown key {path!r} (not in the base sections)")
        if isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = deep_merge(out[key], value, path)
        else:
            out[key] = value
    return out


def load_params(path: str | Path | None = None, profile: str | None = None,
                overrides: dict[str, Any] | None = None) -> dict:
    path = Path(path) if path else params_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ParamsError(f"{path}: not found (set {PARAMS_ENV} or run from the repo root)") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict) or "profiles" not in raw:
        raise ParamsError(f"{path}: expected a mapping with a 'profiles' section")
    profiles = raw.pop("profiles")
    chosen = profile or os.environ.get(PROFILE_ENV) or raw.get("profile", "default")
    recorded = raw.get("profile", "default")
    if os.environ.get("DVC_STAGE") and chosen != recorded:
        # DVC records params.yaml in dvc.lock, not the environment: a smoke run would be locked
        # as `profile: default`, and the next default run would find it "up to date"
        raise ParamsError(f"{path}: this DVC stage would run profile {chosen!r} while dvc.lock "
                          f"records profile: {recorded}; select it where DVC sees it: "
                          f"`dvc exp run -S profile={chosen}` or `profile: {chosen}` in params.yaml")
    if chosen not in profiles:
        raise ParamsError(f"{path}: profile {chosen!r} not in profiles {sorted(profiles)}")
    params = deep_merge(raw, profiles[chosen] or {})
    params["profile"] = chosen
    for env, (section, key) in ENV_OVERRIDES.items():
        if os.environ.get(env):
            params[section][key] = os.environ[env]
    if overrides:
        params = deep_merge(params, overrides)
    from assets.params_schema import problem

    why = problem(params)
    if why:
        raise ParamsError(f"{path}: {why}" + (f" (profile {chosen})" if chosen != "default" else ""))
    return params


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: the form MLflow params and DVC `-S` keys use."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def parse_sets(sets: list[str] | None) -> dict:
    """["train.epochs=3", "model.use_rfa=false"] -> nested overrides (values parsed as YAML):
    the `--set` of the CLI and the `sets` of a Dagster run config."""
    out: dict = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected section.key=value")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def typed(section: dict, where: str, key: str, kind: type):
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
