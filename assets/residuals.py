"""Residual images: for each main/reference pair, decode both JPEGs, preprocess them the same way,
register the reference onto the main image, and write main, reference, registered reference and
the naive and registered residuals as shards (the contract in assets/shards.py).

One call handles one MIMIC group (p10..p19), the static partition a user can materialise alone.
Pairs go through in batches: JPEG decoding in a thread pool (Pillow releases the GIL while
decoding and resizing), registration as one batched torch optimisation per batch."""

from __future__ import annotations

import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import polars as pl
import torch
from PIL import Image

from assets import quarantine as q
from assets.params import UserError, resolve_path
from assets.registration import RegistrationConfig, identity, register_affine
from assets.shards import IMAGE_COLUMNS, MANIFEST_NAME, SHARD_FORMAT, ShardWriter, encode_image, group_dir
from assets.storage import FileRefused, Storage, lock_within, read_url

GROUPS = tuple(f"p{n}" for n in range(10, 20))


@dataclass(frozen=True)
class ResidualConfig:
    image_size: int = 256
    register: bool = True
    shard_max_mb: float = 256
    workers: int = 2
    batch_size: int = 32
    # Intensity normalisation: stretch these percentiles of the image to 0..255, so exposure and
    # contrast differences between two studies do not show up as residual.
    low_pct: float = 1.0
    high_pct: float = 99.0
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)


class ImageError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# What a chest film can be, checked from the header before any pixel is decoded. MIMIC-CXR-JPG
# is 8-bit grey (a few RGB exports); its largest films are ~4300 x 3500 = 15 Mpx. A 16-bit or
# float image would be silently clipped by convert("L"); a 1 px or strip-shaped image normalises
# to a blank square; a file declaring more pixels than any film is a decompression bomb, refused
# below Pillow's own limit (~179 Mpx, above which it raises; between 89 and 179 it only warns).
IMAGE_MODES = ("L", "RGB")
MIN_SIDE, MAX_ASPECT, MAX_PIXELS = 32, 4.0, 64_000_000
# Bytes of one image file, checked from its size before it is read: a MIMIC JPEG is a few MB,
# and MAX_PIXELS of 8-bit grey uncompressed is 64 MB. Anything larger (or a link to /dev/zero,
# which never ends) is not a film.
MAX_FILE_BYTES = 64 * 2**20


def check_header(img: Image.Image) -> None:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageError("image_too_large", f"{w}x{h} = {w * h} pixels exceeds the bound of {MAX_PIXELS} (decompression bomb?)")
    if img.mode not in IMAGE_MODES:
        raise ImageError("bad_image_mode", f"mode {img.mode} is not 8-bit grey or RGB")
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError("bad_image_size", f"{w}x{h}: a side under {MIN_SIDE} px or an aspect over {MAX_ASPECT:g}")


def decode_resize(data: bytes, size: int) -> np.ndarray:
    """JPEG bytes -> grayscale uint8 (h, w) with the long side = size, aspect kept. `draft` lets
    libjpeg decode at 1/2, 1/4 or 1/8 scale in the DCT domain: a 2500 px MIMIC film needed at
    256 px is decoded at ~312 px, not in full. Raises ImageError for a header out of bounds."""
    img = Image.open(io.BytesIO(data))
    check_header(img)
    img.draft("L", (size, size))
    img = img.convert("L")
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return np.asarray(img.resize((nw, nh), Image.BILINEAR))


def normalise_pad(img: np.ndarray, size: int, low_pct: float, high_pct: float) -> np.ndarray:
    """Percentile stretch to 0..255, then pad (centred, 0 = air) to size x size."""
    lo, hi = np.percentile(img, [low_pct, high_pct])
    x = (img.astype(np.float32) - lo) / max(hi - lo, 1.0)
    x = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    out = np.zeros((size, size), np.uint8)
    h, w = x.shape
    top, left = (size - h) // 2, (size - w) // 2
    out[top:top + h, left:left + w] = x
    return out


