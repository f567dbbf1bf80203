"""Bad image files at the residual step: each one is quarantined with its own reason and the
pair's row, never a crash, and rows in = rows out + rows quarantined.
`python -m pytest tests/reliability/test_bad_images.py`"""

import io
import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from assets import prepare
from assets.residuals import MAX_PIXELS, ImageError, ResidualConfig, load_preprocessed, materialize_group
from assets.storage import Storage
from tests.fixtures.tiny_mimic import write_tiny

CFG = ResidualConfig(image_size=32, batch_size=4)


def _save(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _film(w=80, h=96) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w), dtype=np.uint8))


def jpeg_claiming(w: int, h: int) -> bytes:
    """A small, valid JPEG whose frame header (SOF0) claims w x h: the classic bomb, a few
    hundred bytes that would decode to gigabytes."""
    data = bytearray(_save(Image.new("L", (64, 64), 100)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    return bytes(data)


def _defects() -> dict[str, tuple[bytes, str]]:
    good = _save(_film())
    return {
        "truncated": (good[:len(good) // 2], "corrupt_image"),
        "garbage": (good[:200] + b"\x00garbage" * 10, "corrupt_image"),
        "zero_byte": (b"", "empty_file"),
        "not_an_image": (b"subject,study\n1,2\n", "corrupt_image"),
        "16bit": (_save(Image.fromarray(np.full((96, 80), 40000, np.uint16)), "PNG"), "bad_image_mode"),
        "cmyk": (_save(_film().convert("CMYK")), "bad_image_mode"),
        "thumbnail": (_save(Image.new("L", (8, 8), 100)), "bad_image_size"),
        "strip": (_save(Image.new("L", (800, 40), 100)), "bad_image_size"),
        # over our explicit bound, under Pillow's own warning limit (89 Mpx): only our check stops it
        "bomb_9000": (jpeg_claiming(9000, 9000), "image_too_large"),
        # over Pillow's hard limit (179 Mpx): Image.open raises, still named as too large
        "bomb_60000": (jpeg_claiming(60000, 60000), "image_too_large"),
    }


@pytest.mark.parametrize("name", list(_defects()))
def test_each_bad_image_is_refused_with_its_reason(tmp_path, name):
    data, reason = _defects()[name]
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError) as e:
        load_preprocessed(str(path), CFG)
    assert e.value.reason == reason
    assert str(path) in e.value.detail  # the file is named


def test_bomb_bound_is_below_pillows_own():
    assert 9000 * 9000 > MAX_PIXELS and MAX_PIXELS < Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("img", [_film().convert("RGB"), _film(300, 200)], ids=["rgb", "other_size"])
def test_rgb_and_other_sizes_are_normalised_not_refused(tmp_path, img):
    path = tmp_path / "x.jpg"
    path.write_bytes(_save(img))
    out = load_preprocessed(str(path), CFG)
    assert out.shape == (32, 32) and out.dtype == np.uint8 and out.max() == 255


def test_a_group_with_every_defect_accounts_for_each_pair(tmp_path):
    """One defect per pair (main or reference image) in one group: each pair quarantined with the
    reason of its file and its pairs.parquet row; every other pair written."""
    t = write_tiny(tmp_path / "raw", subjects=24, studies=3)
    prepared, res = Storage(str(tmp_path / "prep")), Storage(str(tmp_path / "res"))
    prepare.run_ingest_images(Storage(str(t.mimic_root)), prepared)
    prepare.run_ingest_questions(Storage(str(t.diffvqa_root)), prepared, ["difference"])
    pairs, _ = prepare.run_pairs(prepared, Storage(str(t.diffvqa_root)))
    group = "p10"
    rows = pairs.with_row_index("row", offset=1).filter(pl.col("group") == group).unique("pair_id", keep="first",
                                                                                          maintain_order=True)
    # An image can belong to two pairs (a study is the main of one, the reference of the next):
    # plant only in images used by one pair, so each pair has exactly one defect.
    mains, refs = set(rows["main_path"]), set(rows["ref_path"])
    targets = [(r["pair_id"], r["ref_path"] if r["ref_path"] not in mains else r["main_path"])
               for r in rows.iter_rows(named=True) if r["ref_path"] not in mains or r["main_path"] not in refs]
    defects = _defects()
    assert len(targets) > len(defects)
    expected = {}
    for (pair_id, target), (data, reason) in zip(targets, defects.values()):
        expected[pair_id] = reason
        with open(target, "wb") as f:
            f.write(data)
    cfg = ResidualConfig(image_size=32, batch_size=4, register=False)  # registration is not under test
    result = materialize_group(pairs, group, res, cfg, pairs_source=prepared.url("pairs.parquet"))
    qt = result.quarantine
    got = {json.loads(o)["pair_id"]: r for o, r in zip(qt["original"], qt["reason"])}
    assert got == expected
    m = result.manifest
    assert m["rows_in"] == rows.height == m["rows_out"] + m["rows_quarantined"]
    assert m["rows_quarantined"] == len(defects)
    for row, original in zip(qt["row"], qt["original"]):  # the row named is the pair's first row
        assert pairs.row(row - 1, named=True)["pair_id"] == json.loads(original)["pair_id"]
