"""Residual-image shards: the contract between data preparation and training.

A shard is a parquet file of whole pairs (one row per main/reference pair, not per question), so
training streams images once and joins the questions from pairs.parquet on `pair_id`. Images are
stored as raw little-endian arrays (no codec to decode on the hot path), all `image_size` square:

    pair_id              str     "{main_dicom_id}__{ref_dicom_id}"
    subject_id           int64
    main_study_id        int64
    ref_study_id         int64
    split                str     train | val | test
    group                str     MIMIC group p10..p19 (the static partition)
    main                 binary  uint8  [S, S]  preprocessed main image (0..255)
    ref                  binary  uint8  [S, S]  preprocessed reference image
    ref_registered       binary  uint8  [S, S]  reference resampled onto main by the affine
    affine               list<float32>[6]  the 2x3 affine (normalised coordinates) ref -> main

The residuals are not stored: `PairImages.naive_residual` (main − ref) and
`registered_residual` (main − ref_registered) are computed exactly from the uint8 images when
read. Training recomputes main − ref after augmentation anyway (models/augment.py), so stored
float16 residuals were 4 of every 7 bytes per pixel that nothing read on the hot path.
`SHARD_FORMAT` is part of every group's inputs hash: shards of an older format are rebuilt.

The manifest (`manifest.json` next to the shards) lists shard paths relative to it, their row
counts, group, sha256 and the image size, so a reader never lists a bucket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

IMAGE_COLUMNS = ("main", "ref", "ref_registered")
SHARD_FORMAT = 2  # 2: residuals computed on read, not stored
SHARD_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("subject_id", pa.int64()),
        ("main_study_id", pa.int64()),
        ("ref_study_id", pa.int64()),
        ("split", pa.string()),
        ("group", pa.string()),
        *[(c, pa.binary()) for c in IMAGE_COLUMNS],
        ("affine", pa.list_(pa.float32(), 6)),
    ]
)
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class PairImages:
    """One decoded shard row. Images are float32 in [0, 1]; residuals (computed) float32 in [-1, 1]."""

    pair_id: str
    subject_id: int
    main_study_id: int
    ref_study_id: int
    split: str
    group: str
    main: np.ndarray
    ref: np.ndarray
    ref_registered: np.ndarray
    affine: np.ndarray

    @property
    def naive_residual(self) -> np.ndarray:
        return self.main - self.ref

    @property
    def registered_residual(self) -> np.ndarray:
        return self.main - self.ref_registered


def encode_image(img_u8: np.ndarray) -> bytes:
    assert img_u8.dtype == np.uint8 and img_u8.ndim == 2, (img_u8.dtype, img_u8.shape)
    return np.ascontiguousarray(img_u8).tobytes()


def decode_image(buf: bytes, size: int) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint8).reshape(size, size).astype(np.float32) / 255.0


def read_manifest(root: str | Path) -> dict:
    return json.loads((Path(root) / MANIFEST_NAME).read_text())


def iter_shard(path: str | Path, size: int, splits: set[str] | None = None) -> Iterator[PairImages]:
    """Stream one shard row group by row group (bounded memory whatever the shard size)."""
    pf = pq.ParquetFile(path)
    for rg in range(pf.num_row_groups):
        for row in pf.read_row_group(rg).to_pylist():
            if splits is not None and row["split"] not in splits:
                continue
            yield PairImages(
                pair_id=row["pair_id"],
                subject_id=row["subject_id"],
                main_study_id=row["main_study_id"],
                ref_study_id=row["ref_study_id"],
                split=row["split"],
                group=row["group"],
                **{c: decode_image(row[c], size) for c in IMAGE_COLUMNS},
                affine=np.asarray(row["affine"], dtype=np.float32),
            )


def iter_pairs(root: str | Path, splits: set[str] | None = None, groups: set[str] | None = None) -> Iterator[PairImages]:
    """All pairs under a shard root, in manifest order (deterministic)."""
    manifest = read_manifest(root)
    for shard in manifest["shards"]:
        if groups is not None and shard["group"] not in groups:
            continue
        yield from iter_shard(Path(root) / shard["path"], manifest["image_size"], splits)


# ---- writer (data preparation side) ----------------------------------------------------------
# Kept beside the readers so schema and manifest can only change together.

ROW_GROUP_ROWS = 64  # pairs per row group: bounds a reader's memory to ~64 pairs' images


def group_dir(group: str) -> str:
    """Hive-style folder per static partition, e.g. `group=p10`."""
    return f"group={group}"


class ShardWriter:
    """Accumulates shard rows and writes a parquet shard each time `max_bytes` of payload is
    reached. Each shard is written atomically through `storage` (temp name, then rename)."""

    def __init__(self, storage, group: str, image_size: int, max_bytes: int, first_index: int = 0):
        """first_index: the number of the first shard written (a group that grows keeps its
        earlier shards and adds new ones after them)."""
        self.storage, self.group, self.image_size, self.max_bytes = storage, group, image_size, max_bytes
        self.first_index = first_index
        self.rows: list[dict] = []
        self.bytes = 0
        self.shards: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.bytes += sum(len(row[c]) for c in IMAGE_COLUMNS)
        if self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        import hashlib
        import io

        table = pa.Table.from_pylist(self.rows, schema=SHARD_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=ROW_GROUP_ROWS, compression="zstd", write_statistics=False)
        data = buf.getvalue()
        rel = f"{group_dir(self.group)}/shard-{self.first_index + len(self.shards):05d}.parquet"
        self.storage.write_bytes(data, rel)
        self.shards.append({"path": rel, "rows": len(self.rows), "group": self.group,
                            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                            "pair_ids": [r["pair_id"] for r in self.rows]})
        self.rows, self.bytes = [], 0

    def close(self) -> list[dict]:
        self.flush()
        return self.shards