def load_preprocessed(url: str, cfg: ResidualConfig, options: dict | None = None,
                      within: str | None = None) -> np.ndarray:
    """One image decoded, resized and normalised; `within`: the folder it must resolve inside."""
    try:
        data = read_url(url, options, MAX_FILE_BYTES, within)
    except FileNotFoundError as e:
        raise ImageError("missing_file", f"{url} does not exist") from e
    except FileRefused as e:  # a FIFO, a device, a folder, too big, a link out: refused before reading
        raise ImageError(e.reason, e.detail) from e
    if not data:
        raise ImageError("empty_file", f"{url} is a zero-byte file")
    try:
        img = decode_resize(data, cfg.image_size)
    except ImageError as e:
        raise ImageError(e.reason, f"{url}: {e.detail}") from e
    except Image.DecompressionBombError as e:  # over Pillow's hard limit: raised by Image.open
        raise ImageError("image_too_large", f"{url}: {e}") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        raise ImageError("corrupt_image", f"{url} is not a decodable JPEG ({type(e).__name__}: {e})") from e
    return normalise_pad(img, cfg.image_size, cfg.low_pct, cfg.high_pct)


def unique_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    """One row per pair (a pair can carry several questions); `_row` keeps the line of its first
    question row in pairs.parquet for the quarantine."""
    if "_pairs_row" not in pairs.columns:
        pairs = pairs.with_row_index("_pairs_row", offset=1)
    return (pairs.sort("pair_id", "_pairs_row")
            .unique("pair_id", keep="first", maintain_order=True)
            .select("pair_id", "subject_id", "main_study_id", "ref_study_id", "split", "group",
                    "main_path", "ref_path", "_pairs_row"))


def inputs_hash(pairs: pl.DataFrame, cfg: ResidualConfig) -> str:
    """What a group's shards depend on: its pairs (ids, paths, splits) and the config."""
    h = hashlib.sha256(json.dumps({**asdict(cfg), "shard_format": SHARD_FORMAT}, sort_keys=True,
                                  default=list).encode())
    for row in pairs.select("pair_id", "main_path", "ref_path", "split").iter_rows():
        h.update("|".join(map(str, row)).encode())
    return h.hexdigest()


@dataclass
class GroupResult:
    group: str
    manifest: dict
    quarantine: pl.DataFrame
    skipped: bool
    previews: list[dict]  # a few decoded pairs for pictures: main, ref, ref_registered, residuals


def _load_pair(row: dict, cfg: ResidualConfig, options, base: str | None = None, within: str | None = None):
    try:
        return (load_preprocessed(resolve_path(row["main_path"], base), cfg, options, within),
                load_preprocessed(resolve_path(row["ref_path"], base), cfg, options, within))
    except ImageError as e:
        return e


