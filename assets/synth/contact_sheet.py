"""A PNG a person looks at before training: difference pairs (reference, main, main - reference)
with the question and answer, read back from the written files, so it shows what a loader sees."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont

from assets.synth.ids import image_path

TILE = 256
TEXT_W = 440


def _load(root: Path, subject_id: int, study_id: int, dicom: str, tile: int) -> np.ndarray:
    img = Image.open(root / image_path(subject_id, study_id, dicom)).convert("L").resize((tile, tile), Image.BILINEAR)
    return np.asarray(img, dtype=np.int16)


def pick_rows(pairs: pl.DataFrame, n: int) -> pl.DataFrame:
    """General difference questions with a change, preferring a new first-named finding each time,
    so the sheet shows several kinds of change; then one 'nothing has changed' pair."""
    diff = pairs.filter(pl.col("question_type") == "difference",
                        pl.col("question") == "what has changed compared to the reference image?")
    changed = diff.filter(pl.col("answer") != "nothing has changed.")
    picked, seen = [], set()
    for row in changed.iter_rows(named=True):
        key = row["answer"].split(" than ")[0][-30:]
        if key not in seen:
            seen.add(key)
            picked.append(row)
        if len(picked) >= n - 1:
            break
    same = diff.filter(pl.col("answer") == "nothing has changed.").head(1).to_dicts()
    return pl.DataFrame(picked + same, schema=pairs.schema) if picked or same else pairs.head(0)


def write_contact_sheet(mimic_root: Path, pairs: pl.DataFrame, mimic_all: pl.DataFrame, out: Path, n: int = 6,
                        tile: int = TILE) -> None:
    frontal = dict(zip(mimic_all["study_id"].to_list(), mimic_all["dicom_id"].to_list()))
    rows = pick_rows(pairs, n)
    sheet = Image.new("L", (3 * tile + TEXT_W, max(1, rows.height) * (tile + 8)), color=255)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for i, r in enumerate(rows.iter_rows(named=True)):
        ref = _load(mimic_root, r["subject_id"], r["ref_id"], frontal[r["ref_id"]], tile)
        main = _load(mimic_root, r["subject_id"], r["study_id"], frontal[r["study_id"]], tile)
        # Raw difference, unregistered: pose changes show as edges, real changes as blobs.
        diff = np.clip(128 + 2 * (main - ref), 0, 255)
        y = i * (tile + 8)
        for k, pixels in enumerate((ref, main, diff)):
            sheet.paste(Image.fromarray(pixels.astype(np.uint8)), (k * tile, y))
        text = (f"reference s{r['ref_id']}, main s{r['study_id']}\n(tiles: reference, main, main - reference)\n\n"
                + "Q: " + "\n".join(textwrap.wrap(r["question"], 48)) + "\n\n"
                + "A: " + "\n".join(textwrap.wrap(r["answer"], 48)))
        draw.multiline_text((3 * tile + 10, y + 10), text, fill=0, font=font, spacing=3)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
