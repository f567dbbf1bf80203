"""The raw input of the data half, as a step of its own: the embedded dataset is *rendered* when
params' data roots point into data.embedded_root (the default, and a fresh clone), and *observed*
when they point at a user's MIMIC-CXR-JPG / Medical-Diff-VQA download — never overwritten, only
fingerprinted. One function for `spotdiff synth` (no --out), the DVC stage `synth` and the
Dagster asset `embedded_dataset`, so a fresh clone's "Materialize all" has data to ingest.

Either way the step leaves a record in data.embedded_root (DVC tracks that folder): the rendered
dataset with ground_truth/config.json, or observed.json with the size and sha256 of every table
the ingestion reads. The fingerprint is the asset's data version: a new download (or a new
render) changes it, and nothing downstream is stale otherwise."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from assets.params import UserError, resolve_path, storage_for
from assets.storage import FileRefused, json_bytes

OBSERVED_FILE = "observed.json"
# The tables ingestion reads, per root (assets/ingest.py; docs/data.md)
TABLES = {
    "mimic_root": ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-split.csv.gz",
                   "mimic-cxr-2.0.0-chexpert.csv.gz"),
    "diffvqa_root": ("mimic_pair_questions.csv", "mimic_all.csv"),
}
# A bound on any one table: MIMIC-CXR's metadata is ~10 MB, mimic_pair_questions.csv ~100 MB.
MAX_TABLE_BYTES = 4 * 1024**3


def _inside(path: str, root: str) -> bool:
    if "://" in path or "://" in root:
        return path.rstrip("/").startswith(root.rstrip("/") + "/")
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)


def renders_embedded(params: dict) -> bool:
    """Do both raw roots point into the embedded dataset (so this step renders it)?"""
    d = params["data"]
    root = resolve_path(d["embedded_root"])
    return all(_inside(resolve_path(d[k]), root) for k in TABLES)


def _per_table(params: dict, read: Callable[[str, str, object], object | None]) -> dict[str, dict]:
    """{root key: {table: read(key, name, store)}} over TABLES; a None result is left out."""
    out: dict[str, dict] = {}
    for key, names in TABLES.items():
        store = storage_for(resolve_path(params["data"][key]))
        out[key] = {}
        for name in names:
            value = read(key, name, store)
            if value is not None:
                out[key][name] = value
    return out


def _content(key: str, name: str, store) -> dict | None:
    if not store.exists(name):
        if name == "mimic_all.csv":  # optional: ingestion falls back without it
            return None
        raise UserError(f"{store.url(name)}: not found; point data.{key} at the download's root "
                        f"(or SPOTDIFF_{key.split('_')[0].upper()}_ROOT)")
    try:
        with store.open(name, max_bytes=MAX_TABLE_BYTES) as f:
            digest = hashlib.file_digest(f, "sha256")
            return {"bytes": f.tell(), "sha256": digest.hexdigest()}
    except FileRefused as e:
        raise UserError(e.detail) from None


def _stamp(key: str, name: str, store) -> list | None:
    try:
        info = store.fs.info(store.url(name))
    except FileNotFoundError:
        return None
    return [int(info.get("size") or 0), str(info.get("mtime", info.get("LastModified", info.get("ETag", ""))))]


def fingerprint(params: dict) -> dict[str, dict[str, dict]]:
    """{root key: {table: {bytes, sha256}}} of the tables ingestion reads; streamed, bounded."""
    return _per_table(params, _content)


def table_stamps(params: dict) -> dict[str, dict[str, list]]:
    """{root key: {table: [bytes, modified]}} from one stat per table, no content read: what a
    sensor polls every minute (the sha256 fingerprint reads every byte, too much for a poll).
    A table that is not there is absent from the map."""
    return _per_table(params, _stamp)


def synth_config(params: dict, **overrides):
    from assets.synth.plan import SynthConfig

    try:
        return SynthConfig.from_section(params["synth"], **overrides)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"synth options: {e}") from e


def materialize_embedded(params: dict, progress: Callable[[int], None] = lambda n: None,
                         on_total: Callable[[int], None] = lambda n: None) -> dict:
    """Render the embedded dataset into data.embedded_root, or observe the download the roots
    point at. Returns a report: mode (rendered | observed), counts, and the tables' fingerprint."""
    from assets.synth.generate import generate

    root = Path(resolve_path(params["data"]["embedded_root"]))
    if root.exists() and not root.is_dir():
        raise UserError(f"data.embedded_root {root}: exists and is not a directory")
    if renders_embedded(params):
        cfg = synth_config(params)
        (root / OBSERVED_FILE).unlink(missing_ok=True)
        summary = generate(root, cfg, progress=progress, on_total=on_total)
        return {"mode": "rendered", **summary, "tables": fingerprint(params)}
    report = {"mode": "observed", "mimic_root": params["data"]["mimic_root"],
              "diffvqa_root": params["data"]["diffvqa_root"], "tables": fingerprint(params)}
    storage_for(str(root)).write_bytes(json_bytes(report), OBSERVED_FILE)
    return report


def data_version(report: dict) -> str:
    """The step's data version: a hash of the tables' fingerprint."""
    return hashlib.sha256(json_bytes(report["tables"])).hexdigest()[:16]