def _process_batch(batch: list[dict], loaded: list, cfg: ResidualConfig):
    good = [(r, x) for r, x in zip(batch, loaded) if not isinstance(x, ImageError)]
    bad = [(r, x) for r, x in zip(batch, loaded) if isinstance(x, ImageError)]
    if not good:
        return [], bad
    main = torch.from_numpy(np.stack([m for _, (m, _) in good])).float().div_(255.0).unsqueeze(1)
    ref = torch.from_numpy(np.stack([r for _, (_, r) in good])).float().div_(255.0).unsqueeze(1)
    if cfg.register:
        theta, warped = register_affine(main, ref, cfg.registration)
    else:
        theta, warped = identity(len(good)), ref
    ref_reg = (warped.squeeze(1).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    out = []
    for i, (row, (m, r)) in enumerate(good):
        out.append({
            "pair_id": row["pair_id"], "subject_id": row["subject_id"], "main_study_id": row["main_study_id"],
            "ref_study_id": row["ref_study_id"], "split": row["split"], "group": row["group"],
            "main": m, "ref": r, "ref_registered": ref_reg[i], "affine": theta[i].flatten().tolist(),
        })
    return out, bad


def shard_intact(out: Storage, shard: dict) -> bool:
    """The shard file is there with the bytes its manifest recorded (size, then sha256): a
    shard truncated or edited on disk is rewritten, not reported "up to date"."""
    import hashlib

    if not out.exists(shard["path"]):
        return False
    if "sha256" not in shard:
        return False
    h, n = hashlib.sha256(), 0
    with out.fs.open(out.url(shard["path"]), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return n == shard.get("bytes", n) and h.hexdigest() == shard["sha256"]


KEY_COLUMNS = ("pair_id", "main_path", "ref_path", "split", "subject_id", "main_study_id", "ref_study_id")


def _digest(ids: list[str], keys: dict[str, str]) -> str:
    """What a set of pairs' shard rows depend on, besides the config: their keys."""
    h = hashlib.sha256()
    for i in sorted(ids):
        h.update(keys[i].encode() + b"\n")
    return h.hexdigest()


def _quarantined_pair() -> pl.Expr:
    """The pair_id of a quarantine row (its original row, as JSON)."""
    return pl.col("original").str.json_path_match("$.pair_id")


def _config_hash(cfg: ResidualConfig) -> str:
    return hashlib.sha256(json.dumps({**asdict(cfg), "shard_format": SHARD_FORMAT}, sort_keys=True,
                                     default=list).encode()).hexdigest()


def _kept(old: dict, keys: dict[str, str], cfg: ResidualConfig, out: Storage) -> tuple[list[dict], list[str]] | None:
    """From the group's last run: its shards and quarantined pairs that still hold for these
    pairs (same config, every pair still there with the same key, shard bytes intact). None:
    nothing can be kept — the config changed, a pair changed or left, or a shard is damaged."""
    if old.get("config_hash") != _config_hash(cfg) or "quarantined_ids" not in old:
        return None
    for ids, digest in ([(s.get("pair_ids"), s.get("pairs_digest")) for s in old["shards"]]
                        + [(old["quarantined_ids"], old.get("quarantined_digest"))]):
        if ids is None or any(i not in keys for i in ids) or _digest(ids, keys) != digest:
            return None
    if not all(shard_intact(out, s) for s in old["shards"]):
        return None
    return old["shards"], old["quarantined_ids"]


def materialize_group(pairs: pl.DataFrame, group: str, out: Storage, cfg: ResidualConfig,
                      pairs_source: str = "pairs.parquet", options: dict | None = None,
                      progress: Callable[[int], None] | None = None, n_previews: int = 4,
                      base: str | None = None, within: str | None = None) -> GroupResult:
    """Write one group's shards + group manifest + group quarantine under `out`, atomically per
    file. What the group's last run wrote is kept when it still holds: nothing to do when its
    pairs and config are unchanged; only the new pairs are registered (into new shards) when
    pairs were added; the group is rebuilt when any pair changed or left, or the config did.
    `within`: the folder every image must resolve inside (prepare.image_root), None: anywhere."""
    # Number the rows before filtering: the quarantine names the row in the whole pairs.parquet.
    todo = unique_pairs(pairs.with_row_index("_pairs_row", offset=1).filter(pl.col("group") == group))
    digest = inputs_hash(todo, cfg)
    keys = {r[0]: "|".join(map(str, r)) for r in todo.select(*KEY_COLUMNS).iter_rows()}
    mpath, qpath = f"{group_dir(group)}/{MANIFEST_NAME}", f"{group_dir(group)}/quarantine.parquet"
    kept = _kept(out.read_json(mpath), keys, cfg, out) if out.exists(mpath) else None
    dest = out  # where this run writes: the group itself when it grows, a staging copy when rebuilt
    if kept is not None:
        kept_shards, kept_quarantined = kept
        old_q = out.read_parquet(qpath) if out.exists(qpath) else q.empty()
        # the pairs' lines in pairs.parquet may have moved (new rows sorted in): name today's
        rows_now = dict(todo.select("pair_id", "_pairs_row").iter_rows())
        old_q = old_q.with_columns(_quarantined_pair().replace_strict(rows_now, default=None)
                                   .cast(pl.Int64).alias("row")) if old_q.height else old_q
        done = {i for s in kept_shards for i in s["pair_ids"]} | set(kept_quarantined)
        if done == set(keys):
            if progress:
                progress(todo.height)
            manifest = {**out.read_json(mpath), "inputs_hash": digest}
            return GroupResult(group, manifest, old_q, True, [])
        if progress:
            progress(len(done))
        todo_new = todo.filter(~pl.col("pair_id").is_in(list(done)))
        first = 1 + max((int(s["path"].rsplit("-", 1)[1].split(".")[0]) for s in kept_shards), default=-1)
    else:
        # Rebuilt in a staging folder and swapped in once whole: a run that fails midway (the
        # long part) leaves the previous shards and manifest as they were.
        kept_shards, old_q, todo_new, first = [], q.empty(), todo, 0
        dest = out.sub(f".staging-{group}")
        dest.remove()
    writer = ShardWriter(dest, group, cfg.image_size, int(cfg.shard_max_mb * 2**20), first_index=first)
    qparts, previews = [old_q] if old_q.height else [], []
    rows = todo_new.to_dicts()
    batches = [rows[i:i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)]
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        # Decoding of batch i+1 is queued before batch i is registered and written, so the
        # decode threads keep working while the main thread does the rest.
        submit = lambda b: [pool.submit(_load_pair, row, cfg, options, base, within) for row in b]  # noqa: E731
        pending = submit(batches[0]) if batches else []
        for i, batch in enumerate(batches):
            loaded = [f.result() for f in pending]
            pending = submit(batches[i + 1]) if i + 1 < len(batches) else []
            done_batch, bad = _process_batch(batch, loaded, cfg)
            for rec in done_batch:
                if len(previews) < n_previews:
                    previews.append(rec)
                writer.add({**rec, **{c: encode_image(rec[c]) for c in IMAGE_COLUMNS}})
            for row, err in bad:
                frame = pl.DataFrame([{**{k: v for k, v in row.items() if k != "_pairs_row"},
                                       q.SOURCE_COL: pairs_source, q.ROW_COL: row["_pairs_row"]}])
                qparts.append(q.rows(frame, "residual_images", err.reason, err.detail))
            if progress:
                progress(len(batch))
    new_shards = writer.close()
    for s in new_shards:
        s["pairs_digest"] = _digest(s["pair_ids"], keys)
    shards = kept_shards + new_shards
    quarantined = pl.concat(qparts, how="vertical_relaxed") if qparts else q.empty()
    rows_out = sum(s["rows"] for s in shards)
    assert todo.height == rows_out + quarantined.height, "residual_images: pairs lost"
    dest.write_parquet(quarantined, group_dir(group), "quarantine.parquet")
    q_ids = quarantined.select(_quarantined_pair()).to_series().to_list() if quarantined.height else []
    manifest = {"group": group, "image_size": cfg.image_size, "inputs_hash": digest, "shards": shards,
                "rows_in": todo.height, "rows_out": rows_out, "rows_quarantined": quarantined.height,
                "config": asdict(cfg), "config_hash": _config_hash(cfg), "quarantined_ids": q_ids,
                "quarantined_digest": _digest(q_ids, keys), "rows_added": todo_new.height}
    dest.write_json(manifest, mpath)
    if dest is not out:
        _swap_in(out, dest, group)
    return GroupResult(group, manifest, quarantined, False, previews)


def _swap_in(out: Storage, staging: Storage, group: str) -> None:
    """The rebuilt group replaces the previous one: old files out, new ones moved in (renames on
    a local root), the manifest last so it never names a shard not yet in place."""
    for old in out.list_files(group_dir(group)):
        out.remove(old)
    out.fs.makedirs(out.url(group_dir(group)), exist_ok=True)
    for rel in sorted(staging.list_files(group_dir(group)), key=lambda f: f.endswith(MANIFEST_NAME)):
        out.fs.mv(staging.url(rel), out.url(rel))
    staging.remove()


def write_root_manifest(out: Storage, image_size: int) -> dict:
    """The manifest training reads (assets.shards.read_manifest): every group's shards, rebuilt
    from the group manifests on disk so groups materialised in separate runs all appear.

    Partitions may run in parallel (a Dagster backfill): on a local root an exclusive lock makes
    read-all-then-write one step, so a run cannot overwrite the root manifest with a list that
    misses a group another run just finished. (Object stores have no lock; the next partition's
    run, or `spotdiff residuals`, rebuilds the list from the group manifests.)"""
    if out.is_local:
        out.fs.makedirs(out.root, exist_ok=True)
        with open(out.fs._strip_protocol(out.url(".manifest.lock")), "w") as lock:
            if not lock_within(lock, LOCK_TIMEOUT_S):
                raise UserError(f"{lock.name}: still locked by another run after {LOCK_TIMEOUT_S:.0f} s; "
                                "if no other `residuals` run is going, delete the lock file")
            return _write_root_manifest(out, image_size)
    return _write_root_manifest(out, image_size)


# Writing the root manifest takes milliseconds; a lock held this long is a stuck process.
LOCK_TIMEOUT_S = 120


def _write_root_manifest(out: Storage, image_size: int) -> dict:
    shards, groups = [], {}
    for g in GROUPS:
        path = f"{group_dir(g)}/{MANIFEST_NAME}"
        if not out.exists(path):
            continue
        m = out.read_json(path)
        if m["image_size"] != image_size:
            continue  # written under another image_size: not part of this dataset
        # per-shard pair lists stay in the group manifests: training needs paths and counts only
        shards += [{k: v for k, v in sh.items() if k != "pair_ids"} for sh in m["shards"]]
        groups[g] = {k: m[k] for k in ("rows_in", "rows_out", "rows_quarantined", "inputs_hash")}
    manifest = {"image_size": image_size, "shards": shards, "groups": groups}
    out.write_json(manifest, MANIFEST_NAME)
    return manifest


def pair_residual_stats(rec) -> dict:
    """Per-pair numbers the validation checks: finite, in [-1, 1], residual energy."""
    n, r = rec.naive_residual, rec.registered_residual
    return {"pair_id": rec.pair_id, "finite": bool(np.isfinite(n).all() and np.isfinite(r).all()),
            "min": float(min(n.min(), r.min())), "max": float(max(n.max(), r.max())),
            "naive_energy": float((n ** 2).mean()), "registered_energy": float((r ** 2).mean())}


# One row per pair (pair_residual_stats), what the residuals_finite_in_range suite reads.
STATS_SCHEMA = {"pair_id": pl.String, "finite": pl.Boolean, "min": pl.Float64, "max": pl.Float64,
                "naive_energy": pl.Float64, "registered_energy": pl.Float64}


def read_group_back(out: Storage, group: str, n_previews: int = 4) -> tuple[pl.DataFrame, list]:
    """Read a group's shards back as written: per-pair stats for validation, plus the first few
    decoded pairs for the preview grid. Reading back (not trusting the in-memory arrays) is what
    makes the check a check of the files training will stream."""
    from assets.shards import iter_shard

    mpath = f"{group_dir(group)}/{MANIFEST_NAME}"
    manifest = out.read_json(mpath)
    stats, previews = [], []
    for shard in manifest["shards"]:
        with out.fs.open(out.url(shard["path"]), "rb") as f:
            for rec in iter_shard(f, manifest["image_size"]):
                stats.append(pair_residual_stats(rec))
                if len(previews) < n_previews:
                    previews.append(rec)
    return pl.DataFrame(stats, schema=STATS_SCHEMA), previews


def preview_grid(records: list, tile: int = 128) -> bytes:
    """PNG: one row per pair, columns main | reference | naive residual | registered residual
    (residuals mapped from [-1, 1] to grey, 0 = mid grey)."""
    def u8(x, residual):
        y = (x * 0.5 + 0.5) if residual else x
        return Image.fromarray(np.clip(y * 255, 0, 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)

    grid = Image.new("L", (4 * tile, max(1, len(records)) * tile), 0)
    for i, r in enumerate(records):
        for j, (img, res) in enumerate(((r.main, False), (r.ref, False), (r.naive_residual, True),
                                        (r.registered_residual, True))):
            grid.paste(u8(img, res), (j * tile, i * tile))
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
