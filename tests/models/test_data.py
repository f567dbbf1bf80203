"""The input pipeline: python -m pytest tests/models/test_data.py -q"""

import numpy as np
import pytest
import torch

from assets.shards import iter_pairs
from models.augment import AugmentConfig, augment_pair
from models.data import (PairStream, assign, batches, count_pairs, load_questions, make_collate,
                         shard_paths)
from tests.fixtures.tiny_shards import ABN_Q, write_tiny_shards

ENCODE = lambda text: [ord(c) % 50 + 3 for c in text]  # noqa: E731  (a stand-in tokenizer)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("tiny"), n_shards=3)


def _stream(tiny, split="train", augment=False, **kw):
    qs = load_questions(tiny.pairs_parquet, split, ["difference"])
    aug = AugmentConfig(out_size=24, crop_scale=0.75, brightness=0.3, contrast=0.3, sharpness=0.5)
    return PairStream(tiny.residuals_root, split, qs, "naive", aug, augment=augment, **kw)


def test_questions_grouped_by_pair_one_image_pass_each(tiny):
    stream = _stream(tiny)
    collate = make_collate(ENCODE, 0, 64, 128)
    got = list(batches(stream, collate, pairs_per_batch=4))
    pair_ids = [p for b in got for p in b.pair_ids]
    assert pair_ids == tiny.pair_ids["train"]  # every pair once, in stream order
    for b in got:
        assert b.main.shape == (len(b.pair_ids), 1, 24, 24) == b.residual.shape == b.ref.shape
        # each question points at its own pair, and every pair keeps all its questions
        counts = torch.bincount(b.pair_index, minlength=len(b.pair_ids)).tolist()
        assert counts == [tiny.questions_per_pair[p] for p in b.pair_ids]
        assert b.question_ids.shape[0] == b.answer_ids.shape[0] == b.n_questions > len(b.pair_ids)
        assert (b.answer_mask.sum(1) > 0).all()
    assert ABN_Q not in {q for b in got for q in b.questions}  # type filter applied


def test_all_question_types_keeps_abnormality(tiny):
    qs = load_questions(tiny.pairs_parquet, "train", ["all"])
    assert all(ABN_Q in [qa.question for qa in v] for v in qs.values())


def test_eval_view_matches_stored_residual(tiny):
    """No augmentation + full crop: the residual the model sees is the shard's own residual."""
    qs = load_questions(tiny.pairs_parquet, "val", ["difference"])
    stream = PairStream(tiny.residuals_root, "val", qs, "naive", AugmentConfig(out_size=32),
                        augment=False)
    stored = {p.pair_id: p.naive_residual for p in iter_pairs(tiny.residuals_root, {"val"})}
    seen = list(stream)
    assert [s.pair_id for s in seen] == tiny.pair_ids["val"]
    for s in seen:
        np.testing.assert_allclose(s.residual[0].numpy(), stored[s.pair_id], atol=1e-3)


def test_augmentation_is_seeded_and_shared_across_the_pair():
    main = torch.rand(1, 40, 40)
    ref = main.clone()
    aug = AugmentConfig(out_size=40, crop_scale=0.5, brightness=0.4, contrast=0.4, sharpness=0.9)
    a = augment_pair(main, ref, aug, torch.Generator().manual_seed(1))
    b = augment_pair(main, ref, aug, torch.Generator().manual_seed(1))
    c = augment_pair(main, ref, aug, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # identical inputs get the same crop and factors -> identical outputs, zero residual
    assert torch.equal(a[0], a[1]) and a[2].abs().max() == 0


def test_shuffle_is_deterministic_per_seed_and_epoch(tiny):
    s = _stream(tiny, augment=True, seed=3)
    e0 = [x.pair_id for x in s]
    e0_again = [x.pair_id for x in _stream(tiny, augment=True, seed=3)]
    s.set_epoch(1)
    e1 = [x.pair_id for x in s]
    assert e0 == e0_again
    assert sorted(e0) == sorted(e1) == sorted(tiny.pair_ids["train"])
    assert e0 != e1


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_partition_the_pairs(tiny, world):
    """Shard-level when there are enough shards, pair-level striding otherwise: each pair is
    read by exactly one rank, and len() agrees with what the rank streams."""
    seen = []
    for rank in range(world):
        s = _stream(tiny, rank=rank, world=world)
        ids = [x.pair_id for x in s]
        assert len(s) == len(ids)
        seen += ids
    assert sorted(seen) == sorted(tiny.pair_ids["train"])
    paths, _ = shard_paths(tiny.residuals_root)
    assert assign(paths, 0, 3)[1] == 1 and assign(paths, 0, 4)[1] == 4


def test_max_batches_caps_steps(tiny):
    s = _stream(tiny)
    qs = load_questions(tiny.pairs_parquet, "train", ["difference"])
    assert count_pairs(shard_paths(tiny.residuals_root)[0], "train", qs) == len(tiny.pair_ids["train"])
    assert len(list(batches(s, make_collate(ENCODE, 0, 8, 8), 3, max_batches=2))) == 2


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_storage_url_roots_stream_the_same_pairs(tiny, scheme):
    """Roots given as URLs go through the storage layer (as s3:// does in production) and yield
    exactly what the local paths do: same questions, counts, order, augmented pixels."""
    import fsspec

    if scheme == "memory":  # an object store stand-in: nothing on local disk under this root
        fs, base = fsspec.filesystem("memory"), f"memory://tiny-{scheme}"
        fs.put(str(tiny.residuals_root), f"{base}/residuals", recursive=True)
        fs.put(str(tiny.pairs_parquet), f"{base}/pairs.parquet")
        residuals, pairs = f"{base}/residuals", f"{base}/pairs.parquet"
    else:
        residuals, pairs = tiny.residuals_root.as_uri(), tiny.pairs_parquet.as_uri()
    options = {}  # what assets.params.storage_options returns for a non-s3 root
    assert load_questions(pairs, "train", ["all"], options) == \
        load_questions(tiny.pairs_parquet, "train", ["all"])
    qs = load_questions(tiny.pairs_parquet, "train", ["difference"])
    paths = shard_paths(residuals, options)[0]
    assert all(p.startswith(f"{scheme}://") for p in paths)
    assert count_pairs(paths, "train", qs, options=options) == len(tiny.pair_ids["train"])
    aug = AugmentConfig(out_size=24, crop_scale=0.75, brightness=0.3, contrast=0.3, sharpness=0.5)
    for rank, world in ((0, 1), (1, 2)):
        local = _stream(tiny, augment=True, seed=5, rank=rank, world=world)
        remote = PairStream(residuals, "train", qs, "naive", aug, augment=True, seed=5, rank=rank,
                            world=world, storage_options=options)
        got, want = list(remote), list(local)
        assert len(remote) == len(local) == len(want) > 0
        assert [s.pair_id for s in got] == [s.pair_id for s in want]
        assert all(torch.equal(a.residual, b.residual) and torch.equal(a.main, b.main)
                   for a, b in zip(got, want))
