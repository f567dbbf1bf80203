"""The input pipeline: stream residual shards (assets/shards.py), join each pair's questions from
pairs.parquet, and batch by *pair*: a batch holds `pairs_per_batch` pairs with all their
questions, so the image encoders run once per pair however many questions it has
(benchmarks/pair_grouping.py measures the saving).

Distribution is shard-level: rank r of W reads shards r, r+W, ... (no worker reads another's
bytes). When there are fewer shards than workers it falls back to pair-level striding, so tiny
datasets still feed every worker. DDP needs every rank to take the same number of steps, so
`steps_per_epoch` is agreed up front from per-rank pair counts (read from one parquet column).

Roots are local paths or URLs (s3://...), read through assets/storage.py: the same code trains
from a laptop folder or straight from the object store. `storage_options` (the S3 endpoint) come
in from the entry point; this module never reads the environment."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.utils.deterministic

from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer, try_parse_answer
from assets.finding_states import N_FINDINGS, PER_FINDING_COLUMNS, TARGET_COLUMNS
from assets.shards import MANIFEST_NAME, decode_image
from assets.storage import Storage
from models.augment import AugmentConfig, augment_pair

# residual kind -> the reference column the model sees (the residual is main minus that image).
REF_COLUMN = {"naive": "ref", "registered": "ref_registered"}


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    question_type: str


@dataclass(frozen=True)
class PairSample:
    """One pair with every question asked about it. Images (1, S, S) float."""

    pair_id: str
    main: torch.Tensor
    ref: torch.Tensor
    residual: torch.Tensor
    qas: tuple[QA, ...]
    targets: torch.Tensor | None = None  # (rows, 30) long finding targets (models/finding_heads.py), -1 unknown


@dataclass
class PairBatch:
    """P pairs, Q >= P questions; pair_index[q] says which pair question q is about."""

    pair_ids: list[str]
    main: torch.Tensor           # (P, 1, S, S)
    ref: torch.Tensor            # (P, 1, S, S)
    residual: torch.Tensor       # (P, 1, S, S)
    pair_index: torch.Tensor     # (Q,) long
    question_ids: torch.Tensor   # (Q, Lq) long, right-padded
    question_mask: torch.Tensor  # (Q, Lq) long
    answer_ids: torch.Tensor     # (Q, La) long, right-padded
    answer_mask: torch.Tensor    # (Q, La) long
    questions: list[str]
    answers: list[str]
    question_types: list[str] | None = None
    finding_targets: torch.Tensor | None = None  # (P, rows, 30) long, -1 unknown

    def to(self, device: torch.device | str) -> "PairBatch":
        moved = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return PairBatch(**moved)

    @property
    def n_questions(self) -> int:
        return int(self.pair_index.numel())


def open_parquet(url: str | Path, options: dict[str, Any] | None = None) -> pq.ParquetFile:
    """A parquet file by local path or URL. A plain path goes to pyarrow as before (it maps the
    file itself); a URL opens as a seekable fsspec file, so reading one row group or two columns
    fetches only those byte ranges from S3, not the whole shard."""
    url = str(url)
    if "://" not in url:
        return pq.ParquetFile(url)
    return pq.ParquetFile(Storage(url, options or {}).fs.open(url, "rb"))


def load_questions(pairs_parquet: str | Path, split: str,
                   question_types: Sequence[str] | None = None,
                   options: dict[str, Any] | None = None) -> dict[str, tuple[QA, ...]]:
    """pair_id -> its questions, in file order. question_types None or ["all"] keeps every type."""
    table = open_parquet(pairs_parquet, options).read(columns=["pair_id", "question", "answer",
                                                               "question_type", "split"])
    keep_all = not question_types or "all" in question_types
    grouped: dict[str, list[QA]] = defaultdict(list)
    for row in table.to_pylist():
        if row["split"] != split or (not keep_all and row["question_type"] not in question_types):
            continue
        grouped[row["pair_id"]].append(QA(row["question"], row["answer"], row["question_type"]))
    return {k: tuple(v) for k, v in grouped.items()}


def load_finding_targets(path: str | Path, options: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """pair_id -> (rows, 30) long targets, rows in TARGET_COLUMNS order (assets/finding_states.py);
    a per-image code (the view) fills its whole row."""
    table = open_parquet(path, options).read(columns=list(TARGET_COLUMNS)).to_pydict()
    rows = TARGET_COLUMNS[1:]
    # int32 (the 20-bit place masks fit), long only per batch: 11 x 30 codes for every pair of
    # Medical-Diff-VQA's 164 k sit in each rank's memory
    return {pid: torch.tensor([table[c][i] if c in PER_FINDING_COLUMNS else [table[c][i]] * N_FINDINGS
                               for c in rows], dtype=torch.int32)
            for i, pid in enumerate(table["pair_id"])}


def unknown_targets() -> torch.Tensor:
    return torch.full((len(TARGET_COLUMNS) - 1, N_FINDINGS), -1, dtype=torch.int32)


def swap_answer(answer: str) -> str | None:
    """The difference answer of the pair read the other way round (reference as main): added
    and missing trade places, levels run backwards. None if it is not a difference answer."""
    cs = try_parse_answer(answer)
    if cs is None:
        return None
    return compose_answer(ChangeSet(added=cs.missing, missing=cs.added,
                                    levels=tuple(LevelChange(c.finding, c.main_level, c.ref_level)
                                                 for c in cs.levels)))


def swap_targets(t: torch.Tensor) -> torch.Tensor:
    """Main and reference rows trade places; added (1) and missing (2) changes swap."""
    from models.finding_heads import BACKWARDS, CHANGE, SWAPPED_ROWS

    out = t[list(SWAPPED_ROWS)].clone()
    out[CHANGE] = torch.where(t[CHANGE] >= 0, torch.tensor(BACKWARDS)[t[CHANGE].clamp(min=0)], t[CHANGE])
    return out


def swapped_qas(qas: tuple[QA, ...]) -> tuple[QA, ...]:
    """Only the difference questions survive a swap: the single-image ones are about the study
    that is now the reference."""
    out = []
    for qa in qas:
        if qa.question_type == "difference" and (a := swap_answer(qa.answer)) is not None:
            out.append(QA(qa.question, a, qa.question_type))
    return tuple(out)


def shard_paths(root: str | Path, options: dict[str, Any] | None = None) -> tuple[list[str], int]:
    """Shard files (paths or URLs, in the root's form) in manifest order, and the stored image
    side. Strings, not Paths: Path("s3://b/k") would collapse the "//"."""
    storage = Storage(str(root), options or {})
    manifest = storage.read_json(MANIFEST_NAME)
    return [storage.url(s["path"]) for s in manifest["shards"]], int(manifest["image_size"])


def assign(paths: list[str], rank: int, world: int) -> tuple[list[str], int, int]:
    """(shards this rank reads, row stride, row offset). Shard-level when every rank gets one."""
    if len(paths) >= world:
        return paths[rank::world], 1, 0
    return paths, world, rank


def count_pairs(paths: Sequence[str | Path], split: str, questions: dict, stride: int = 1,
                offset: int = 0, options: dict[str, Any] | None = None) -> int:
    """Pairs this rank will yield in an epoch, reading only two columns."""
    n = 0
    for path in paths:
        cols = open_parquet(path, options).read(columns=["pair_id", "split"]).to_pydict()
        for i, (pid, sp) in enumerate(zip(cols["pair_id"], cols["split"])):
            if sp == split and pid in questions and (i % stride) == offset:
                n += 1
    return n


class PairStream(torch.utils.data.IterableDataset):
    """Yields PairSample for one split. Training (augment=True) shuffles shard order and pairs
    within a buffer, seeded by (seed, epoch, rank), so a run is reproducible; `set_epoch` before
    each epoch, as with DistributedSampler."""

    def __init__(self, root: str | Path, split: str, questions: dict[str, tuple[QA, ...]],
                 residual_kind: str, aug: AugmentConfig, augment: bool, seed: int = 0,
                 rank: int = 0, world: int = 1, shuffle_buffer: int = 64,
                 max_pairs: int | None = None, storage_options: dict[str, Any] | None = None,
                 targets: dict[str, torch.Tensor] | None = None, swap_prob: float = 0.0):
        if residual_kind not in REF_COLUMN:
            raise ValueError(f"residual_kind must be one of {sorted(REF_COLUMN)}, got {residual_kind!r}")
        self.options = dict(storage_options or {})
        all_paths, self.image_size = shard_paths(root, self.options)
        self.paths, self.stride, self.offset = assign(all_paths, rank, world)
        self.split, self.questions, self.ref_column = split, questions, REF_COLUMN[residual_kind]
        self.aug, self.augment, self.seed, self.rank = aug, augment, seed, rank
        self.shuffle_buffer, self.max_pairs, self.epoch = shuffle_buffer, max_pairs, 0
        # swap_prob: share of training pairs read backwards (reference as main), which turns
        # every "added" into a "missing": the dataset's timelines mostly add findings
        self.targets, self.swap_prob = targets or {}, swap_prob

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = count_pairs(self.paths, self.split, self.questions, self.stride, self.offset,
                        self.options)
        return n if self.max_pairs is None else min(n, self.max_pairs)

    def _rows(self, rng: random.Random) -> Iterator[dict]:
        paths = list(self.paths)
        if self.augment:
            rng.shuffle(paths)
        columns = ["pair_id", "split", "main", self.ref_column]
        for path in paths:
            pf = open_parquet(path, self.options)
            index = 0
            for rg in range(pf.num_row_groups):
                for row in pf.read_row_group(rg, columns=columns).to_pylist():
                    mine = index % self.stride == self.offset
                    index += 1
                    if mine and row["split"] == self.split and row["pair_id"] in self.questions:
                        yield row

    def _shuffled(self, rows: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if not self.augment or self.shuffle_buffer <= 1:
            yield from rows
            return
        buf: list[dict] = []
        for row in rows:
            buf.append(row)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[PairSample]:
        key = (self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank
        rng = random.Random(key)
        gen = torch.Generator().manual_seed(key) if self.augment else None
        for n, row in enumerate(self._shuffled(self._rows(rng), rng)):
            if self.max_pairs is not None and n >= self.max_pairs:
                return
            main = torch.from_numpy(decode_image(row["main"], self.image_size))[None]
            ref = torch.from_numpy(decode_image(row[self.ref_column], self.image_size))[None]
            qas = self.questions[row["pair_id"]]
            targets = self.targets.get(row["pair_id"], unknown_targets())
            if self.augment and self.swap_prob > 0 and rng.random() < self.swap_prob:
                if back := swapped_qas(qas):
                    main, ref, qas, targets = ref, main, back, swap_targets(targets)
            main, ref, residual = augment_pair(main, ref, self.aug, gen)
            yield PairSample(row["pair_id"], main, ref, residual, qas, targets)


def _pad(seqs: list[list[int]], pad_id: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, min(max_len, max(len(s) for s in seqs)))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:width]
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def make_collate(encode: Callable[[str], list[int]], pad_id: int, max_question_len: int,
                 max_answer_len: int, eos_id: int | None = None) -> Callable[[list[PairSample]], PairBatch]:
    """encode: text -> token ids without special tokens. Answers get eos_id appended (truncated
    so it always fits): the model learns where to stop; it adds bos itself."""

    def encode_answer(text: str) -> list[int]:
        ids = encode(text)
        return ids if eos_id is None else ids[:max_answer_len - 1] + [eos_id]

    def collate(samples: list[PairSample]) -> PairBatch:
        pair_index, questions, answers, types = [], [], [], []
        for p, s in enumerate(samples):
            for qa in s.qas:
                pair_index.append(p)
                questions.append(qa.question)
                answers.append(qa.answer)
                types.append(qa.question_type)
        q_ids, q_mask = _pad([encode(q) for q in questions], pad_id, max_question_len)
        a_ids, a_mask = _pad([encode_answer(a) for a in answers], pad_id, max_answer_len)
        return PairBatch(
            pair_ids=[s.pair_id for s in samples],
            main=torch.stack([s.main for s in samples]),
            ref=torch.stack([s.ref for s in samples]),
            residual=torch.stack([s.residual for s in samples]),
            pair_index=torch.tensor(pair_index, dtype=torch.long),
            question_ids=q_ids, question_mask=q_mask, answer_ids=a_ids, answer_mask=a_mask,
            questions=questions, answers=answers, question_types=types,
            finding_targets=torch.stack([s.targets if s.targets is not None else unknown_targets()
                                         for s in samples]).long(),
        )

    return collate


def batches(stream: PairStream, collate: Callable[[list[PairSample]], PairBatch],
            pairs_per_batch: int, max_batches: int | None = None) -> Iterator[PairBatch]:
    """Group the stream into batches of whole pairs; stop after max_batches (the DDP-agreed
    step count) so every rank takes the same number of steps.

    Decode and augmentation run here, on the training thread, not in DataLoader workers: measured
    on the 2-core box (docs/benchmarks.md, the per-step profile of the default model) they take
    0.02 s of a 3.8 s step, and a worker process would take a core from the two the step's
    kernels use. On a GPU node, where the step is short, DataLoader workers would be the change."""
    buf: list[PairSample] = []
    made = 0
    for sample in stream:
        if max_batches is not None and made >= max_batches:
            return
        buf.append(sample)
        if len(buf) == pairs_per_batch:
            yield collate(buf)
            made += 1
            buf = []
    if buf and (max_batches is None or made < max_batches):
        yield collate(buf)


def steps_per_epoch(n_pairs: int, pairs_per_batch: int) -> int:
    return -(-n_pairs // pairs_per_batch) if n_pairs else 0


def seed_everything(seed: int, deterministic: bool) -> None:
    """Same seed, same run: Python, NumPy and torch RNGs; deterministic kernels on request."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS picks reduction orders per call unless its workspace is fixed; read when the
        # first cuBLAS handle is made, which is after this (the model moves to the GPU later)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new tensor with NaN so that a read of uninitialised
        # memory shows; no kernel here reads it, and the fills were 7 % of a CPU training step.
        torch.utils.deterministic.fill_uninitialized_memory = False
